"""Input columns: the one a row's prompt is read from, and those carried to the output.

The prompt follows Ray Data LLM's contract when no column is set: a ``messages`` column (chat)
or a ``prompt`` column (text); an input with both must name one (``--prompt-column`` or
``--messages-column``). Every input column the job does not consume (the id, the prompt or
messages, the per-row sampling columns) rides along with its row, as Ray Data LLM does, or only
those named by ``--keep-columns``; ``--keep-prompt`` keeps the prompt/messages column too.

The carried columns and their types are fixed before Ray starts (from the Parquet footers, every
file's schema unified), so every output file has the same schema even when an input file lacks
a column (its rows get nulls).
"""
from __future__ import annotations

import copy

import pyarrow as pa
import pyarrow.compute as pc

from workers.row_params import MESSAGES, PROMPT
from .config import ConfigError, GenerateConfig
from .storage import list_parquet, open_fs, retry

# Read by the job, never carried: per-row generation settings (and the vLLM-style struct).
CONSUMED = ("sampling_params", "max_new_tokens", "temperature")
# Output columns the engine may add beside workers.actor.OUTPUT_SCHEMA_TAIL (n samples, stops, logprobs).
EXTRA_OUTPUT_COLUMNS = ("sample_index", "stop_reason", "logprobs")


def output_names() -> set[str]:
    from workers.actor import OUTPUT_SCHEMA_TAIL

    return {"id", *(name for name, _ in OUTPUT_SCHEMA_TAIL), *EXTRA_OUTPUT_COLUMNS}


def is_auto(config: GenerateConfig) -> bool:
    """Whether the prompt column is the input's to decide (neither column set)."""
    return config.prompt_column is None and config.messages_column is None


def text_columns(config: GenerateConfig, names, source: str = "--input") -> tuple[str, str | None]:
    """(prompt column, messages column) for an input with these column names: the ones set, else
    ``messages`` when the input has that column and no ``prompt`` column. ConfigError when
    nothing is set and the input has both."""
    if not is_auto(config):
        return config.prompt_column or PROMPT, config.messages_column
    if PROMPT in names and MESSAGES in names:
        raise ConfigError(f"{source} has both a {PROMPT!r} and a {MESSAGES!r} column; pass --prompt-column {PROMPT} "
                          f"to read the text prompts or --messages-column {MESSAGES} to read the chat messages")
    return PROMPT, MESSAGES if MESSAGES in names else None


def with_text_columns(config: GenerateConfig, names, source: str = "--input") -> GenerateConfig:
    """``config`` with the columns of ``text_columns`` set (a copy; ``config`` when already so)."""
    prompt, messages = text_columns(config, names, source)
    if (config.prompt_column, config.messages_column) == (prompt, messages):
        return config
    chosen = copy.copy(config)  # not dataclasses.replace: the resolved decoder choices stay
    chosen.prompt_column, chosen.messages_column = prompt, messages
    return chosen


def for_input(config: GenerateConfig) -> GenerateConfig:
    """``with_text_columns`` for --input's columns (the Parquet footers). An input that cannot be
    read keeps ``prompt``: validate.check_input reports what is wrong with it."""
    try:
        names = input_schema(config).names if is_auto(config) and config.input else []
    except Exception:  # noqa: BLE001 - reported, with its cause, by validate.check_input
        names = []
    return with_text_columns(config, names)


def input_schema(config) -> pa.Schema:
    """The union of the input files' schemas (footers only)."""
    import pyarrow.parquet as pq

    fs, path = open_fs(config.input, config.storage_options)

    def read(file):
        with fs.open(file, "rb") as f:
            return pq.read_schema(f)
    schemas = [retry(read, file) for file in list_parquet(fs, path)]
    return pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])


def passthrough(config, schema: pa.Schema) -> pa.Schema:
    """The input columns to carry, in input order. ConfigError (exit 2) when --keep-columns names
    a column the input lacks, or a carried column has an output column's name."""
    prompt, messages = text_columns(config, schema.names)
    text_column = messages or prompt
    if config.keep_columns is None:
        consumed = {config.id_column, text_column, *CONSUMED}
        names = [n for n in schema.names if n not in consumed]
    else:
        names = [n.strip() for n in config.keep_columns.split(",") if n.strip()]
        missing = [n for n in names if n not in schema.names]
        if missing:
            raise ConfigError(f"--keep-columns names {', '.join(map(repr, missing))}, not in --input "
                              f"(columns: {', '.join(schema.names)})")
    if config.keep_prompt and text_column not in names:
        names.append(text_column)
    clashes = [n for n in names if n in output_names()]
    if clashes:
        raise ConfigError(f"--input column {clashes[0]!r} has the name of an output column, so it cannot be "
                          f"carried to the output; rename it in the input, or list the columns to keep with "
                          f"--keep-columns (output columns: {', '.join(sorted(output_names()))})")
    order = {name: i for i, name in enumerate(schema.names)}
    return pa.schema([schema.field(n) for n in sorted(dict.fromkeys(names), key=order.__getitem__)])


def carry(out: pa.Table, batch: pa.Table, columns: pa.Schema, id_column: str) -> pa.Table:
    """``out`` (generation rows, ``id`` first) with ``columns`` taken from the input ``batch``
    row of the same id (an input row may give several output rows: n samples)."""
    if len(columns) == 0:
        return out
    ids_in, ids_out = batch.column(id_column), out.column("id")
    same_rows = out.num_rows == batch.num_rows and ids_out.equals(ids_in)
    index = None if same_rows else pc.index_in(ids_out, value_set=ids_in.combine_chunks())
    for field in columns:
        if field.name in batch.column_names:
            column = batch.column(field.name)
            column = column.cast(field.type) if column.type != field.type else column
        else:  # this input file has no such column
            column = pa.nulls(batch.num_rows, field.type)
        out = out.append_column(field, column if index is None else column.take(index))
    return out
