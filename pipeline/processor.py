"""The generation stage of `simsd generate`, for any Ray Dataset: ``build_processor``.

``generate_stage`` is the one place the engine actor pool is attached to a Dataset: the CLI's
driver calls it after reading the input and dropping done ids; ``build_processor`` calls it on
a user's own Dataset (Ray Data LLM's ``build_processor(config, preprocess, postprocess)``).
Both therefore share the actor pool, continuous batching and per-row error handling.
"""
from __future__ import annotations

import sys
from dataclasses import fields
from typing import Any, Callable

import pyarrow as pa

from workers.api import SamplingParams
from . import quiet
from .columns import carry
from .config import ConfigError, GenerateConfig, from_mapping

SAMPLING_COLUMN = "sampling_params"
# Per-row sampling fields the actor honours today, and the override column each one fills.
ROW_OVERRIDES = {"max_tokens": "max_new_tokens", "temperature": "temperature"}
# Fields the engine applies job-wide: a row may repeat the job's value, not change it.
JOB_WIDE = {"top_p": "top_p", "top_k": "top_k", "seed": "seed"}


def as_config(config: GenerateConfig | dict) -> GenerateConfig:
    """A GenerateConfig from a typed config or a dict of the YAML job keys (ConfigError if bad)."""
    if isinstance(config, GenerateConfig):
        return config
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a GenerateConfig or a dict of settings, got {type(config).__name__}")
    return from_mapping({str(k).replace("-", "_"): v for k, v in config.items()})


def build_processor(config: GenerateConfig | dict, preprocess: Callable | None = None,
                    postprocess: Callable | None = None, engine_factory: Callable | None = None) -> "Processor":
    """Validate ``config`` the way `simsd generate` does (models, tokenizers, settings; raises
    ConfigError) and return a Processor: ``processor(ds)`` maps a Ray Dataset of prompts to one
    with the generation columns plus every input column. ``preprocess`` / ``postprocess`` are
    row functions (dict -> dict) applied with ``Dataset.map`` before / after generation."""
    from .validate import validate_models

    config = as_config(config)
    warnings = validate_models(config)
    for warning in warnings:
        print(f"simsd: warning: {warning}", file=sys.stderr)
    return Processor(config, preprocess, postprocess, engine_factory, warnings)


class Processor:
    """``Processor(ds) -> ds``: lazy, like every Ray Data transform; nothing runs until the
    result is consumed (``take``, ``write_parquet``, ``iter_rows``...)."""

    def __init__(self, config: GenerateConfig, preprocess=None, postprocess=None, engine_factory=None,
                 warnings: list[str] | None = None):
        self.config, self.preprocess, self.postprocess = config, preprocess, postprocess
        self.engine_factory, self.warnings = engine_factory, list(warnings or [])

    def __call__(self, ds):
        if self.preprocess is not None:
            ds = ds.map(self.preprocess)
        _check_known_schema(ds, self.config)
        ds = generate_stage(ds, self.config, self.engine_factory, pass_through=True)
        if self.postprocess is not None:
            ds = ds.map(self.postprocess)
        return ds


def _check_known_schema(ds, config: GenerateConfig) -> None:
    """The CLI's column check, when the schema is known without running anything."""
    from .validate import check_columns

    schema = ds.schema(fetch_if_missing=False)
    if schema is None:
        return  # after a map: rows without the prompt column become error rows
    names = list(schema.names)
    # An id column is optional here (the Dataset is the user's); the prompt column is not.
    check_columns(names if config.id_column in names else [*names, config.id_column], config)


