"""Per-run history in the summary: every run that generated rows keeps its own figures.

A summary describes the whole output. Its totals (rows, errors, tokens, acceptance) are
recomputed from ``data/`` at the end of every run; the figures of one run (throughput, start-up,
wall time, workers, retries) are kept per run in the ``runs`` list, oldest first. The top-level
copies of those figures describe the latest run that generated rows (``runs[-1]``): a run that
generated nothing (everything was already written) appends nothing and changes none of them.
"""
from __future__ import annotations

from .storage import join, retry

SUMMARY_FILE = "summary.parquet"  # the output's summary, one row (pipeline/summary.py writes it)

# The figures of one run (the rest of the summary covers the whole output).
RUN_KEYS = ("rows_this_run", "generated_tokens_this_run", "wall_time_s", "startup_s", "time_to_first_row_s",
            "startup_breakdown",
            "decode_s", "tokens_per_s", "tokens_per_s_e2e", "num_workers", "tokens_per_s_per_worker", "device",
            "preemptions_this_run", "undrafted_round_fraction_this_run", "batch_retries", "poison_rows")


def record(fs, out: str, stats: dict, run_id: str, started_at: float) -> dict:
    """``stats`` with the output's run history: the earlier summary's ``runs`` plus this run when it
    generated rows; the top-level run figures are those of the latest run with rows."""
    history = previous_runs(fs, out)
    if stats.get("rows_this_run"):
        history.append({"run_id": run_id, "started_at": started_at, **{k: stats.get(k) for k in RUN_KEYS}})
    merged = dict(stats)
    if history:
        merged.update({k: history[-1].get(k) for k in RUN_KEYS})
    merged["runs"] = history
    return merged


def previous_runs(fs, out: str) -> list[dict]:
    """The ``runs`` of the summary already in ``out`` (a summary written before the history
    existed counts as one run when it generated rows); [] when there is none."""
    path = join(out, SUMMARY_FILE)
    try:
        if not retry(fs.exists, path):
            return []
        earlier = retry(_read_first_row, fs, path)
    except Exception:  # noqa: BLE001 - an unreadable old summary loses its history, not the job
        return []
    if earlier is None:
        return []
    if earlier.get("runs") is not None:
        return [dict(r) for r in earlier["runs"]]
    if earlier.get("rows_this_run"):
        return [{"run_id": None, "started_at": None, **{k: earlier.get(k) for k in RUN_KEYS}}]
    return []


def _read_first_row(fs, path: str) -> dict | None:
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        rows = pq.read_table(f).to_pylist()
    return rows[0] if rows else None


def format_history(runs: list[dict] | None) -> str:
    """One line per run for the terminal table."""
    if not runs:
        return ""
    lines = ["runs (oldest first)"]
    for i, run in enumerate(runs, 1):
        lines.append(f"  {i}. {run.get('rows_this_run') or 0} rows, {_num(run.get('tokens_per_s'))} tokens/s, "
                     f"startup {_num(run.get('startup_s'))} s, wall {_num(run.get('wall_time_s'))} s, "
                     f"{run.get('num_workers')} worker(s) on {run.get('device')}")
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.4g}"
