"""Oracles 2 and 3 for vanilla decoding, the AR path against transformers, stop and length rules."""
import pytest
import torch

from workers.api import DecodeConfig, Request
from workers.engine import Engine
from workers.models import load_model

from . import reference
from .test_models import hf_model

PROMPTS = [[5, 9, 13], [7, 8, 9, 10, 11, 12, 13], [20, 21, 22, 23, 24, 25, 26, 27], [30], [40, 41, 42, 43, 44]]


def run(engine, prompts=PROMPTS, max_new=10):
    return engine.generate([Request(i, p, max_new_tokens=max_new) for i, p in enumerate(prompts)])


@pytest.mark.parametrize("rule", ["sequential", "static", "dynamic"])
def test_cached_decoding_equals_full_recompute(ckpts, rule):
    engine = Engine(str(ckpts["target"]), None, DecodeConfig(remasking=rule, threshold=0.3), "cpu", "float32")
    model = load_model(ckpts["target"])
    stops = engine.tokenizer.stop_ids
    for res, prompt in zip(run(engine), PROMPTS):
        want, reason = reference.vanilla(model, prompt, 4, model.config.mask_token_id, 10, stops, rule, 0.3)
        assert res.token_ids == want and res.finish_reason == reason


def test_batch_parity_mixed_lengths(ckpts):
    batched = run(Engine(str(ckpts["target"]), None, DecodeConfig(batch_size=8), "cpu", "float32"))
    # batch_size 2 < 5 requests: slots are refilled as sequences finish (continuous batching).
    refilled = run(Engine(str(ckpts["target"]), None, DecodeConfig(batch_size=2), "cpu", "float32"))
    alone_engine = Engine(str(ckpts["target"]), None, DecodeConfig(batch_size=1), "cpu", "float32")
    for i, prompt in enumerate(PROMPTS):
        alone = run(alone_engine, [prompt])[0]
        assert batched[i].token_ids == alone.token_ids == refilled[i].token_ids


def test_block_length_8(ckpts):
    engine = Engine(str(ckpts["target8"]), None, DecodeConfig(), "cpu", "float32")
    engine.tokenizer.stop_ids = ()
    model = load_model(ckpts["target8"])
    for res, prompt in zip(run(engine, max_new=13), PROMPTS):
        want, _ = reference.vanilla(model, prompt, 8, model.config.mask_token_id, 13, engine.tokenizer.stop_ids)
        assert res.token_ids == want and len(want) == 13


def test_qwen3_matches_transformers_generate(ckpts):
    engine = Engine(str(ckpts["ar"]), None, DecodeConfig(batch_size=3), "cpu", "float32")
    engine.tokenizer.stop_ids = ()  # random weights: compare full lengths
    ours = load_model(ckpts["ar"])
    ref = hf_model(ckpts["ar"], ours.config)
    for res, prompt in zip(run(engine, max_new=12), PROMPTS):
        out = ref.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
        assert res.token_ids == out[0, len(prompt):].tolist()
        assert res.finish_reason == "length"


def test_stop_id_cuts_output(ckpts):
    engine = Engine(str(ckpts["target"]), None, DecodeConfig(), "cpu", "float32")
    full = run(engine, PROMPTS[:1], max_new=12)[0].token_ids
    stop = full[5]
    engine.tokenizer.stop_ids = (stop,)
    res = run(engine, PROMPTS[:1], max_new=12)[0]
    assert res.finish_reason == "stop" and res.token_ids == full[:full.index(stop)]


@pytest.mark.parametrize("max_new", [1, 5, 7])
def test_max_new_tokens_not_multiple_of_block(ckpts, max_new):
    engine = Engine(str(ckpts["target"]), None, DecodeConfig(), "cpu", "float32")
    engine.tokenizer.stop_ids = ()
    full = run(engine, max_new=12)
    for res, longer in zip(run(engine, max_new=max_new), full):
        assert res.token_ids == longer.token_ids[:max_new] and res.finish_reason == "length"