def generate_stage(ds, config: GenerateConfig, engine_factory: Callable | None = None,
                   pass_through: bool = False, **udf_kwargs):
    """``ds`` with the engine actor pool applied: one output row per input row, each with the
    generation columns (workers.actor.OUTPUT_SCHEMA_TAIL) after ``id``; with ``pass_through``
    the input's other columns follow them. ``udf_kwargs`` go to GenerateUDF (the driver's
    job monitor)."""
    import ray

    from .driver import _rows_per_call, cpus_per_worker, gpus_per_worker, num_workers

    return ds.map_batches(
        ProcessorUDF,
        fn_constructor_kwargs={"config": config, "engine_factory": engine_factory, "pass_through": pass_through,
                               **udf_kwargs},
        # A fixed pool, not autoscaling: model load time is large, so start every actor once.
        # Two batches in flight per actor: one decoding, one queued so the GPU never waits, and
        # no actor hoards the input while another sits idle.
        compute=ray.data.ActorPoolStrategy(size=num_workers(config), max_tasks_in_flight_per_actor=2),
        num_gpus=gpus_per_worker(config),
        # Fractional: the engine actors never hold the CPU that reading and writing need.
        num_cpus=cpus_per_worker(config),
        # Enough rows per call to keep every continuous-batching slot filled.
        batch_size=_rows_per_call(config),
        batch_format="pyarrow",
        # A dead actor (segfault, host OOM kill, lost node) is restarted by Ray and its unfinished
        # batches re-run: Ray Data's actor pools default to max_restarts=-1, max_task_retries=-1
        # (passing them here is deprecated). Rows are written only after a whole batch returns,
        # so a retried batch writes nothing twice. The UDF bounds the re-runs of a batch that
        # keeps killing its worker (--max-batch-retries, then bisection: workers/actor.py).
    )


class ProcessorUDF:
    """GenerateUDF plus what a user's Dataset needs: an optional id column, per-row
    ``sampling_params`` structs, and the input's other columns carried to the output."""

    def __init__(self, config: GenerateConfig, engine_factory: Callable | None = None, pass_through: bool = False,
                 **udf_kwargs):
        from workers.actor import GenerateUDF

        quiet.install(config.verbose)  # before the models load: known harmless warnings stay hidden
        self.config, self.pass_through = config, pass_through
        self.udf = GenerateUDF(config, engine_factory, **udf_kwargs)

    def __call__(self, batch: pa.Table) -> pa.Table:
        id_column = self.config.id_column
        has_id = id_column in batch.column_names
        if not has_id:  # a user's Dataset may have no id: the row's position in the batch stands in
            batch = batch.append_column(id_column, pa.array(range(batch.num_rows), pa.int64()))
        inner, problems = _apply_sampling_params(batch, self.config, self.udf)
        out = self._generate(inner, problems)
        out = carry(out, batch, self._carried(batch, out, has_id), id_column)
        return out if has_id else out.drop_columns(["id"])

    def _carried(self, batch: pa.Table, out: pa.Table, has_id: bool) -> pa.Schema:
        """The input columns to carry: the CLI's, chosen before Ray started; for a user's Dataset
        (``pass_through=True``) every input column without an output column's name."""
        if isinstance(self.pass_through, pa.Schema):
            return self.pass_through
        if not self.pass_through:
            return pa.schema([])
        synthetic = set() if has_id else {self.config.id_column}
        return pa.schema([f for f in batch.schema if f.name not in out.column_names and f.name not in synthetic])

    def _generate(self, batch: pa.Table, refused: dict[int, str]) -> pa.Table:
        """The UDF on the rows not refused; refused rows become error rows, in input order."""
        if not refused:
            return self.udf(batch)
        kept = [i for i in range(batch.num_rows) if i not in refused]
        bad = sorted(refused)
        ids = batch.take(bad).column(self.config.id_column)
        parts = [self.udf(batch.take(kept))] if kept else []
        parts.append(self.udf.error_rows(ids, [refused[i] for i in bad]))
        position = {old: new for new, old in enumerate(kept + bad)}
        return pa.concat_tables(parts).take([position[i] for i in range(batch.num_rows)])


