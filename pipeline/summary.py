"""The run summary: figures computed from the written rows, returned as data, printed separately.

Totals cover every row in ``<output>/data`` (all runs of a resumed job); throughput covers the
rows this run wrote: ``tokens_per_s`` over the decoding window (first row into an engine to the
last row out), ``tokens_per_s_e2e`` over the run's wall time (start-up included).
"""
from __future__ import annotations

import json
from importlib import metadata

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import resume
from .resources import device_kind
from .runs import SUMMARY_FILE, format_history
from .startup import describe
from .storage import is_transient, join, retry, write_atomic

_SUMMED = ("num_input_tokens", "num_generated_tokens", "num_rounds", "num_drafted_tokens",
           "num_accepted_tokens", "num_target_forwards", "num_draft_forwards")


def build(fs, out: str, this_run_files: list[str], config, wall_time_s: float, num_workers: int,
          started_at: float | None = None, device: str | None = None) -> dict:
    columns = ["finish_reason", *_SUMMED]
    table = resume.read_columns(fs, resume.data_files(fs, out), columns)
    this_run = resume.read_columns(fs, this_run_files, ["num_generated_tokens", "finished_at", "time_taken_s"])
    summary = compute(table, this_run, config, wall_time_s, num_workers, started_at, device)
    # Outputs written before the paged KV pool have no preemption column.
    preempted = resume.read_columns(fs, this_run_files, ["num_preemptions"]) if this_run_files else None
    summary["preemptions_this_run"] = _sum(preempted, "num_preemptions")
    # Rounds SimSD ran without the draft (adaptive), against all its rounds, in this run.
    undrafted = resume.read_columns(fs, this_run_files, ["num_undrafted_rounds", "num_rounds"]) if this_run_files else None
    rounds = _sum(undrafted, "num_rounds")
    summary["undrafted_round_fraction_this_run"] = _sum(undrafted, "num_undrafted_rounds") / rounds if rounds else 0.0
    return summary


def compute(table: pa.Table | None, this_run: pa.Table | None, config, wall_time_s: float,
            num_workers: int, started_at: float | None = None, device: str | None = None) -> dict:
    totals = {name: _sum(table, name) for name in _SUMMED}
    run_tokens = _sum(this_run, "num_generated_tokens")
    timing = run_timing(this_run, wall_time_s, started_at)
    return {
        "rows": table.num_rows if table is not None else 0,
        "rows_this_run": this_run.num_rows if this_run is not None else 0,
        "errors": _count(table, "finish_reason", "error"),
        "input_tokens": totals["num_input_tokens"],
        "generated_tokens": totals["num_generated_tokens"],
        "generated_tokens_this_run": run_tokens,
        "wall_time_s": wall_time_s,
        **timing,
        "tokens_per_s": _per_s(run_tokens, timing["decode_s"]),
        "tokens_per_s_e2e": _per_s(run_tokens, wall_time_s),
        "num_workers": num_workers,
        "tokens_per_s_per_worker": _per_s(run_tokens, timing["decode_s"]) / max(num_workers, 1),
        "tokens_per_round": _ratio(totals["num_generated_tokens"], totals["num_rounds"]),
        "acceptance_rate": _ratio(totals["num_accepted_tokens"], totals["num_drafted_tokens"]),
        **{k: totals[k] for k in _SUMMED if k not in ("num_input_tokens", "num_generated_tokens")},
        "device": device or device_kind(config),
        "decoder": getattr(config, "decoder_choice", None) or config.decoder,
        "sampling_choice": getattr(config, "sampling_choice", None),  # the draft order picked for sampling
        "decode_config": json.dumps(config.decode.to_dict(), sort_keys=True),
        "target": config.target,
        "draft": config.draft,
        "versions": json.dumps(_versions(), sort_keys=True),
    }


def run_timing(this_run: pa.Table | None, wall_time_s: float, started_at: float | None) -> dict:
    """Where this run's wall time went, from the rows' own timestamps (always filled; 0.0 when
    the run generated nothing):

    - ``decode_s``: from the first row entering an engine (``finished_at - time_taken_s`` of
      the earliest) to the last row's ``finished_at``: the decoding window, all actors together;
    - ``startup_s``: from the driver's start to that first row entering an engine (Ray, actor
      placement, model load, compilation);
    - ``time_to_first_row_s``: from the driver's start to the first finished batch."""
    zero = {"startup_s": 0.0, "time_to_first_row_s": 0.0, "decode_s": 0.0}
    if this_run is None or this_run.num_rows == 0 or "finished_at" not in this_run.column_names:
        return zero
    finished = this_run.column("finished_at")
    spent = this_run.column("time_taken_s") if "time_taken_s" in this_run.column_names else None
    first_done, last_done = pc.min(finished).as_py(), pc.max(finished).as_py()
    began = pc.min(pc.subtract(finished, spent)).as_py() if spent is not None else first_done
    origin = started_at if started_at is not None else last_done - wall_time_s
    return {"startup_s": max(began - origin, 0.0), "time_to_first_row_s": max(first_done - origin, 0.0),
            "decode_s": max(last_done - began, 0.0)}


def _per_s(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


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


def _versions() -> dict:
    out = {}
    for package in ("torch", "ray", "transformers", "simsd-pipeline"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def write(fs, out: str, stats: dict) -> None:
    """Write ``summary.parquet`` atomically: a full disk or a kill never leaves a truncated one."""
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([stats]), buffer)
    write_atomic(fs, join(out, SUMMARY_FILE), buffer.getvalue().to_pybytes())


def read(fs, out: str) -> dict | None:
    """The written summary, or None when it is missing or unreadable (truncated, not Parquet):
    an unreadable summary counts as missing and is written again from data/."""
    path = join(out, SUMMARY_FILE)
    try:
        if not retry(fs.exists, path):
            return None
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
    except FileNotFoundError:
        return None
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
        if is_transient(err):
            raise
        return None
    return table.to_pylist()[0] if table.num_rows else None


def format_table(stats: dict) -> str:
    """A two-column text table for the terminal, then the run history (pipeline.runs)."""

    history, stats = stats.get("runs"), {k: v for k, v in stats.items() if k != "runs"}
    width = max(len(k) for k in stats)
    lines = [f"{k.ljust(width)}  {describe(v) if k == 'startup_breakdown' else _fmt(v)}" for k, v in stats.items()]
    return "\n".join(filter(None, ["simsd run summary", "-" * (width + 20), *lines, format_history(history)]))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
