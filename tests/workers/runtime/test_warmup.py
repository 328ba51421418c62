"""workers.runtime.warmup: what a call paid for warming up, as a difference of snapshots."""
from workers.graphs import CAPTURES
from workers.runtime import warmup


def test_since_reports_only_what_came_after_the_snapshot():
    before = warmup.snapshot()
    assert set(before) == {"graph_captures", "capture_s", "compile_s", "compiled_graphs"} and before["compile_s"] >= 0
    CAPTURES.count += 3
    CAPTURES.seconds += 1.5
    try:
        spent = warmup.since(before)
        assert spent["graph_captures"] == 3 and abs(spent["capture_s"] - 1.5) < 1e-9
    finally:
        CAPTURES.count -= 3
        CAPTURES.seconds -= 1.5
