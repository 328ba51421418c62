"""The run summary: figures computed from the written rows, returned as data, printed separately.

Totals cover every row in ``<output>/data`` (all runs of a resumed job); throughput covers the
rows this run wrote, over this run's wall time.
"""
from __future__ import annotations

import json
from importlib import metadata

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import resume
from .storage import join, retry

SUMMARY_FILE = "summary.parquet"
_SUMMED = ("num_input_tokens", "num_generated_tokens", "num_rounds", "num_drafted_tokens",
           "num_accepted_tokens", "num_target_forwards", "num_draft_forwards")


def build(fs, out: str, this_run_files: list[str], config, wall_time_s: float, num_workers: int) -> dict:
    columns = ["finish_reason", *_SUMMED]
    table = resume.read_columns(fs, resume.data_files(fs, out), columns)
    this_run = resume.read_columns(fs, this_run_files, ["num_generated_tokens", "finished_at"])
    return compute(table, this_run, config, wall_time_s, num_workers)


def compute(table: pa.Table | None, this_run: pa.Table | None, config, wall_time_s: float,
            num_workers: int) -> dict:
    totals = {name: _sum(table, name) for name in _SUMMED}
    run_tokens = _sum(this_run, "num_generated_tokens")
    tokens_per_s = run_tokens / wall_time_s if wall_time_s > 0 else 0.0
    return {
        "rows": table.num_rows if table is not None else 0,
        "rows_this_run": this_run.num_rows if this_run is not None else 0,
        "errors": _count(table, "finish_reason", "error"),
        "input_tokens": totals["num_input_tokens"],
        "generated_tokens": totals["num_generated_tokens"],
        "generated_tokens_this_run": run_tokens,
        "wall_time_s": wall_time_s,
        "tokens_per_s": tokens_per_s,
        "steady_tokens_per_s": steady_tokens_per_s(this_run),
        "num_workers": num_workers,
        "tokens_per_s_per_worker": tokens_per_s / max(num_workers, 1),
        "tokens_per_round": _ratio(totals["num_generated_tokens"], totals["num_rounds"]),
        "acceptance_rate": _ratio(totals["num_accepted_tokens"], totals["num_drafted_tokens"]),
        **{k: totals[k] for k in _SUMMED if k not in ("num_input_tokens", "num_generated_tokens")},
        "device": _device(config),
        "decode_config": json.dumps(config.decode.to_dict(), sort_keys=True),
        "target": config.target,
        "draft": config.draft,
        "versions": json.dumps(_versions(), sort_keys=True),
    }


def steady_tokens_per_s(this_run: pa.Table | None) -> float | None:
    """Throughput once every actor is up: tokens of the batches that finished after the first
    batch, over the time from the first batch's end to the last's. Excludes start-up (Ray,
    actor scheduling, model load, compilation), which `tokens_per_s` includes."""
    if this_run is None or "finished_at" not in this_run.column_names or this_run.num_rows == 0:
        return None
    done = this_run.column("finished_at")
    first, last = pc.min(done).as_py(), pc.max(done).as_py()
    if first is None or last <= first:
        return None
    later = pc.greater(done, first)
    return _sum(this_run.filter(later), "num_generated_tokens") / (last - first)


def _sum(table: pa.Table | None, name: str) -> int:
    if table is None or table.num_rows == 0:
        return 0
    return int(pc.sum(table.column(name)).as_py() or 0)


def _count(table: pa.Table | None, name: str, value: str) -> int:
    if table is None:
        return 0
    return int(pc.sum(pc.equal(table.column(name), value)).as_py() or 0)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _device(config) -> str:
    from .driver import device_kind

    return device_kind(config)


def _versions() -> dict:
    out = {}
    for package in ("torch", "ray", "transformers", "simsd-pipeline"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def write(fs, out: str, stats: dict) -> None:
    table = pa.Table.from_pylist([stats])
    retry(_write_table, fs, join(out, SUMMARY_FILE), table)


def _write_table(fs, path: str, table: pa.Table) -> None:
    with fs.open(path, "wb") as f:
        pq.write_table(table, f)


def format_table(stats: dict) -> str:
    """A two-column text table for the terminal."""
    width = max(len(k) for k in stats)
    lines = [f"{k.ljust(width)}  {_fmt(v)}" for k, v in stats.items()]
    return "\n".join(["simsd run summary", "-" * (width + 20), *lines])


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
