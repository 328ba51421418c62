"""The Ray Data UDF that holds one engine (target + optional draft) resident on one GPU.

Ray Data's ActorPoolStrategy constructs this class once per actor, then calls it on every
batch. Row contract: exactly one output row per input row, in input order; a row that cannot
be generated gets ``finish_reason="error"`` and a message in ``error`` instead of raising,
so one bad prompt never fails a batch (and never makes Ray retry the whole batch).
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Callable

import pyarrow as pa

from workers.api import Request, Result
from workers.metrics import ActorMetrics

OUTPUT_SCHEMA_TAIL = [  # every output column after `id`, with its type
    ("generated_text", pa.string()),
    ("generated_token_ids", pa.list_(pa.int64())),
    ("num_input_tokens", pa.int64()),
    ("num_generated_tokens", pa.int64()),
    ("finish_reason", pa.string()),
    ("error", pa.string()),
    ("num_rounds", pa.int64()),
    ("num_drafted_tokens", pa.int64()),
    ("num_accepted_tokens", pa.int64()),
    ("num_target_forwards", pa.int64()),
    ("num_draft_forwards", pa.int64()),
    ("time_taken_s", pa.float64()),
    ("actor_id", pa.string()),
    ("finished_at", pa.float64()),
]
_OVERRIDES = ("max_new_tokens", "temperature")
MAX_TEMPERATURE = 100.0
log = logging.getLogger(__name__)


def is_out_of_memory(err: BaseException) -> bool:
    """A device (or host) out-of-memory error: worth retrying the batch in smaller pieces."""
    try:
        import torch

        if isinstance(err, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # noqa: BLE001 - torch missing or without cuda
        pass
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def _free_device_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def _default_engine_factory(config):
    from workers.engine import Engine

    return Engine(config.target, config.draft, config.decode, device=config.device, dtype=config.dtype,
                  storage_options=config.storage_options)


class GenerateUDF:
    """Callable on a pyarrow batch of prompts; returns a pyarrow batch of generations."""

    def __init__(self, config, engine_factory: Callable | None = None):
        # Loading a model takes far longer than a batch: do it once per actor, never per batch.
        self.config = config
        self.engine = (engine_factory or _default_engine_factory)(config)
        self.tokenizer = self.engine.tokenizer
        self.actor_id = f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = ActorMetrics(self.actor_id, config.decoder)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        ids = [row[self.config.id_column] for row in rows]
        requests, results = [], [None] * len(rows)
        for i, row in enumerate(rows):
            request_or_error = self._request(i, row)
            if isinstance(request_or_error, str):
                results[i] = Result(id=ids[i], finish_reason="error", error=request_or_error)
            else:
                requests.append(request_or_error)
        for request, result in zip(requests, self._generate(requests)):
            results[request.id] = result
        self.metrics.record(results)
        return self._to_table(batch.column(self.config.id_column), results)

    def _generate(self, requests: list[Request]) -> list[Result]:
        """engine.generate, split in halves on out-of-memory down to single rows; a single row
        that still runs out of memory gets an error result. Any other error propagates: the batch
        fails, Ray Data stops the job, and a rerun resumes.

        workers.engine.Engine frees its KV caches when it runs out of memory and sizes them to
        min(batch_size, rows of the call) slots x the longest sequence of the call, so each half
        starts from an empty device with fewer slots (and long rows apart from short ones)."""
        if not requests:
            return []
        try:
            return self.engine.generate(requests)
        except Exception as err:  # noqa: BLE001 - filtered just below
            if not is_out_of_memory(err):
                raise
            _free_device_memory()
            if len(requests) == 1:
                log.warning("row %s ran out of memory on its own: %s", requests[0].id, err)
                return [Result(id=requests[0].id, finish_reason="error", num_input_tokens=len(requests[0].prompt_ids),
                               error=f"out of memory generating this row alone ({type(err).__name__})")]
            log.warning("out of memory on %d rows; retrying in two halves", len(requests))
            half = len(requests) // 2
            return self._generate(requests[:half]) + self._generate(requests[half:])

    def _request(self, index: int, row: dict) -> Request | str:
        """A Request keyed by the row's index in the batch, or an error message for this row."""
        try:
            prompt_ids = self._encode(row)
        except Exception as err:  # malformed messages, tokenizer failure
            return f"cannot tokenize the prompt: {err}"
        if not prompt_ids:
            return "prompt is empty after tokenization"
        limit = getattr(self.engine, "max_prompt_tokens", None) or getattr(self.engine, "max_context", None)
        if limit is not None and len(prompt_ids) > limit:
            return f"prompt has {len(prompt_ids)} tokens, more than the model's limit of {limit}"
        overrides = {name: row.get(name) for name in _OVERRIDES}
        problem = _check_overrides(overrides)
        if problem:
            return problem
        context = getattr(self.engine, "max_context", None)
        max_new = overrides["max_new_tokens"] or self.config.max_new_tokens
        if context is not None and len(prompt_ids) + max_new > context:
            return (f"prompt of {len(prompt_ids)} tokens + max_new_tokens {max_new} exceeds the model's "
                    f"context of {context} tokens")
        return Request(id=index, prompt_ids=prompt_ids, **overrides)

    def prompt_ids(self, row: dict) -> list[int]:
        """The token ids this actor decodes for one input row (raises on a malformed row)."""
        return self._encode(row)

    def _encode(self, row: dict) -> list[int]:
        if self.config.messages_column:
            messages = row.get(self.config.messages_column)
            if messages is None:
                raise ValueError(f"column {self.config.messages_column!r} is null")
            if isinstance(messages, (str, bytes, dict)):
                raise ValueError(f"column {self.config.messages_column!r} must be a list of {{role, content}}")
            return self.tokenizer.encode_prompt(messages=list(messages))
        prompt = row.get(self.config.prompt_column)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"column {self.config.prompt_column!r} is null or empty")
        return self.tokenizer.encode_prompt(prompt=prompt, use_chat_template=not self.config.no_chat_template)

    def _to_table(self, ids: pa.ChunkedArray, results: list[Result]) -> pa.Table:
        texts = [self._decode(r) for r in results]
        columns = {
            "generated_text": texts,
            "generated_token_ids": [list(r.token_ids) for r in results],
            "num_input_tokens": [r.num_input_tokens for r in results],
            "num_generated_tokens": [r.num_generated_tokens for r in results],
            "finish_reason": [r.finish_reason for r in results],
            "error": [r.error for r in results],
            "num_rounds": [r.num_rounds for r in results],
            "num_drafted_tokens": [r.num_drafted_tokens for r in results],
            "num_accepted_tokens": [r.num_accepted_tokens for r in results],
            "num_target_forwards": [r.num_target_forwards for r in results],
            "num_draft_forwards": [r.num_draft_forwards for r in results],
            "time_taken_s": [float(r.time_taken_s) for r in results],
            "actor_id": [self.actor_id] * len(results),
            "finished_at": [time.time()] * len(results),
        }
        arrays = [ids.combine_chunks()] + [pa.array(columns[n], type=t) for n, t in OUTPUT_SCHEMA_TAIL]
        return pa.Table.from_arrays(arrays, names=["id"] + [n for n, _ in OUTPUT_SCHEMA_TAIL])

    def _decode(self, result: Result) -> str | None:
        if result.finish_reason == "error":
            return None
        return self.tokenizer.decode(list(result.token_ids))

    def __del__(self):
        close = getattr(getattr(self, "engine", None), "close", None)
        if close is not None:
            close()


def _check_overrides(overrides: dict) -> str | None:
    """Null means "use the job's setting"; anything else must be in range."""
    max_new, temperature = overrides["max_new_tokens"], overrides["temperature"]
    if max_new is not None and (isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 1):
        return f"max_new_tokens override must be an integer >= 1, got {max_new!r}"
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not math.isfinite(temperature)
                                    or not 0 <= temperature <= MAX_TEMPERATURE):
        return f"temperature override must be a number in [0, {MAX_TEMPERATURE:g}], got {temperature!r}"
    return None
