"""The progress line before the first output file: loading and decoding are told apart (issue 25:
a job decoding 32,000-token rows said "actors starting, models loading" for minutes)."""
import fsspec

from pipeline.monitor import JobMonitor
from pipeline.progress import Reporter


def _line(tmp_path, state):
    return Reporter(fsspec.filesystem("file"), str(tmp_path / "staging"), 64, 10, state=state).line()


def test_decoding_is_not_reported_as_loading(tmp_path):
    monitor = JobMonitor()
    monitor.placed("h:1")
    assert "actors starting: 1 placed, 0 loaded" in _line(tmp_path, lambda: monitor.poll(0))
    monitor.ready("h:1")
    monitor.begin("batch-a", 2)
    line = _line(tmp_path, lambda: monitor.poll(0))
    assert "decoding 1 batch(es) on 1 actor(s) ready" in line and "loading" not in line
    monitor.finish("batch-a", 8)
    assert "8 rows generated" in _line(tmp_path, lambda: monitor.poll(0))
    assert monitor.poll(0)["batches_running"] == 0


def test_without_a_monitor_the_line_stays_generic(tmp_path):
    assert "actors starting, models loading" in _line(tmp_path, None)
    assert "actors starting, models loading" in _line(tmp_path, lambda: None)

    def broken():
        raise RuntimeError("monitor gone")
    assert "actors starting, models loading" in _line(tmp_path, broken)


def test_tokens_generated_inside_engine_calls_are_shown_and_count_as_progress(tmp_path):
    monitor = JobMonitor()
    monitor.ready("h:1")
    monitor.begin("batch-a", 2)
    before = monitor.poll(0)["idle_s"]
    monitor.tokens("h:1", 1200)
    monitor.tokens("h:2", 34)
    state = monitor.poll(0)
    assert state["tokens_generated"] == 1234 and state["idle_s"] <= before
    line = _line(tmp_path, lambda: monitor.poll(0))
    assert "1,234 tokens generated so far" in line and "decoding 1 batch(es)" in line
    monitor.tokens("h:1", 1500)  # an actor's later total replaces its earlier one
    assert monitor.poll(0)["tokens_generated"] == 1534
