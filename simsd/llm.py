"""``simsd.LLM``: vLLM's offline ``LLM`` shape over the engine actor's code, run in this process.

Prompts go through the same row code as `simsd generate` (pipeline.processor.ProcessorUDF ->
workers.actor.GenerateUDF -> workers.engine.Engine): same tokenization, chat template, per-row
checks and error rows, so the same settings give the same tokens as the CLI.
"""
from __future__ import annotations

import dataclasses
import gc
from typing import Callable, Sequence

import pyarrow as pa

from pipeline import quiet
from pipeline.processor import ProcessorUDF, as_config, set_fields
from workers.row_params import COLUMN as SAMPLING_COLUMN, row_params
from pipeline.validate import validate_models
from workers.api import SamplingParams

from .errors import as_keywords, keyword_errors
from .outputs import CompletionOutput, RequestOutput

# Job settings about files, columns and the actor pool: they mean nothing in-process.
_JOB_ONLY = ("input", "output", "overwrite", "workers", "gpus_per_worker", "id_column", "prompt_column",
             "messages_column")


class LLM:
    """``LLM(target, draft=None, decoder=None, **options)``: load the target (and draft) once.

    ``options`` are the job config's engine and decoding keys (device, dtype, batch_size,
    max_new_tokens, temperature, top_k, top_p, seed, remasking, block_length, verify, ...;
    see ``simsd generate --help``). ``decoder`` defaults to auto when a draft is given (SimSD
    with exact verification and adaptive rounds: lossless, the fastest choice), vanilla otherwise; with a draft, ``draft_remasking`` defaults to sequential, so that any request may
    sample losslessly (MRS). Raises ConfigError (a ValueError) for a bad setting or an unloadable
    model, its message in keyword terms (``draft_remasking='sequential'``).

    ``generate``/``chat`` raise ValueError for settings that fail the whole request (a bad
    SamplingParams, sampling with a draft that reveals in confidence order). What fails one
    prompt only (empty, too long for the context, a chat template error) is that output's
    ``finish_reason == "error"`` with ``text=None`` and ``error`` saying why; the other outputs
    are returned normally.
    """

    def __init__(self, target: str, draft: str | None = None, decoder: str | None = None, *,
                 engine_factory: Callable | None = None, **options):
        for name in _JOB_ONLY:
            if name in options:
                raise TypeError(f"LLM() got the job setting {name!r}: it applies to `simsd generate` and "
                                "build_processor, not to in-process generation")
        if draft is not None:  # any request may sample: the draft order that keeps MRS lossless
            options.setdefault("draft_remasking", "sequential")
        with keyword_errors():
            self.config = as_config({"target": target, "draft": draft, "decoder": decoder,
                                     "prompt_column": "prompt", **options})
            quiet.install(self.config.verbose)  # before any model loads, as the actors do
            self.warnings = validate_models(self.config, in_process=True)
        self._draft_is_diffusion = _draft_is_diffusion(self.config)
        factory = engine_factory or _engine_factory()
        self._engine = factory(self.config)
        chat_config = dataclasses.replace(self.config, messages_column="messages")
        self._rows = {"prompt": ProcessorUDF(self.config, self._shared_engine),
                      "messages": ProcessorUDF(chat_config, self._shared_engine)}

    def _shared_engine(self, _config):
        return self._engine

    @property
    def tokenizer(self):
        """The target's tokenizer (a transformers tokenizer)."""
        return self._live_engine().tokenizer.tokenizer

    def generate(self, prompts: str | Sequence[str],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[RequestOutput]:
        """One RequestOutput per prompt, in order. Text prompts go through the chat template
        unless the LLM was built with ``no_chat_template=True``."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        for p in prompts:
            if not isinstance(p, str):
                raise TypeError(f"generate() takes text prompts, got {type(p).__name__}; "
                                "for chat messages use chat()")
        return self._run("prompt", prompts, sampling_params)

    def chat(self, messages: Sequence[dict] | Sequence[Sequence[dict]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[RequestOutput]:
        """One conversation (a list of {role, content}) or a list of them, through the target's
        chat template; one RequestOutput per conversation."""
        messages = list(messages)
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        return self._run("messages", [list(c) for c in conversations], sampling_params)

    def _run(self, column: str, values: list, sampling_params) -> list[RequestOutput]:
        udf = self._rows[column] if self._engine is not None else self._closed()
        params = _per_row(sampling_params, len(values))
        if not values:
            return []
        structs = [None if p is None else set_fields(p) for p in params]
        for struct in structs:
            merged = row_params(self.config.sampling, struct)  # the actor's own merge and checks
            if isinstance(merged, str):
                raise ValueError(merged)
            self._check_request(merged)
        columns = {"id": list(range(len(values))), column: values}
        if any(s is not None for s in structs):
            columns[SAMPLING_COLUMN] = structs
        out = udf(pa.table(columns))
        return _outputs(out.to_pylist(), values, column, udf)

    def _check_request(self, params: SamplingParams) -> None:
        """Settings that would fail every row of the request raise here, as vLLM does; what fails
        one row only (an empty or too long prompt, a template error) stays on that output."""
        from workers.decoding.acceptance import mrs_refusal

        if params.temperature <= 0 or self.config.draft is None:
            return
        if self.config.acceptance == "greedy":
            raise ValueError(f"temperature={params.temperature} needs acceptance='mrs' or 'auto', but this LLM was "
                             "built with acceptance='greedy'")
        problem = mrs_refusal(self._draft_is_diffusion, self.config.draft_remasking)
        if problem:
            raise ValueError(as_keywords(f"{problem}; build the LLM without --draft-remasking (a draft then reveals "
                                         "left to right) or with --draft-remasking sequential"))

    def close(self) -> None:
        """Free the engine's caches and weights (idempotent)."""
        engine, self._engine = self._engine, None
        self._rows = {}
        if engine is None:
            return
        engine.close()
        del engine
        gc.collect()
        _empty_device_cache()

    def _live_engine(self):
        return self._engine if self._engine is not None else self._closed()

    @staticmethod
    def _closed():
        raise RuntimeError("this LLM is closed")

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _engine_factory() -> Callable:
    from workers.actor import _default_engine_factory  # the actor's own: one way to build an engine

    return _default_engine_factory


def _draft_is_diffusion(config) -> bool:
    """Whether the draft is an SDAR (block diffusion) model, from its config.json."""
    if config.draft is None:
        return False
    from workers.models import load_config
    from workers.models.source import resolve_model_path

    return bool(load_config(resolve_model_path(config.draft, config.storage_options)).is_diffusion)


def _per_row(sampling_params, n: int) -> list:
    if sampling_params is None or isinstance(sampling_params, SamplingParams):
        return [sampling_params] * n
    params = list(sampling_params)
    if len(params) != n:
        raise ValueError(f"got {len(params)} sampling_params for {n} prompts; pass one, or one per prompt")
    for p in params:
        if not isinstance(p, SamplingParams):
            raise TypeError(f"sampling_params must be SamplingParams, got {type(p).__name__}")
    return params


def _outputs(rows: list[dict], values: list, column: str, udf: ProcessorUDF) -> list[RequestOutput]:
    """Output rows (one per sample, keyed by input index) -> one RequestOutput per input."""
    by_index: dict[int, list[dict]] = {}
    for row in rows:
        by_index.setdefault(row["id"], []).append(row)
    results = []
    for i, value in enumerate(values):
        ids = _prompt_ids(udf, {column: value})
        prompt = value if column == "prompt" else _render(udf, ids)
        samples = sorted(by_index.get(i, []), key=lambda r: r.get("sample_index") or 0)
        results.append(RequestOutput(request_id=str(i), prompt=prompt, prompt_token_ids=ids,
                                     outputs=[CompletionOutput.from_row(r) for r in samples]))
    return results


def _prompt_ids(udf: ProcessorUDF, row: dict) -> list[int] | None:
    try:
        return udf.udf.prompt_ids(row)
    except Exception:  # noqa: BLE001 - the row's output already carries the error
        return None


def _render(udf: ProcessorUDF, ids: list[int] | None) -> str | None:
    """The templated prompt text, special tokens included (vLLM's ``prompt`` for chat)."""
    return None if ids is None else udf.udf.tokenizer.tokenizer.decode(ids, skip_special_tokens=False)


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
