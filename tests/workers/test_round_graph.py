"""Whole rounds and steps as one replay (round_graph.py, step_graph.py): on CPU the graphed body
runs eagerly at the bucket's fixed shape (padding rows included), and must decode exactly what
the general eager path decodes, with the same counters; and vanilla sequential's tokens."""
from types import SimpleNamespace

import pytest

from workers.api import DecodeConfig, Request
from workers.decoders.commits import fold_pays
from workers.engine import Engine

from .test_simsd import PROMPTS, near_draft  # noqa: F401  (fixture)


def decode(ckpts, draft, static: bool, batch: int, max_new: int = 17, **kw):
    cfg = DecodeConfig(decoder="simsd" if draft else "vanilla", batch_size=batch, **kw)
    eng = Engine(str(ckpts["target"]), str(draft) if draft else None, cfg, "cpu", "float32", static_shapes=static)
    eng.tokenizer.stop_ids = ()
    results = eng.generate([Request(i, p, max_new_tokens=max_new) for i, p in enumerate(PROMPTS)])
    rows = [(r.token_ids, r.num_accepted_tokens, r.num_rounds, r.num_draft_forwards) for r in results]
    return rows, eng


@pytest.mark.parametrize("batch", [1, 3, 8])  # 3: a bucket of 4 with a padding row; 8: fewer rows than slots
@pytest.mark.parametrize("verify,steps", [("exact", None), ("paper", None), ("exact", 2)])
def test_graphed_round_decodes_as_the_eager_path(ckpts, near_draft, batch, verify, steps):  # noqa: F811
    kw = dict(verify=verify, adaptive="off", denoising_steps=steps,
              draft_remasking="sequential" if steps else "static", commit_folding="always")
    graphed, eng = decode(ckpts, near_draft, True, batch, **kw)
    assert eng.decoder.graphs is not None and eng.decoder.graphs.rounds  # the round path ran
    eager, _ = decode(ckpts, near_draft, False, batch, **kw)
    assert graphed == eager
    if verify == "exact":
        sequential, _ = decode(ckpts, None, False, batch)
        assert [r[0] for r in graphed] == [r[0] for r in sequential]
        assert sum(r[1] for r in graphed) > 0  # the near draft is accepted now and then


@pytest.mark.parametrize("rule,steps", [("sequential", None), ("static", None), ("dynamic", None), ("static", 2)])
@pytest.mark.parametrize("folding", ["always", "never"])
def test_graphed_step_decodes_as_the_eager_path(ckpts, rule, steps, folding):
    kw = dict(remasking=rule, threshold=0.2, denoising_steps=steps, commit_folding=folding)
    graphed, eng = decode(ckpts, None, True, 3, **kw)
    assert eng.decoder.graphs is not None and eng.decoder.graphs.graphs
    eager, _ = decode(ckpts, None, False, 3, **kw)
    assert graphed == eager


def test_sampled_rows_take_the_general_path(ckpts, near_draft):  # noqa: F811
    kw = dict(temperature=1.0, seed=5, draft_remasking="sequential", adaptive="off")
    graphed, eng = decode(ckpts, near_draft, True, 3, **kw)
    assert eng.decoder.graphs is None  # MRS rounds never replay the greedy round graph
    assert graphed == decode(ckpts, near_draft, False, 3, **kw)[0]


def test_fold_pays_where_the_forward_stays_cheap():
    sdar_4b, tiny = SimpleNamespace(num_active_params=4.0e9), SimpleNamespace(num_active_params=4e6)
    assert fold_pays(sdar_4b, 16, 4) and fold_pays(sdar_4b, 64, 4)
    assert not fold_pays(sdar_4b, 128, 4)  # compute-bound: B more tokens for every row cost more than a forward
    assert fold_pays(tiny, 256, 4)  # launch-bound at any batch


def test_auto_attention_follows_the_measured_shapes():
    import torch

    from workers.runner import resolve_attention

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_attention("auto", cuda, 4096) == "triton"  # SDAR shapes: the Triton kernel measured faster
    assert resolve_attention("auto", cuda, 320) == "torch"    # the small reference pair: torch measured faster
    assert resolve_attention("auto", cpu, 4096) == "torch"
    assert resolve_attention("triton", cpu, 320) == "triton"  # a named backend is kept
    with pytest.raises(ValueError, match=r"one of \('auto', 'torch', 'triton'\), got 'flex'"):
        resolve_attention("flex", cuda, 4096)                   # FlexAttention was removed
