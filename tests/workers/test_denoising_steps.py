"""--denoising-steps N below the block length: the quota rule, vanilla decoding against a no-cache
reference, SimSD drafts revealing several tokens per step (exact stays lossless, paper equals its
layout oracle), and MRS with a left-to-right multi-token draft (exact enumeration)."""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.config import ConfigError, parse_args
from workers.api import DecodeConfig, Request
from workers.decoding.acceptance import mrs_refusal
from workers.decoding.remasking import confidence_rank, reveal_positions, step_quota, steps_per_block
from workers.engine import Engine
from workers.models import load_model

from . import reference
from .test_sampling_exact import SETTINGS, Table, confidence_reveals, dist, tv
from .test_sampling_exact import reference as target_alone
from .test_sampling_exact import simsd_mrs as simsd_mrs_rounds

PROMPTS = [[5, 9, 13], [7, 8, 9, 10, 11, 12, 13], [20, 21, 22, 23, 24, 25, 26, 27], [30], [40, 41, 42, 43, 44]]


def schedule(masked: int, steps: int) -> list[int]:
    """The quotas of one block, step by step, until nothing is masked."""
    out, k = [], 0
    while masked:
        q = step_quota(masked, steps, k)
        out.append(q)
        masked, k = masked - q, k + 1
    return out


# -- the quota rule (pure) ------------------------------------------------------------------------

def test_quota_examples():
    assert schedule(4, 2) == [2, 2]
    assert schedule(4, 3) == [2, 1, 1]
    assert schedule(3, 2) == [2, 1]  # a prompt tail left 3 masked
    assert schedule(4, 4) == [1, 1, 1, 1] and schedule(8, 3) == [3, 3, 2]


@pytest.mark.parametrize("masked", range(0, 9))
def test_quotas_sum_to_the_masked_count_within_the_steps(masked):
    for steps in range(1, 10):
        quotas = schedule(masked, steps)
        assert sum(quotas) == masked and len(quotas) == min(steps, masked)
        if masked <= steps:
            assert quotas == [1] * masked
        # the last of the S steps reveals everything left; past it every step reveals all
        assert step_quota(masked, steps, steps - 1) == masked == step_quota(masked, steps, steps + 5)
    # the tensor form gives the same numbers per row
    m = torch.tensor([masked, 8, 3])
    assert step_quota(m, 3, torch.tensor([0, 1, 2])).tolist() == [step_quota(masked, 3, 0), 4, 3]


def test_steps_per_block():
    assert steps_per_block(None, 4) is None and steps_per_block(4, 4) is None and steps_per_block(9, 4) is None
    assert steps_per_block(3, 4) == 3 and steps_per_block(1, 8) == 1


@pytest.mark.parametrize("rule", ["sequential", "static", "dynamic"])
def test_quota_one_reproduces_one_token_reveal(rule):
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(64, 8, generator=g)
    conf[::3, 2] = conf[::3, 5]  # ties: the lower position wins either way
    conf[1::4] = 0.5             # whole rows tied
    masked = torch.rand(64, 8, generator=g) < 0.6
    masked[0] = False            # nothing masked: nothing revealed
    want = reveal_positions(conf, masked, rule, 0.7)
    got = reveal_positions(conf, masked, rule, 0.7, torch.ones(64, dtype=torch.long))
    assert torch.equal(got, want) and not got[0].any()


def test_quota_reveals():
    conf = torch.tensor([[0.1, 0.9, 0.5, 0.5, 0.95, 0.3]])
    masked = torch.tensor([[True, True, True, True, False, True]])
    q = torch.tensor([3])
    pick = lambda rule, th=0.9: reveal_positions(conf, masked, rule, th, q)[0].nonzero().flatten().tolist()
    assert pick("sequential") == [0, 1, 2]
    assert pick("static") == [1, 2, 3]                # 0.9, then the tied 0.5s (revealed 4 is ignored)
    assert pick("dynamic", 0.2) == [1, 2, 3, 5]       # above 0.2, more than the quota
    assert reveal_positions(conf, masked, "static", quota=torch.tensor([2]))[0].nonzero().flatten().tolist() == [1, 2]
    assert reveal_positions(conf, masked, "static", quota=torch.tensor([9]))[0].tolist() == masked[0].tolist()
    assert confidence_rank(conf, masked)[0].tolist()[:4] == [4, 0, 1, 2]
    with pytest.raises(ValueError, match="unknown remasking rule"):
        reveal_positions(conf, masked, "nonsense", quota=q)


