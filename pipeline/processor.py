"""The generation stage of `simsd generate`, for any Ray Dataset: ``build_processor``.

``generate_stage`` is the one place the engine actor pool is attached to a Dataset: the CLI's
driver calls it after reading the input and dropping done ids; ``build_processor`` calls it on
a user's own Dataset (Ray Data LLM's ``build_processor(config, preprocess, postprocess)``).
Both therefore share the actor pool, continuous batching and per-row error handling.
"""
from __future__ import annotations

import sys
from dataclasses import fields
from typing import Callable

import pyarrow as pa

import workers.runtime.startup  # noqa: F401 - in an actor, its import time starts the start-up timeline
from workers.api import SamplingParams
from . import quiet, sampling_params
from .columns import carry, is_auto, with_text_columns
from .config import ConfigError, GenerateConfig, from_mapping
from .keywords import keyword_errors
from .resources import cpus_per_worker, gpus_per_worker, num_workers, rows_per_call

DATASET = "the Dataset"  # what a user's columns are called in messages (the CLI's: --input)


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
    ConfigError, its message in keyword terms) and return a Processor: ``processor(ds)`` maps a
    Ray Dataset of prompts (a ``prompt`` or a ``messages`` column, unless ``prompt_column`` /
    ``messages_column`` name another) to one with the generation columns plus every input column.
    ``preprocess`` / ``postprocess`` are row functions (dict -> dict) applied with ``Dataset.map``
    before / after generation."""
    from .validate import validate_models

    with keyword_errors():
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
        config = _known_columns(ds, self.config)
        ds = generate_stage(ds, config, self.engine_factory, pass_through=True)
        if self.postprocess is not None:
            ds = ds.map(self.postprocess)
        return ds


def _known_columns(ds, config: GenerateConfig) -> GenerateConfig:
    """When the schema is known without running anything: ``config`` with the prompt column
    chosen (columns.text_columns) and the CLI's column check passed. Else ``config``: after a map
    ProcessorUDF chooses per batch, and rows without the prompt column become error rows."""
    from .validate import check_columns

    schema = ds.schema(fetch_if_missing=False)
    if schema is None:
        return config
    names = list(schema.names)
    with keyword_errors():
        # An id column is optional here (the Dataset is the user's); the prompt column is not.
        check_columns(names if config.id_column in names else [*names, config.id_column], config, source=DATASET)
        return with_text_columns(config, names, DATASET)


def generate_stage(ds, config: GenerateConfig, engine_factory: Callable | None = None,
                   pass_through: bool = False, **udf_kwargs):
    """``ds`` with the engine actor pool applied: one output row per input row, each with the
    generation columns (workers.actor.OUTPUT_SCHEMA_TAIL) after ``id``; with ``pass_through``
    the input's other columns follow them. ``udf_kwargs`` go to GenerateUDF (the driver's
    job monitor)."""
    import ray

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
        batch_size=rows_per_call(config),
        batch_format="pyarrow",
        # A dead actor (segfault, host OOM kill, lost node) is restarted by Ray and its unfinished
        # batches re-run: Ray Data's actor pools default to max_restarts=-1, max_task_retries=-1
        # (passing them here is deprecated). Rows are written only after a whole batch returns,
        # so a retried batch writes nothing twice. The UDF bounds the re-runs of a batch that
        # keeps killing its worker (--max-batch-retries, then bisection: workers/actor.py).
    )


class ProcessorUDF:
    """GenerateUDF plus what a user's Dataset needs: an optional id column, the expansion of
    each prompt into its n samples (``sample_index``), and the input's columns carried to the
    output. Per-row ``sampling_params`` structs are the actor's (workers/actor.py)."""

    def __init__(self, config: GenerateConfig, engine_factory: Callable | None = None, pass_through: bool = False,
                 **udf_kwargs):
        from workers.actor import GenerateUDF

        quiet.install(config.verbose)  # before the models load: known harmless warnings stay hidden
        self.config, self.pass_through = config, pass_through
        self.udf = GenerateUDF(config, engine_factory, **udf_kwargs)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if is_auto(self.config):  # a Dataset whose schema was unknown at build time: this batch's columns
            with keyword_errors():
                self.udf.config = with_text_columns(self.config, batch.column_names, DATASET)
        id_column = self.config.id_column
        has_id = id_column in batch.column_names
        if not has_id:  # a user's Dataset may have no id: the row's position in the batch stands in
            batch = batch.append_column(id_column, pa.array(range(batch.num_rows), pa.int64()))
        if sampling_params.SAMPLE_INDEX not in batch.column_names:  # the CLI expands before dropping done rows
            batch = sampling_params.expand(batch, self.config.sampling)  # n rows per prompt
        out = self.udf(batch)
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


def set_fields(params: SamplingParams) -> dict | None:
    """The fields changed from SamplingParams' defaults, or None when none is: a request's
    ``sampling_params`` struct, whose missing fields follow the job's settings."""
    default = SamplingParams()
    return {f.name: getattr(params, f.name) for f in fields(params)
            if getattr(params, f.name) != getattr(default, f.name)} or None
