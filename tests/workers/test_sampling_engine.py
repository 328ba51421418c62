"""Sampling through the real engine (float32, tiny models): per-row reproducibility whatever the
batch, per-row settings, the mask token never emitted, stops, logprobs, and a chi-square check that
SimSD exact + MRS samples the target's own sequential distribution."""
import math
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from workers.api import DecodeConfig, Request, SamplingParams
from workers.engine import Engine
from workers.models import load_model

from . import reference

PROMPTS = [[5, 9, 13], [7, 8, 9, 10, 11, 12, 13], [20, 21, 22, 23, 24, 25, 26, 27], [30], [40, 41, 42, 43, 44]]


def make(target, draft=None, **kw):
    kw.setdefault("decoder", "simsd" if draft else "vanilla")
    return Engine(str(target), str(draft) if draft else None, DecodeConfig(**kw), "cpu", "float32")


def requests(n=16, max_new=12, **params):
    return [Request(i, PROMPTS[i % len(PROMPTS)], params=SamplingParams(max_tokens=max_new, **params),
                    row_id=f"row-{i}") for i in range(n)]


def texts(results):
    return [(r.token_ids, r.finish_reason) for r in results]


CASES = {
    "vanilla-sequential": lambda c: dict(target=c["target"]),
    "vanilla-static": lambda c: dict(target=c["target"], remasking="static"),
    "simsd-exact-sdar": lambda c: dict(target=c["target"], draft=c["draft"], verify="exact",
                                       draft_remasking="sequential"),
    "simsd-paper-ar": lambda c: dict(target=c["target"], draft=c["ar"]),
    "autoregressive": lambda c: dict(target=c["ar"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_row_output_independent_of_batch(ckpts, case):
    """Temperature > 0: batch 16 vs batch 1 vs a shuffled batch of 3 give each row the same text."""
    kw = CASES[case](ckpts)
    reqs = requests(16, max_new=8, temperature=1.0, top_k=50, seed=11)
    batched = make(batch_size=16, **kw).generate(reqs)
    one = make(batch_size=1, **kw)
    alone = [one.generate([r])[0] for r in reqs[:3]]
    order = list(range(8))
    random.Random(0).shuffle(order)
    shuffled = make(batch_size=3, **kw).generate([reqs[i] for i in order])
    assert texts(batched[:3]) == texts(alone)
    assert texts([shuffled[order.index(i)] for i in range(8)]) == texts(batched[:8])
    assert len({tuple(r.token_ids) for r in batched}) > 5  # rows really are sampled


def test_seed_and_sample_index_change_the_stream(ckpts):
    eng = make(ckpts["target"], batch_size=4)
    base = requests(4, temperature=1.0, seed=1)
    other_seed = requests(4, temperature=1.0, seed=2)
    other_sample = [Request(r.id, r.prompt_ids, params=r.params, row_id=r.row_id, sample_index=1) for r in base]
    a, b, c = (texts(eng.generate(x)) for x in (base, other_seed, other_sample))
    assert a != b and a != c
    assert texts(eng.generate(base)) == a


def test_greedy_rows_unaffected_by_sampled_neighbours(ckpts):
    eng = make(ckpts["target"], batch_size=8)
    greedy = requests(8)
    mixed = [Request(r.id, r.prompt_ids, params=SamplingParams(max_tokens=12, temperature=1.5 if r.id % 2 else 0.0,
                                                                top_p=0.9 if r.id % 2 else 1.0), row_id=r.row_id)
             for r in greedy]
    want, got = eng.generate(greedy), eng.generate(mixed)
    assert [want[i].token_ids for i in range(0, 8, 2)] == [got[i].token_ids for i in range(0, 8, 2)]


@pytest.fixture(scope="module")
def mask_loving(ckpts, tmp_path_factory):
    """The target with the mask token's head row amplified: it often is the raw argmax."""
    path = tmp_path_factory.mktemp("maskloving") / "target"
    shutil.copytree(ckpts["target"], path)
    state = load_file(path / "model.safetensors")
    mask = load_model(ckpts["target"]).config.mask_token_id
    state["lm_head.weight"][mask] *= 8
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    return path


def test_mask_token_never_emitted(ckpts, mask_loving):
    model = load_model(mask_loving)
    mask = model.config.mask_token_id
    raw_argmax = []
    for prompt in PROMPTS:
        start = (len(prompt) // 4) * 4
        toks = prompt + [mask] * (start + 4 - len(prompt))
        logits = reference.forward_full(model, toks, list(range(len(toks))), reference.block_causal_mask(len(toks), 4))
        raw_argmax += logits[len(prompt):].argmax(-1).tolist()
    assert mask in raw_argmax  # without suppression the mask would be emitted
    for kw in (dict(), dict(temperature=2.0)):
        out = make(mask_loving, batch_size=8).generate(requests(8, max_new=16, **kw))
        assert all(mask not in r.token_ids and r.finish_reason != "error" for r in out)
    out = make(mask_loving, ckpts["draft"], verify="exact", draft_remasking="sequential").generate(
        requests(6, max_new=16, temperature=1.0))
    assert all(mask not in r.token_ids for r in out)


def test_stop_string_stop_ids_and_stop_reason(ckpts):
    eng = make(ckpts["target"], batch_size=4)
    eng.tokenizer.stop_ids = ()
    base = eng.generate(requests(1, max_new=24))[0]
    text = eng.tokenizer.decode(base.token_ids)
    stop = text[len(text) // 2:len(text) // 2 + 3]
    got = eng.generate(requests(1, max_new=24, stop=(stop,)))[0]
    assert got.finish_reason == "stop" and got.stop_reason == stop
    assert got.text == text[:text.index(stop)] and got.token_ids == base.token_ids[:len(got.token_ids)]
    tok = base.token_ids[6]
    got = eng.generate(requests(1, max_new=24, stop_token_ids=(tok,)))[0]
    assert got.token_ids == base.token_ids[:base.token_ids.index(tok)] and got.stop_reason == str(tok)
    got = eng.generate(requests(1, max_new=24, stop_token_ids=(tok,), min_tokens=10))[0]
    assert len(got.token_ids) >= 10 and tok not in got.token_ids[:10]


def test_ignore_eos_and_min_tokens_against_model_stop_ids(ckpts):
    eng = make(ckpts["target"], batch_size=4)
    base = eng.generate(requests(5, max_new=24))
    eng.tokenizer.stop_ids = tuple(sorted({r.token_ids[3] for r in base}))  # each row would stop early
    stopped = eng.generate(requests(5, max_new=24))
    assert all(r.finish_reason == "stop" and len(r.token_ids) <= 3 for r in stopped)
    ignored = eng.generate(requests(5, max_new=24, ignore_eos=True))
    assert [r.token_ids for r in ignored] == [r.token_ids for r in base]
    late = eng.generate(requests(5, max_new=24, min_tokens=8))
    assert all(len(r.token_ids) >= 8 and not set(r.token_ids[:8]) & set(eng.tokenizer.stop_ids) for r in late)


def test_logprobs_greedy_exact_simsd_equals_vanilla(ckpts):
    """Same target conditionals -> same tokens and the same reported log-probabilities."""
    van = make(ckpts["target"], batch_size=4).generate(requests(5, logprobs=3))
    sim = make(ckpts["target"], ckpts["draft"], verify="exact", batch_size=4).generate(requests(5, logprobs=3))
    for a, b in zip(van, sim):
        assert a.token_ids == b.token_ids and len(a.logprobs) == len(a.token_ids)
        for x, y, tok in zip(a.logprobs, b.logprobs, a.token_ids):
            assert x["token_id"] == tok == x["top_token_ids"][0] and len(x["top_logprobs"]) == 3
            assert x["logprob"] <= 0 and abs(x["logprob"] - y["logprob"]) < 1e-4
    assert make(ckpts["target"]).generate(requests(1))[0].logprobs is None  # off by default


def test_logprobs_under_sampling_are_finite(ckpts):
    out = make(ckpts["target"], ckpts["ar"], batch_size=4).generate(requests(4, temperature=0.8, top_k=5, logprobs=0))
    for r in out:
        assert [e["token_id"] for e in r.logprobs] == r.token_ids
        assert all(math.isfinite(e["logprob"]) and e["logprob"] <= 0 and e["top_token_ids"] == [] for e in r.logprobs)


def test_mrs_refused_for_confidence_order_sdar_draft(ckpts):
    out = make(ckpts["target"], ckpts["draft"]).generate(requests(2, temperature=1.0) + requests(1))
    assert out[0].finish_reason == "error" and "draft-remasking sequential" in out[0].error
    assert out[2].finish_reason != "error"  # greedy rows are fine with a static draft


def _target_joint(model, prompt, top_k, temperature):
    """Exact distribution of the first two generated tokens under target-alone sequential sampling."""
    from workers.decoding.sampling import suppress, target_distribution

    mask = model.config.mask_token_id
    B, P = 4, len(prompt)

    def q(block):
        toks = prompt + block
        logits = reference.forward_full(model, toks, list(range(len(toks))), reference.block_causal_mask(len(toks), B))
        i = block.index(mask)
        return target_distribution(suppress(logits[P + i][None].double(), (mask,)),
                                   torch.tensor([temperature], dtype=torch.float64), top_k, 1.0)[0]
    joint = {}
    q1 = q([mask] * B)
    for x1 in q1.nonzero().flatten().tolist():
        q2 = q([x1] + [mask] * (B - 1))
        for x2 in q2.nonzero().flatten().tolist():
            joint[(x1, x2)] = float(q1[x1] * q2[x2])
    return joint


@pytest.mark.slow
@pytest.mark.parametrize("draft_name", ["draft", "ar"])
def test_mrs_chi_square_through_engine(ckpts, draft_name):
    """SimSD exact + MRS: the first two tokens of 1200 rows follow the target's sequential
    distribution (chi-square, 8 dof). One to three minutes each on a shared CPU."""
    prompt, n, top_k, temp = [5, 9, 13, 17], 1200, 3, 1.0
    joint = _target_joint(load_model(ckpts["target"]), prompt, top_k, temp)
    eng = make(ckpts["target"], ckpts[draft_name], verify="exact", draft_remasking="sequential", batch_size=64)
    reqs = [Request(i, prompt, params=SamplingParams(max_tokens=2, temperature=temp, top_k=top_k, seed=5))
            for i in range(n)]
    counts = {}
    for r in eng.generate(reqs):
        counts[tuple(r.token_ids)] = counts.get(tuple(r.token_ids), 0) + 1
    assert set(counts) <= set(joint)
    chi2 = sum((counts.get(k, 0) - n * p) ** 2 / (n * p) for k, p in joint.items())
    assert chi2 < 26.12  # 99.9% quantile, 8 degrees of freedom
