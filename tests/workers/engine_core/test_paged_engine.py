"""The engine over a paged KV pool: a tiny pool (admission waits, rows get preempted and
recomputed) gives the same greedy tokens as an uncapped one; rows that can never fit are error rows."""
import pytest

from workers.api import DecodeConfig, Request
from workers.engine import Engine

PROMPTS = [[5, 9, 13], [7, 8, 9, 10, 11, 12, 13], [20, 21, 22, 23, 24, 25, 26, 27], [30], [40, 41, 42, 43, 44]]


def generate(target, draft=None, max_new=24, **kw):
    cfg = DecodeConfig(batch_size=4, **kw)
    engine = Engine(str(target), None if draft is None else str(draft), cfg, "cpu", "float32")
    results = engine.generate([Request(i, p, max_new_tokens=max_new) for i, p in enumerate(PROMPTS)])
    engine.last_results = results
    return [(r.token_ids, r.finish_reason, r.error) for r in results], engine


CASES = [
    ("target", None, dict(remasking="sequential")),
    ("target", None, dict(remasking="dynamic", threshold=0.3)),
    ("target", "draft", dict(decoder="simsd", verify="exact")),
    ("target", "draft", dict(decoder="simsd", verify="paper")),
    ("ar", None, dict()),
]


@pytest.mark.parametrize("target,draft,kw", CASES, ids=lambda c: str(c))
def test_tiny_pool_gives_the_uncapped_tokens(ckpts, target, draft, kw):
    draft_path = ckpts[draft] if draft else None
    want, _ = generate(ckpts[target], draft_path, page_size=4, **kw)
    got, engine = generate(ckpts[target], draft_path, page_size=4, max_total_tokens=72, **kw)
    assert got == want
    assert all(err is None for _, _, err in got)
    assert engine.pool_tokens == 72
    assert engine.num_preemptions > 0  # the cap really forced preemption and recompute
    assert sum(r.num_preemptions for r in engine.last_results) == engine.num_preemptions


def test_static_shape_buckets_on_a_paged_pool_match_eager(ckpts):
    def go(static):
        engine = Engine(str(ckpts["target"]), str(ckpts["draft"]), DecodeConfig(
            decoder="simsd", verify="exact", batch_size=3, page_size=4, max_total_tokens=96), "cpu", "float32",
            static_shapes=static)
        return [r.token_ids for r in engine.generate([Request(i, p, max_new_tokens=16) for i, p in enumerate(PROMPTS)])]

    assert go(True) == go(False)


def test_rows_that_cannot_fit_the_pool_are_error_rows(ckpts):
    engine = Engine(str(ckpts["target"]), None, DecodeConfig(page_size=4, max_total_tokens=40), "cpu", "float32")
    results = engine.generate([Request("long", list(range(5, 35)), max_new_tokens=8),
                               Request("short", [5, 9, 13], max_new_tokens=8)])
    assert results[0].finish_reason == "error" and "KV pool of 40 tokens" in results[0].error
    assert results[1].error is None and results[1].num_generated_tokens > 0


def test_peak_pool_usage_is_measured(ckpts):
    engine = Engine(str(ckpts["target"]), None, DecodeConfig(batch_size=2, page_size=4, max_total_tokens=64),
                    "cpu", "float32")
    engine.generate([Request(i, [5, 9, 13, 7, 8], max_new_tokens=12) for i in range(3)])
    # two rows of 5 + 12 tokens (plus the block being decoded) hold most of a 64-token pool at once
    assert 0.5 < engine.kv_pool_peak_usage <= 1.0


def test_triton_prefill_repeats_kv_and_equals_grouped_query_sdpa():
    """With ``triton`` on CUDA the packed prefill repeats K/V to the query heads (so SDPA's
    memory-efficient kernel takes the mask instead of the math fallback); it computes what
    grouped-query SDPA does, and the ``torch`` backend keeps grouped-query SDPA."""
    from types import SimpleNamespace

    import torch

    from workers.models.attention import attend
    from workers.runner import ModelRunner

    torch.manual_seed(0)
    doc = torch.tensor([0] * 5 + [1] * 7)               # two packed prompts of 5 and 7 tokens
    pos = torch.cat([torch.arange(5), torch.arange(7)])
    cuda = torch.device("cuda")
    meta = ModelRunner._prefill_meta(SimpleNamespace(attention="triton", device=cuda), doc, pos, 4)
    assert meta.repeat_kv
    assert not ModelRunner._prefill_meta(SimpleNamespace(attention="torch", device=cuda), doc, pos, 4).repeat_kv
    assert not ModelRunner._prefill_meta(SimpleNamespace(attention="triton", device=torch.device("cpu")),
                                         doc, pos, 4).repeat_kv
    assert not meta.new_mask[0, 0, 5, 4] and meta.new_mask[0, 0, 8, 7] and not meta.new_mask[0, 0, 8, 9]
    qs, ks, vs = torch.randn(1, 8, 12, 16), torch.randn(1, 2, 12, 16), torch.randn(1, 2, 12, 16)
    want = attend(qs, ks, vs, None, None, meta._replace(repeat_kv=False))
    got = attend(qs, ks, vs, None, None, meta)
    assert (got - want).abs().max() < 1e-5
