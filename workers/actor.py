"""The Ray Data UDF that holds one engine (target + optional draft) resident on one GPU.

Ray Data's ActorPoolStrategy constructs this class once per actor, then calls it on every
batch. Row contract: exactly one output row per input row, in input order; a row that cannot
be generated gets ``finish_reason="error"`` and a message in ``error`` instead of raising,
so one bad prompt never fails a batch (and never makes Ray retry the whole batch).
"""
from __future__ import annotations

from workers.runtime.startup import FirstCall, StartupTimeline  # first: its import time starts the timeline

import errno
import hashlib
import logging
import math
import os
import socket
import time
from typing import Callable

import pyarrow as pa

from workers.api import Request, Result
from workers.row_params import COLUMN as SAMPLING_COLUMN, SAMPLE_INDEX, row_params, text_column
from workers.runtime.log_forward import forward_logs
from workers.runtime.metrics import ActorMetrics

LOGPROBS_TYPE = pa.list_(pa.struct([("token_id", pa.int64()), ("logprob", pa.float64()),
                                     ("top_token_ids", pa.list_(pa.int64())),
                                     ("top_logprobs", pa.list_(pa.float64()))]))
OUTPUT_SCHEMA_TAIL = [  # every output column after `id`, with its type
    ("sample_index", pa.int64()),        # which of the row's n samples (0..n-1); (id, sample_index) is unique
    ("generated_text", pa.string()),
    ("generated_token_ids", pa.list_(pa.int64())),
    ("num_input_tokens", pa.int64()),
    ("num_generated_tokens", pa.int64()),
    ("finish_reason", pa.string()),
    ("stop_reason", pa.string()),        # the stop string or stop token id (as text) that ended the row
    ("error", pa.string()),
    ("num_rounds", pa.int64()),
    ("num_drafted_tokens", pa.int64()),
    ("num_accepted_tokens", pa.int64()),
    ("num_target_forwards", pa.int64()),
    ("num_draft_forwards", pa.int64()),
    ("num_preemptions", pa.int64()),     # times the row was preempted (KV pool full) and recomputed
    ("num_undrafted_rounds", pa.int64()),  # simsd rounds the target decoded alone (adaptive)
    ("time_taken_s", pa.float64()),
    ("actor_id", pa.string()),
    ("finished_at", pa.float64()),
    ("logprobs", LOGPROBS_TYPE),         # null unless --logprobs / sampling_params.logprobs asked
]
_OVERRIDES = ("max_new_tokens", "temperature")
MAX_TEMPERATURE = 100.0
# No token covers more characters than this (the longest BPE tokens: runs of a few dozen spaces).
MAX_CHARS_PER_TOKEN = 64
log = logging.getLogger(__name__)


def is_out_of_memory(err: BaseException) -> bool:
    """A device (or host) out-of-memory error: worth retrying the batch in smaller pieces."""
    try:
        import torch

        if isinstance(err, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # noqa: BLE001 - torch missing or without cuda
        pass
    if isinstance(err, MemoryError) or (isinstance(err, OSError) and err.errno == errno.ENOMEM):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err).lower() for text in _OOM_TEXTS)


_OOM_TEXTS = ("out of memory", "can't allocate memory", "cannot allocate memory")  # the last two: torch's CPU allocator


def _free_device_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def _is_fatal(err: BaseException) -> bool:
    """Errors a row must never swallow (interpreter exit, Ctrl-C). Everything else, including the
    tokenizers library's Rust panics (a BaseException), is that row's error."""
    return isinstance(err, (KeyboardInterrupt, SystemExit, GeneratorExit))


def _default_engine_factory(config):
    from workers.runtime.compile_cache import use_compile_cache
    from workers.engine import Engine

    use_compile_cache(getattr(config, "compile_cache_dir", None))

    return Engine(config.target, config.draft, config.decode, device=config.device, dtype=config.dtype,
                  storage_options=config.storage_options)


