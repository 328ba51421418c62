"""Engine.progress: token counts from inside one generate() call (issue 25: a job decoding long
rows showed no progress until its batch returned)."""
from workers.api import DecodeConfig, Request
from workers.engine import Engine


def test_progress_counts_tokens_inside_the_call(ckpts):
    engine = Engine(str(ckpts["target"]), None, DecodeConfig(batch_size=2, max_new_tokens=24), "cpu", "float32")
    seen = []
    engine.progress, engine.progress_interval_s = seen.append, 0.0
    requests = [Request(i, [5 + i, 6, 7]) for i in range(4)]
    results = engine.generate(requests)
    total = sum(len(r.token_ids) for r in results)
    assert total > 0 and seen[-1] == total
    assert seen == sorted(seen), "counts never go back within a call"
    # counted while rows were still decoding, not only when the call returned
    assert any(0 < n < total for n in seen)
    # two slots, four rows: the first rows' tokens are counted before the last rows are admitted
    first_two = sum(len(r.token_ids) for r in results[:2])
    assert any(first_two <= n < total for n in seen)


def test_no_callback_no_cost(ckpts):
    engine = Engine(str(ckpts["target"]), None, DecodeConfig(max_new_tokens=8), "cpu", "float32")
    assert engine.progress is None
    assert len(engine.generate([Request(0, [5, 6, 7])])[0].token_ids) > 0