def test_zero_steps_is_a_config_error():
    with pytest.raises(ConfigError, match="denoising-steps must be >= 1"):
        parse_args(["--input", "x", "--target", "t", "--denoising-steps", "0"])
    with pytest.raises(ValueError, match="denoising_steps must be >= 1"):
        DecodeConfig(denoising_steps=0)
    assert parse_args(["--input", "x", "--target", "t", "--denoising-steps", "2"]).decode.denoising_steps == 2


# -- engines --------------------------------------------------------------------------------------

def make(target, draft=None, static=False, **kw):
    kw.setdefault("decoder", "simsd" if draft else "vanilla")
    return Engine(str(target), str(draft) if draft else None, DecodeConfig(**kw), "cpu", "float32",
                  static_shapes=static)


def run(eng, prompts=PROMPTS, max_new=12, stops=()):
    eng.tokenizer.stop_ids = stops
    return eng.generate([Request(i, p, max_new_tokens=max_new) for i, p in enumerate(prompts)])


def noisy_copy(src, dst, seed):
    """A draft near ``src``: its weights plus noise (agrees with it often, not always)."""
    shutil.copytree(src, dst)
    state = load_file(dst / "model.safetensors")
    g = torch.Generator().manual_seed(seed)
    noisy = {k: v + 0.06 * torch.randn(v.shape, generator=g) if v.dim() == 2 else v for k, v in state.items()}
    save_file(noisy, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def near(ckpts, tmp_path_factory):
    root = tmp_path_factory.mktemp("near_steps")
    return {4: noisy_copy(ckpts["target"], root / "d4", 11), 8: noisy_copy(ckpts["target8"], root / "d8", 12)}


def tokens(results):
    return [r.token_ids for r in results]


def test_vanilla_steps_at_block_length_is_the_default(ckpts):
    want = tokens(run(make(ckpts["target"], remasking="static")))
    assert tokens(run(make(ckpts["target"], remasking="static", denoising_steps=4))) == want
    assert tokens(run(make(ckpts["target"], remasking="static", denoising_steps=7))) == want


@pytest.mark.parametrize("rule,steps", [("sequential", 2), ("static", 3), ("dynamic", 2)])
def test_vanilla_fewer_steps_equals_full_recompute(ckpts, rule, steps):
    """Batch 2 < 5 prompts: slots are refilled as rows finish (the step counter resets on admission)."""
    eng = make(ckpts["target"], remasking=rule, threshold=0.3, denoising_steps=steps, batch_size=2)
    model = load_model(ckpts["target"])
    got = run(eng, max_new=10)
    default = run(make(ckpts["target"], remasking=rule, threshold=0.3, batch_size=2), max_new=10)
    for res, prompt in zip(got, PROMPTS):
        want, reason = reference.vanilla(model, prompt, 4, model.config.mask_token_id, 10, (), rule, 0.3, steps)
        assert res.token_ids == want and res.finish_reason == reason
        blocks = (len(prompt) + 10 + 3) // 4 - len(prompt) // 4  # blocks the row decoded
        assert res.num_rounds <= steps * blocks
    # fewer steps per block: fewer target forwards than one reveal per step
    assert sum(r.num_rounds for r in got) < sum(r.num_rounds for r in default)


def test_vanilla_fixed_shapes_with_fewer_steps(ckpts):
    kw = dict(remasking="static", denoising_steps=2, batch_size=3)
    assert tokens(run(make(ckpts["target"], static=True, **kw))) == tokens(run(make(ckpts["target"], **kw)))


@pytest.mark.parametrize("block", [4, 8])
def test_simsd_exact_with_fewer_draft_steps_equals_vanilla_sequential(ckpts, near, block):
    target = ckpts["target"] if block == 4 else ckpts["target8"]
    want = tokens(run(make(target), max_new=17))
    for rule, steps in [("static", 2), ("dynamic", 3)]:
        got = run(make(target, near[block], verify="exact", draft_remasking=rule, threshold=0.5,
                       denoising_steps=steps, batch_size=4, adaptive="off"), max_new=17)
        assert tokens(got) == want, (rule, steps)
        drafted = sum(r.num_drafted_tokens for r in got)
        assert 0 < sum(r.num_accepted_tokens for r in got) <= drafted
        # each round drafts the rest of the block in at most `steps` draft forwards
        assert all(r.num_draft_forwards <= r.num_rounds * steps + 2 * (17 // block + 2) for r in got)


@pytest.mark.parametrize("rule,steps", [("static", 2), ("dynamic", 2), ("static", 3)])
def test_simsd_paper_with_fewer_draft_steps_equals_layout_oracle(ckpts, near, rule, steps):
    eng = make(ckpts["target"], near[4], verify="paper", draft_remasking=rule, threshold=0.5,
               denoising_steps=steps, batch_size=3)
    target, draft = load_model(ckpts["target"]), load_model(near[4])
    mask = target.config.mask_token_id
    shared_steps = 0
    for res, prompt in zip(run(eng, max_new=14), PROMPTS):
        log = []
        want, reason = reference.simsd_paper(target, draft, prompt, 4, mask, 14, (), log, rule, steps, 0.5)
        assert res.token_ids == want and res.finish_reason == reason
        assert res.num_accepted_tokens <= res.num_drafted_tokens
        for t, _, _ in log:
            drafted = [x for x in t if x > 0]
            assert max(drafted) <= steps
            shared_steps += len(drafted) > len(set(drafted))
    assert shared_steps > 0  # rounds where several drafts shared a reveal step t_i


def test_graphed_draft_loop_with_fewer_steps(ckpts, near):
    """The fixed-shape draft loop (a CUDA graph on a GPU, eager here) computes the quota itself."""
    kw = dict(verify="paper", draft_remasking="static", denoising_steps=2, batch_size=3)
    fixed = run(make(ckpts["target"], near[4], static=True, **kw))
    eager = run(make(ckpts["target"], near[4], **kw))
    assert [(r.token_ids, r.num_accepted_tokens) for r in fixed] == [(r.token_ids, r.num_accepted_tokens)
                                                                      for r in eager]


def test_mrs_with_sequential_multi_token_draft_runs_seeded(ckpts, near):
    kw = dict(temperature=1.0, seed=3, draft_remasking="sequential", denoising_steps=2, batch_size=3)
    a = run(make(ckpts["target"], near[4], **kw))
    b = run(make(ckpts["target"], near[4], **kw))
    assert tokens(a) == tokens(b) and all(len(r.token_ids) == 12 for r in a)
    refused = run(make(ckpts["target"], near[4], **{**kw, "draft_remasking": "static"}), PROMPTS[:1])
    assert refused[0].finish_reason == "error" and "draft-remasking sequential" in refused[0].error


# -- MRS with several tokens a step, by exact enumeration (float64) -------------------------------

def draft_outcomes(draft: Table, n: int, leftover: tuple, rule: str, steps: int, s):
    """Every draft trajectory with ``steps`` steps: (probability, drafts D, draft p per position).

    Every masked position draws a token from its own distribution at each step (independently);
    ``reveal_positions`` with the quota picks which are kept."""
    results = []

    def go(block, p, prob, k):
        masked = [i for i in range(n) if block[i] is None]
        if not masked:
            results.append((prob, tuple(block), dict(p)))
            return
        dists = {i: dist(draft, i, tuple(block), s) for i in masked}
        quota = torch.tensor([step_quota(len(masked), steps, k)])
        for new, new_p, w in confidence_reveals(draft, block, p, prob, dists, rule, s, quota):
            go(new, new_p, w, k + 1)

    go(list(leftover) + [None] * (n - len(leftover)), {}, 1.0, 0)
    return results


def simsd_mrs(target: Table, draft: Table, n: int, leftover: tuple, rule: str, steps: int, s) -> dict:
    """SimSD rounds whose draft reveals the rest of the block afresh in ``steps`` steps each round."""
    def outcomes(draft_, n_, leftover_, rule_, s_):
        return draft_outcomes(draft_, n_, leftover_, rule_, steps, s_)
    return simsd_mrs_rounds(target, draft, n, leftover, rule, s, outcomes)


@pytest.mark.parametrize("s", SETTINGS[:2], ids=lambda s: f"T{s['T']}-k{s['k']}")
@pytest.mark.parametrize("n,leftover,steps", [(2, (), 1), (3, (), 1), (3, (), 2), (3, (1,), 1)])
def test_mrs_lossless_with_left_to_right_multi_token_draft(s, n, leftover, steps):
    """Sequential drafts revealing several positions at once: each is drawn given its left
    positions only, independently of the others drawn with it, so MRS stays lossless."""
    target, draft = Table(seed=1), Table(seed=2)
    want = target_alone(target, n, leftover, s)
    got = simsd_mrs(target, draft, n, leftover, "sequential", steps, s)
    assert abs(sum(got.values()) - 1.0) < 1e-9 and tv(got, want) < 1e-9
    assert tv(want, target_alone(draft, n, leftover, s)) > 1e-3  # the draft alone would differ


def test_confidence_order_multi_token_draft_is_biased_and_refused():
    s = SETTINGS[0]
    target, draft = Table(seed=1), Table(seed=2)
    got = simsd_mrs(target, draft, 3, (), "static", 2, s)
    assert abs(sum(got.values()) - 1.0) < 1e-9
    assert tv(got, target_alone(target, 3, (), s)) > 1e-3
    assert mrs_refusal(True, "static") is not None