class GenerateUDF:
    """Callable on a pyarrow batch of prompts; returns a pyarrow batch of generations.

    With a ``monitor`` (pipeline.monitor.JobMonitor handle, passed by the driver) each engine call
    is recorded in its batch ledger, so a batch whose worker process died is known as such when
    Ray restarts the actor and re-runs it: it runs again at most ``config.max_batch_retries``
    times, then it is split in halves, and a half that kills its worker again is split again,
    until the row that kills it stands alone and is written as an error row. The monitor also
    receives this process's warnings and errors for the driver's log."""

    def __init__(self, config, engine_factory: Callable | None = None, monitor=None):
        # Loading a model takes far longer than a batch: do it once per actor, never per batch.
        self.config = config
        self.monitor = monitor
        if engine_factory is None:
            import workers.engine  # noqa: F401 - torch and the engine, timed as imports, not as loading
        self.startup = StartupTimeline(constructed_at=time.time())
        self.actor_id = f"{socket.gethostname()}:{os.getpid()}"
        if monitor is not None:
            forward_logs(monitor)
            monitor.placed.remote(self.actor_id)  # the watchdog: placed, now loading
        self.engine = (engine_factory or _default_engine_factory)(config)
        self.tokenizer = self.engine.tokenizer
        self.startup.loaded_at = time.time()
        self.startup.load = dict(getattr(self.engine, "load_times", {}))
        if monitor is not None:
            monitor.ready.remote(self.actor_id)
            if hasattr(self.engine, "progress"):  # live token counts from inside each engine call
                self.engine.progress = self._report_tokens
        self._tokens_done = 0  # tokens of this actor's engine calls that returned
        self._tokens_live = 0  # tokens so far in the call running now
        self.metrics = ActorMetrics(self.actor_id, config.decoder)
        self._row_keys: list[str] = []
        self._row_failures: list[BaseException] = []

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows, unreadable = _decode_rows(batch)
        self._row_keys = _row_keys(batch.column(self.config.id_column))
        requests, results = [], [None] * len(rows)
        for i, row in enumerate(rows):
            request_or_error = unreadable.get(i) or self._request(i, row)
            if isinstance(request_or_error, str):
                results[i] = Result(id=i, finish_reason="error", error=request_or_error)
            else:
                requests.append(request_or_error)
        self._row_failures = []
        for request, result in zip(requests, self._guarded(requests, self.config.max_batch_retries)):
            results[request.id] = result
        if requests and len(self._row_failures) == len(requests):
            # Every row failed even alone: the engine is broken, not the rows. Fail the batch
            # (Ray Data stops the job; rows written so far are kept).
            raise self._row_failures[0]
        for row, result in zip(rows, results):
            result.sample_index = _sample_index(row)
        self.metrics.record(results, self.engine)
        return self._to_table(batch.column(self.config.id_column), results)

    def _guarded(self, requests: list[Request], retries: int) -> list[Result]:
        """Run ``requests`` through the batch ledger (see the class docstring)."""
        if not requests or self.monitor is None:
            return self._generate(requests)
        import ray

        key = self._key(requests)
        deaths = ray.get(self.monitor.begin.remote(key, retries))
        if deaths <= retries:
            results = self._generate(requests)
            self.monitor.finish.remote(key, len(requests))
            return results
        if len(requests) == 1:
            row_id = self._row_keys[requests[0].id]
            self.monitor.poisoned.remote(row_id)
            log.error("row %s killed its worker process %d time(s); written as an error row", row_id, deaths)
            return [Result(id=requests[0].id, finish_reason="error", num_input_tokens=len(requests[0].prompt_ids),
                           error=f"this row killed its worker process {deaths} time(s) (the batch holding it "
                                 f"was retried {self.config.max_batch_retries} time(s), then split down to "
                                 "this row); not generated")]
        half = len(requests) // 2
        return self._guarded(requests[:half], 0) + self._guarded(requests[half:], 0)

    def _key(self, requests: list[Request]) -> str:
        ids = "\x1f".join(self._row_keys[r.id] for r in requests)
        return hashlib.sha256(ids.encode("utf-8", "backslashreplace")).hexdigest()

    def _generate(self, requests: list[Request]) -> list[Result]:
        """engine.generate; on an error, the engine's caches are released and the rows split in
        halves down to single rows. A row that still runs out of memory alone, or still fails
        alone, gets an error result (the latter also recorded in ``_row_failures``).

        workers.engine.Engine sizes its caches to min(batch_size, rows of the call) slots x the
        longest sequence of the call, so each half starts from an empty device with fewer slots
        (and long rows apart from short ones)."""
        if not requests:
            return []
        self._tokens_live = 0
        try:
            with FirstCall(self.startup) as call:
                results = self.engine.generate(requests)
            if call.recorded and self.monitor is not None:
                self.monitor.actor_started.remote(self.actor_id, self.startup.as_dict())
            self._tokens_done += self._tokens_live
            return results
        except BaseException as err:  # noqa: BLE001 - filtered just below
            if _is_fatal(err):
                raise
            self._release_caches()
            oom = is_out_of_memory(err)
            if len(requests) == 1:
                return [self._row_error(requests[0], err, oom)]
            log.warning("%s on %d rows; retrying in two halves", "out of memory" if oom else
                        f"generation failed ({type(err).__name__}: {err})", len(requests))
            half = len(requests) // 2
            return self._generate(requests[:half]) + self._generate(requests[half:])

    def _report_tokens(self, tokens: int) -> None:
        """Engine.progress: this actor's generated tokens so far, to the monitor (fire and forget)."""
        self._tokens_live = tokens
        self.monitor.tokens.remote(self.actor_id, self._tokens_done + tokens)

    def _row_error(self, request: Request, err: BaseException, oom: bool) -> Result:
        if oom:
            log.warning("a row ran out of memory on its own: %s", err)
            message = f"out of memory generating this row alone ({type(err).__name__})"
        else:
            self._row_failures.append(err)
            message = f"generation failed for this row alone: {type(err).__name__}: {err}"
        return Result(id=request.id, finish_reason="error", num_input_tokens=len(request.prompt_ids), error=message)

    def _release_caches(self) -> None:
        """Free what the failed call held (KV caches, graph pools) before the next attempt."""
        release = getattr(self.engine, "release_caches", None)
        if release is not None:
            try:
                release()
            except Exception as err:  # noqa: BLE001 - the retry may still fit
                log.warning("releasing the engine's caches failed: %s", err)
        _free_device_memory()

    def _request(self, index: int, row: dict) -> Request | str:
        """A Request keyed by the row's index in the batch, or an error message for this row."""
        too_long = self._too_many_chars(row)
        if too_long:
            return too_long
        try:
            prompt_ids = self._encode(row)
        except BaseException as err:  # malformed messages, template or tokenizer failure, limits
            if _is_fatal(err):
                raise
            return f"cannot tokenize the prompt: {type(err).__name__}: {err}"
        if not prompt_ids:
            return "prompt is empty after tokenization"
        limit = getattr(self.engine, "max_prompt_tokens", None) or getattr(self.engine, "max_context", None)
        if limit is not None and len(prompt_ids) > limit:
            return f"prompt has {len(prompt_ids)} tokens, more than the model's limit of {limit}"
        overrides = {name: row.get(name) for name in _OVERRIDES}
        problem = _check_overrides(overrides)
        if problem:
            return problem
        params = None
        if getattr(self.config, "sampling", None) is not None:
            params = row_params(self.config.sampling, row.get(SAMPLING_COLUMN))
            if isinstance(params, str):
                return params
        context = getattr(self.engine, "max_context", None)
        max_new = overrides["max_new_tokens"] or (params.max_tokens if params else self.config.max_new_tokens)
        if context is not None and len(prompt_ids) + max_new > context:
            return (f"prompt of {len(prompt_ids)} tokens + max_new_tokens {max_new} exceeds the model's "
                    f"context of {context} tokens")
        return Request(id=index, prompt_ids=prompt_ids, **overrides, params=params, sample_index=_sample_index(row),
                       row_id=row.get(self.config.id_column))

    def _too_many_chars(self, row: dict) -> str | None:
        """Text that cannot fit the model's limit (MAX_CHARS_PER_TOKEN a token), refused by its
        character count before tokenizing it: a 45 MB prompt costs minutes and gigabytes to tokenize."""
        limit = getattr(self.engine, "max_prompt_tokens", None) or getattr(self.engine, "max_context", None)
        if limit is None:
            return None
        chars = _text_length(row.get(text_column(self.config)))
        if chars > limit * MAX_CHARS_PER_TOKEN:
            return (f"prompt has {chars} characters, more than the {limit * MAX_CHARS_PER_TOKEN} that the "
                    f"model's limit of {limit} tokens can hold (at most {MAX_CHARS_PER_TOKEN} characters a "
                    "token); not tokenized")
        return None

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
        column = text_column(self.config)
        prompt = row.get(column)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"column {column!r} is null or empty")
        return self.tokenizer.encode_prompt(prompt=prompt, use_chat_template=not self.config.no_chat_template)

    def _to_table(self, ids: pa.ChunkedArray, results: list[Result]) -> pa.Table:
        texts = [self._decode(r) for r in results]
        columns = {
            "sample_index": [r.sample_index for r in results],
            "generated_text": texts,
            "generated_token_ids": [list(r.token_ids) for r in results],
            "num_input_tokens": [r.num_input_tokens for r in results],
            "num_generated_tokens": [r.num_generated_tokens for r in results],
            "finish_reason": [r.finish_reason for r in results],
            "stop_reason": [r.stop_reason for r in results],
            "error": [r.error for r in results],
            "num_rounds": [r.num_rounds for r in results],
            "num_drafted_tokens": [r.num_drafted_tokens for r in results],
            "num_accepted_tokens": [r.num_accepted_tokens for r in results],
            "num_target_forwards": [r.num_target_forwards for r in results],
            "num_draft_forwards": [r.num_draft_forwards for r in results],
            "num_preemptions": [r.num_preemptions for r in results],
            "num_undrafted_rounds": [r.num_undrafted_rounds for r in results],
            "time_taken_s": [float(r.time_taken_s) for r in results],
            "actor_id": [self.actor_id] * len(results),
            "finished_at": [time.time()] * len(results),
            "logprobs": [r.logprobs for r in results],
        }
        arrays = [ids.combine_chunks()] + [pa.array(columns[n], type=t) for n, t in OUTPUT_SCHEMA_TAIL]
        return pa.Table.from_arrays(arrays, names=["id"] + [n for n, _ in OUTPUT_SCHEMA_TAIL])

    def _decode(self, result: Result) -> str | None:
        if result.finish_reason == "error":
            return None
        if result.text is not None:  # trimmed before a stop string
            return result.text
        return self.tokenizer.decode(list(result.token_ids))

    def __del__(self):
        close = getattr(getattr(self, "engine", None), "close", None)
        if close is not None:
            close()


