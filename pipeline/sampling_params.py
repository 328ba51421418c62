"""Sampling settings of a job: the job-wide flags and the optional per-row ``sampling_params``
struct column (Ray Data LLM's convention, vLLM's field names), merged into one
``workers.api.SamplingParams`` per row, and the expansion of a row into its ``n`` samples.

A bad flag is a ConfigError (exit 2); a bad value in one row's struct is that row's error.
"""
from __future__ import annotations

import argparse
from dataclasses import fields, replace

import pyarrow as pa
import pyarrow.compute as pc

from workers.api import SamplingParams

from .errors import ConfigError

COLUMN = "sampling_params"
SAMPLE_INDEX = "sample_index"
# Job flags that are SamplingParams fields of the same name (besides temperature/top_k/top_p/seed).
SAMPLING_FLAGS = ("n", "stop", "stop_token_ids", "min_tokens", "ignore_eos", "logprobs",
                  "repetition_penalty", "presence_penalty")
_FIELDS = {f.name for f in fields(SamplingParams)}
_LISTS = ("stop", "stop_token_ids")


def int_list(text: str) -> list[int]:
    """``--stop-token-ids 1,2,3`` -> [1, 2, 3]."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None


def job_sampling_params(config) -> SamplingParams:
    """The job-wide SamplingParams from the flags; ConfigError naming the flag when one is bad."""
    values = {"temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k,
              "max_tokens": config.max_new_tokens, "seed": config.seed,
              **{name: getattr(config, name) for name in SAMPLING_FLAGS}}
    for name in _LISTS:
        if not isinstance(values[name], (list, tuple)):
            raise ConfigError(f"--{name.replace('_', '-')} must be a list, got {values[name]!r}")
        values[name] = tuple(values[name])
    params = SamplingParams(**values)
    problem = params.problem()
    if problem:
        name = problem.split(" ", 1)[0]
        flag = {"max_tokens": "--max-new-tokens"}.get(name, "--" + name.replace("_", "-"))
        raise ConfigError(f"{flag}: {problem}")
    return params


def row_params(job: SamplingParams, struct) -> SamplingParams | str:
    """The row's settings: the struct's non-null fields over the job's. An error message when the
    struct is not a mapping, names an unknown field, or holds a bad value."""
    if struct is None:
        return job
    if not isinstance(struct, dict):
        return f"{COLUMN} must be a struct of vLLM sampling fields, got {type(struct).__name__}"
    unknown = sorted(k for k, v in struct.items() if k not in _FIELDS and v is not None)
    if unknown:
        return f"{COLUMN} has unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(_FIELDS))})"
    values = {k: v for k, v in struct.items() if v is not None}
    for name in _LISTS:
        if name in values:
            if isinstance(values[name], str) and name == "stop":
                values[name] = [values[name]]
            if not isinstance(values[name], (list, tuple)):
                return f"{COLUMN}.{name} must be a list, got {values[name]!r}"
            values[name] = tuple(values[name])
    if isinstance(values.get("temperature"), int) and not isinstance(values["temperature"], bool):
        values["temperature"] = float(values["temperature"])
    params = replace(job, **values)
    problem = params.problem()
    return f"{COLUMN}.{problem}" if problem else params


def num_samples(job: SamplingParams, struct) -> int:
    """How many output rows an input row gives: its n (1 when its settings are bad: one error row)."""
    params = row_params(job, struct)
    return params.n if isinstance(params, SamplingParams) else 1


def expand(batch: pa.Table, job: SamplingParams) -> pa.Table:
    """Each row repeated n times with a ``sample_index`` column 0..n-1 (n per row from its struct)."""
    if COLUMN in batch.column_names:
        counts = [num_samples(job, s) for s in batch.column(COLUMN).to_pylist()]
    else:
        counts = [job.n] * batch.num_rows
    if all(c == 1 for c in counts):
        return batch.append_column(SAMPLE_INDEX, pa.array([0] * batch.num_rows, pa.int64()))
    take = [i for i, c in enumerate(counts) for _ in range(c)]
    index = [k for c in counts for k in range(c)]
    return batch.take(pa.array(take, pa.int64())).append_column(SAMPLE_INDEX, pa.array(index, pa.int64()))


def sample_keys(ids: pa.Array | pa.ChunkedArray, sample_index) -> pa.Array:
    """One string key per (id, sample_index): what resume compares (ids are ints or strings)."""
    if sample_index is None:
        sample_index = pa.array([0] * len(ids), pa.int64())
    index = pc.fill_null(sample_index, 0)
    return pc.binary_join_element_wise(pc.cast(ids, pa.string()), pc.cast(index, pa.string()), "\x1f")


def check_column_type(schema: pa.Schema, where: str = "") -> str | None:
    """A message when the ``sampling_params`` column cannot hold per-row settings (not a struct)."""
    if COLUMN not in schema.names:
        return None
    t = schema.field(COLUMN).type
    if pa.types.is_null(t) or pa.types.is_struct(t):
        return None
    return (f"--input{where}: column {COLUMN!r} has type {t}; it must be a struct of vLLM sampling fields "
            f"({', '.join(sorted(_FIELDS))})")
