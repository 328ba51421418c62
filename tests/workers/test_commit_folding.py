"""Folding a finished block's commit into the next forward changes cost, never tokens."""
import pytest

from workers.api import DecodeConfig, Request
from workers.engine import Engine
from workers.models import load_model

from . import reference
from .test_simsd import PROMPTS, near_draft  # noqa: F401  (fixture)


def run(ckpts, draft=None, max_new=14, static=None, **kw):
    cfg = DecodeConfig(decoder="simsd" if draft else "vanilla", batch_size=3, **kw)
    eng = Engine(str(ckpts["target"]), str(draft) if draft else None, cfg, "cpu", "float32", static_shapes=static)
    eng.tokenizer.stop_ids = ()
    return eng.generate([Request(i, p, max_new_tokens=max_new) for i, p in enumerate(PROMPTS)])


@pytest.mark.parametrize("folding", ["always", "never"])
def test_vanilla_matches_no_cache_reference(ckpts, folding):
    model = load_model(ckpts["target"])
    for res, prompt in zip(run(ckpts, commit_folding=folding, remasking="static"), PROMPTS):
        want, _ = reference.vanilla(model, prompt, 4, model.config.mask_token_id, 14, (), "static")
        assert res.token_ids == want


@pytest.mark.parametrize("verify", ["paper", "exact"])
@pytest.mark.parametrize("static", [False, True])
def test_simsd_same_tokens_folded_or_not(ckpts, near_draft, verify, static):  # noqa: F811
    # adaptive off: its timing-driven choice of rounds would make the forward counts differ run to run
    folded = run(ckpts, near_draft, commit_folding="always", verify=verify, static=static, adaptive="off")
    separate = run(ckpts, near_draft, commit_folding="never", verify=verify, static=static, adaptive="off")
    assert [(r.token_ids, r.num_accepted_tokens) for r in folded] == \
        [(r.token_ids, r.num_accepted_tokens) for r in separate]
    # folding saves one target and one draft forward per committed block
    assert sum(r.num_target_forwards for r in folded) < sum(r.num_target_forwards for r in separate)
    assert sum(r.num_draft_forwards for r in folded) < sum(r.num_draft_forwards for r in separate)


def test_exact_equals_sequential_without_folding(ckpts):
    want = run(ckpts, commit_folding="never")
    got = run(ckpts, ckpts["ar"], commit_folding="never", verify="exact")
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