def _text_length(value) -> int:
    """Characters of a prompt string or of a messages list's contents (0 for anything else)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_text_length(m.get("content")) if isinstance(m, dict) else 0 for m in value)
    return 0


def _sample_index(row: dict) -> int:
    """The row's sample index (set by the driver's n-sample expansion; 0 without it)."""
    value = row.get(SAMPLE_INDEX)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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


def _decode_rows(batch: pa.Table) -> tuple[list[dict], dict[int, str]]:
    """The batch as Python rows, and an error message for each row that cannot be read (text
    that is not valid UTF-8): such a row becomes an error row instead of failing the batch."""
    try:
        return batch.to_pylist(), {}
    except Exception:  # noqa: BLE001 - find the bad rows one by one
        pass
    rows, bad = [], {}
    for i in range(batch.num_rows):
        try:
            rows.append(batch.slice(i, 1).to_pylist()[0])
        except Exception as err:  # noqa: BLE001
            rows.append({})
            bad[i] = f"row cannot be read: {type(err).__name__}: {err}"
    return rows, bad


def _row_keys(ids: pa.ChunkedArray) -> list[str]:
    """A stable text key per row id (string ids are read as bytes: they may be invalid UTF-8)."""
    if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
        return [repr(v) for v in ids.cast(pa.binary() if pa.types.is_string(ids.type) else pa.large_binary()).to_pylist()]
    return [repr(v) for v in ids.to_pylist()]