def _apply_sampling_params(batch: pa.Table, config: GenerateConfig, udf) -> tuple[pa.Table, dict[int, str]]:
    """Per-row ``sampling_params`` -> the actor's override columns. Rows asking for a field
    the engine cannot honour yet get an error message (index -> message), never a silent
    default. An actor that reads the column itself (``reads_sampling_params``) gets it as is."""
    if SAMPLING_COLUMN not in batch.column_names or actor_reads_sampling_params(udf):
        return batch, {}
    overrides = {column: [] for column in ROW_OVERRIDES.values()}
    problems: dict[int, str] = {}
    for i, value in enumerate(batch.column(SAMPLING_COLUMN).to_pylist()):
        row, problem = row_overrides(value, config)
        if problem:
            problems[i] = problem
        for column in overrides:
            overrides[column].append(None if problem else row.get(column))
    for column, values in overrides.items():
        if column in batch.column_names:
            # An explicit sampling_params value wins over the plain override column.
            values = [v if v is not None else old for v, old in zip(values, batch.column(column).to_pylist())]
            batch = batch.drop_columns([column])
        batch = batch.append_column(column, pa.array(values, type=pa.int64() if column == "max_new_tokens"
                                                     else pa.float64()))
    return batch, problems


def actor_reads_sampling_params(udf) -> bool:
    """Whether the actor (workers.actor.GenerateUDF) applies the ``sampling_params`` column
    itself; until it says so, this module maps the fields it can honour and refuses the rest."""
    return bool(getattr(udf, "reads_sampling_params", False))


def sampling_problem(params: SamplingParams, config: GenerateConfig, udf) -> str | None:
    """Why ``params`` cannot be used for a request through ``udf``, or None."""
    if actor_reads_sampling_params(udf):
        return params.problem()
    return row_overrides(params, config)[1]


def row_overrides(value: Any, config: GenerateConfig) -> tuple[dict, str | None]:
    """One row's ``sampling_params`` (a SamplingParams, a mapping with vLLM's field names, or
    None) -> ({override column: value}, problem message or None)."""
    if isinstance(value, SamplingParams):
        value = set_fields(value)  # fields at their default follow the job's settings
    if value is None:
        return {}, None
    try:
        params = sampling_params(value)
    except (TypeError, ValueError) as err:
        return {}, f"sampling_params: {err}"
    problem = params.problem()
    if problem:
        return {}, f"sampling_params: {problem}"
    given = value
    unsupported = unsupported_fields(params, config, set(k for k, v in given.items() if v is not None))
    if unsupported:
        return {}, unsupported
    overrides = {column: getattr(params, name) for name, column in ROW_OVERRIDES.items()
                 if given.get(name) is not None}
    return overrides, None


def set_fields(params: SamplingParams) -> dict | None:
    """The fields changed from SamplingParams' defaults, or None when none is."""
    default = SamplingParams()
    return {f.name: getattr(params, f.name) for f in fields(params)
            if getattr(params, f.name) != getattr(default, f.name)} or None


def sampling_params(value: Any) -> SamplingParams:
    """A SamplingParams from itself or a mapping (nulls: the field's default; lists: tuples)."""
    if isinstance(value, SamplingParams):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"must be a struct of vLLM sampling fields, got {type(value).__name__}")
    known = {f.name for f in fields(SamplingParams)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return SamplingParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items() if v is not None})


def unsupported_fields(params: SamplingParams, config: GenerateConfig, given: set[str]) -> str | None:
    """A message naming every set field this engine cannot honour per row yet, or None."""
    defaults = SamplingParams()
    problems = []
    for f in fields(SamplingParams):
        name = f.name
        if name not in given or name in ROW_OVERRIDES:
            continue
        value = getattr(params, name)
        if name in JOB_WIDE:
            job_value = getattr(config, JOB_WIDE[name])
            if value != job_value and not (name == "top_k" and value == -1 and job_value == 0):
                problems.append(f"{name}={value!r} (only the job-wide {name}={job_value!r} is supported; "
                                f"set it in the config)")
        elif value != getattr(defaults, name):
            problems.append(f"{name}={value!r}")
    if not problems:
        return None
    return ("sampling_params not supported by this engine yet: " + "; ".join(problems)
            + f" (per-row fields honoured: {', '.join(ROW_OVERRIDES)})")
