"""Sampling settings of a job, driver side: the job-wide flags as one ``workers.api.SamplingParams``,
the expansion of a row into its ``n`` samples, resume keys, and the check of the optional per-row
``sampling_params`` struct column (whose merge, ``workers.row_params``, is the actor's).

A bad flag is a ConfigError (exit 2); a bad value in one row's struct is that row's error.
"""
from __future__ import annotations

import argparse

import pyarrow as pa
import pyarrow.compute as pc

from workers.api import SamplingParams
# The per-row contract is the GPU side's (workers.row_params); the driver side uses its names.
from workers.row_params import COLUMN, FIELDS, LISTS, SAMPLE_INDEX, num_samples

from .errors import ConfigError

# Job flags that are SamplingParams fields of the same name (besides temperature/top_k/top_p/seed).
SAMPLING_FLAGS = ("n", "stop", "stop_token_ids", "min_tokens", "ignore_eos", "logprobs",
                  "repetition_penalty", "presence_penalty")


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
    for name in LISTS:
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
            f"({', '.join(sorted(FIELDS))})")
