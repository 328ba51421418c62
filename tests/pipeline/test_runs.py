"""The summary keeps each run's figures in ``runs``; an empty rerun never replaces them."""
import pyarrow.parquet as pq

from pipeline import runs, summary
from pipeline.storage import open_fs


def _stats(rows: int, tokens_per_s: float, **extra) -> dict:
    figures = {k: 0 for k in runs.RUN_KEYS}
    figures.update(rows_this_run=rows, generated_tokens_this_run=rows * 10, tokens_per_s=tokens_per_s,
                   startup_s=3.0 if rows else 0.0, device="cpu", num_workers=1)
    return {"rows": 60, "errors": 0, **figures, **extra}


def _record_and_write(tmp_path, stats, run_id):
    fs, out = open_fs(str(tmp_path))
    merged = runs.record(fs, out, stats, run_id, started_at=1000.0)
    summary.write(fs, out, merged)
    return merged


def test_an_empty_rerun_keeps_the_earlier_figures(tmp_path):
    first = _record_and_write(tmp_path, _stats(60, 166.8), "run-a")
    assert [r["run_id"] for r in first["runs"]] == ["run-a"] and first["tokens_per_s"] == 166.8
    again = _record_and_write(tmp_path, _stats(0, 0.0), "run-b")
    assert again["tokens_per_s"] == 166.8 and again["startup_s"] == 3.0 and again["rows_this_run"] == 60
    assert [r["run_id"] for r in again["runs"]] == ["run-a"]
    written = pq.read_table(tmp_path / "summary.parquet").to_pylist()[0]
    assert written["tokens_per_s"] == 166.8 and len(written["runs"]) == 1


def test_every_run_with_rows_is_kept_oldest_first(tmp_path):
    _record_and_write(tmp_path, _stats(30, 100.0), "run-a")
    both = _record_and_write(tmp_path, _stats(30, 120.0), "run-b")
    assert [(r["run_id"], r["tokens_per_s"]) for r in both["runs"]] == [("run-a", 100.0), ("run-b", 120.0)]
    assert both["tokens_per_s"] == 120.0
    table = summary.format_table(both)
    assert "runs (oldest first)" in table and "2. 30 rows, 120 tokens/s" in table


def test_a_summary_from_before_the_history_counts_as_one_run(tmp_path):
    fs, out = open_fs(str(tmp_path))
    summary.write(fs, out, _stats(60, 150.0))  # no runs key
    assert [r["tokens_per_s"] for r in runs.previous_runs(fs, out)] == [150.0]
