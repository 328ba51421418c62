"""The per-row contract of the GPU side: the column a row's prompt is read from (Ray Data LLM's
``prompt`` text or ``messages`` chat), a row's optional ``sampling_params`` struct (Ray Data LLM's
column, vLLM's field names) merged over the job's ``SamplingParams``, and the ``sample_index``
column that numbers a prompt's n samples.

The actor applies it to each row it generates; the driver side (pipeline.sampling_params) uses
the same names and merge to expand rows into samples and to check the column's type.
"""
from __future__ import annotations

from dataclasses import fields, replace

from .api import SamplingParams

COLUMN = "sampling_params"
SAMPLE_INDEX = "sample_index"
FIELDS = frozenset(f.name for f in fields(SamplingParams))
LISTS = ("stop", "stop_token_ids")
PROMPT, MESSAGES = "prompt", "messages"  # Ray Data LLM's text and chat columns


def text_column(config) -> str:
    """The column a row's prompt is read from: the messages column when one is set, else the prompt
    column (the driver side chooses them for the input: pipeline.columns), ``prompt`` when unset."""
    return config.messages_column or config.prompt_column or PROMPT


def row_params(job: SamplingParams, struct) -> SamplingParams | str:
    """The row's settings: the struct's non-null fields over the job's. An error message when the
    struct is not a mapping, names an unknown field, or holds a bad value."""
    if struct is None:
        return job
    if not isinstance(struct, dict):
        return f"{COLUMN} must be a struct of vLLM sampling fields, got {type(struct).__name__}"
    unknown = sorted(k for k, v in struct.items() if k not in FIELDS and v is not None)
    if unknown:
        return f"{COLUMN} has unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(FIELDS))})"
    values = {k: v for k, v in struct.items() if v is not None}
    for name in LISTS:
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