def test_sampling_is_seeded_and_valid(ckpts):
    cfg = DecodeConfig(temperature=0.8, top_k=20, top_p=0.9, seed=7)
    a = run(Engine(str(ckpts["target"]), None, cfg, "cpu", "float32"))
    b = run(Engine(str(ckpts["target"]), None, cfg, "cpu", "float32"))
    greedy = run(Engine(str(ckpts["target"]), None, DecodeConfig(), "cpu", "float32"))
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in greedy]


def test_bad_requests_become_error_results(ckpts):
    engine = Engine(str(ckpts["target"]), None, DecodeConfig(), "cpu", "float32")
    res = engine.generate([Request("empty", []), Request("long", [5] * 3000), Request("ok", [5, 6]),
                           Request("neg", [5], max_new_tokens=0)])
    assert [r.finish_reason for r in res] == ["error", "error", "length", "error"]
    assert "empty" in res[0].error and "context" in res[1].error and res[2].error is None


def test_stop_found_after_the_next_step_is_queued_costs_the_row_no_round(ckpts):
    """A closed block is read while the next step runs; the stopped row's void step is not counted."""
    engine = Engine(str(ckpts["target"]), None, DecodeConfig(), "cpu", "float32")
    engine.tokenizer.stop_ids = ()
    full = run(engine, PROMPTS[:1], max_new=12)[0]
    # PROMPTS[0] has 3 tokens: block 0 reveals generated token 0, block 1 tokens 1-4, block 2 tokens 5-8.
    by_length = run(engine, PROMPTS[:1], max_new=9)[0]
    engine.tokenizer.stop_ids = (full.token_ids[5],)
    stopped = run(engine, PROMPTS[:1], max_new=12)[0]
    assert full.token_ids[5] not in full.token_ids[:5]
    assert stopped.finish_reason == "stop" and stopped.token_ids == full.token_ids[:5]
    assert stopped.num_rounds == by_length.num_rounds == 1 + 4 + 4
    # Forwards the row took part in: its last block's commit (queued before the stop was seen)
    # and the void step, which the row stopped by length never ran.
    assert stopped.num_target_forwards == by_length.num_target_forwards + 2


def test_closed_blocks_are_read_after_the_next_step_is_queued(ckpts, monkeypatch):
    """The order of device work and host reads: a block closing mid-row is read after the next
    block's first step is queued; a row whose block reaches max_new takes no further step."""
    from workers.decoders import block_state, vanilla

    log = []
    step, resolve = vanilla.denoise_step, block_state.ClosedBlocks.resolve
    monkeypatch.setattr(vanilla, "denoise_step", lambda *a, **k: log.append("step") or step(*a, **k))
    monkeypatch.setattr(block_state.ClosedBlocks, "resolve", lambda self, ids: log.append("read") or resolve(self, ids))
    engine = Engine(str(ckpts["target"]), None, DecodeConfig(), "cpu", "float32")
    engine.tokenizer.stop_ids = ()
    res = run(engine, [[5, 6, 7, 8]], max_new=8)[0]
    assert log == ["step"] * 5 + ["read"] + ["step"] * 3 + ["read"]
    assert len(res.token_ids) == 8 and res.num_rounds == 8


def test_a_run_cut_short_leaves_no_closed_blocks_to_the_next(ckpts, monkeypatch):
    """A generate call that fails with blocks still unread (an out-of-memory retry, say): the
    next call decodes as a fresh engine does, not reading the old call's rows."""
    from workers.decoders import vanilla

    engine = Engine(str(ckpts["target"]), None, DecodeConfig(), "cpu", "float32")
    engine.tokenizer.stop_ids = ()
    want = [r.token_ids for r in run(engine)]
    real = vanilla.VanillaDecoder.step

    def failing(self, seqs, stop_ids):
        out = real(self, seqs, stop_ids)
        if self.closed is not None and self.closed.final:  # rows done, their last blocks unread
            raise RuntimeError("cut short")
        return out

    monkeypatch.setattr(vanilla.VanillaDecoder, "step", failing)
    with pytest.raises(RuntimeError, match="cut short"):
        run(engine)
    assert engine.decoder.closed is not None
    monkeypatch.undo()
    assert [r.token_ids for r in run(engine)] == want
