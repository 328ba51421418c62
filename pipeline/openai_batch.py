"""OpenAI batch input files -> one prompt table (``simsd prepare`` reads them).

A batch file is JSONL, one request a line:
``{"custom_id": ..., "method": "POST", "url": "/v1/chat/completions", "body": {...}}``.
``custom_id`` becomes the ``id`` column, ``body.messages`` the ``messages`` column (``body.prompt``
the ``prompt`` column for ``/v1/completions``), the body's sampling fields the row's
``sampling_params`` struct (workers.row_params; a field a request leaves out follows the
``simsd generate`` flags), and ``body.model`` a ``model`` column carried to the output.

Anything the pipeline cannot honour (tools, response formats, logit biases, another endpoint, a
malformed line, a repeated custom_id) is refused by name and line number, never ignored.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from workers.api import SamplingParams

KEYS = ("custom_id", "method", "url", "body")
# url -> the body field holding the prompt, and the column it is written to.
ENDPOINTS = {"/v1/chat/completions": "messages", "/v1/completions": "prompt"}
ROLES = ("system", "user", "assistant")
# body field -> sampling_params field. The first group is OpenAI's; the second vLLM's extra
# sampling parameters, which its OpenAI-compatible server and batch runner accept.
BODY_FIELDS = {"max_tokens": "max_tokens", "max_completion_tokens": "max_tokens", "temperature": "temperature",
               "top_p": "top_p", "n": "n", "seed": "seed", "stop": "stop", "presence_penalty": "presence_penalty",
               "top_k": "top_k", "min_tokens": "min_tokens", "stop_token_ids": "stop_token_ids",
               "ignore_eos": "ignore_eos", "repetition_penalty": "repetition_penalty"}
# Body fields accepted only at the value that asks for nothing the pipeline lacks.
NEUTRAL = {"stream": False, "logprobs": False, "frequency_penalty": 0}
IGNORED = ("user",)  # an end-user tag for OpenAI's abuse monitoring: no effect on the output
STRUCT_TYPES = {"n": pa.int64(), "temperature": pa.float64(), "top_p": pa.float64(), "top_k": pa.int64(),
                "max_tokens": pa.int64(), "min_tokens": pa.int64(), "stop": pa.list_(pa.string()),
                "stop_token_ids": pa.list_(pa.int64()), "ignore_eos": pa.bool_(), "seed": pa.int64(),
                "repetition_penalty": pa.float64(), "presence_penalty": pa.float64()}
MESSAGES_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
MAX_REPORTED = 20  # problems listed in one error


class BatchFileError(ValueError):
    """The file's problems, one ``line N: ...`` each."""


def looks_like_batch_file(path: Path) -> bool:
    """Whether ``path`` is a .jsonl file whose first request line has OpenAI's batch keys."""
    if path.suffix != ".jsonl" or not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        record = json.loads(first)
    except ValueError:
        return '"custom_id"' in first  # a batch file whose first line is malformed: say so, by line
    return isinstance(record, dict) and "custom_id" in record and "body" in record


def read_batch_file(path: Path) -> pa.Table:
    """The prompt table of an OpenAI batch file; BatchFileError listing every refused line."""
    requests, problems = [], []
    seen: dict[str, int] = {}
    url = None
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = parse_line(line)
                url = url or record["url"]
                check_same_url(record["url"], url)
                check_new_id(record["custom_id"], seen, number)
                requests.append(request_row(record))
            except ValueError as err:
                problems.append(f"line {number}: {err}")
    if problems:
        more = f"\n... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise BatchFileError(f"{path} is not a batch file simsd can run:\n" + "\n".join(problems[:MAX_REPORTED]) + more)
    if not requests:
        raise BatchFileError(f"{path} holds no requests")
    return to_table(requests, ENDPOINTS[url])


def parse_line(line: str) -> dict:
    """One line's request object, its top-level keys checked."""
    try:
        record = json.loads(line)
    except ValueError as err:
        raise ValueError(f"not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise ValueError(f"a request must be a JSON object, got {type(record).__name__}")
    missing = [k for k in KEYS if k not in record]
    extra = sorted(k for k in record if k not in KEYS)
    if missing or extra:
        raise ValueError(f"a request has exactly the keys {', '.join(KEYS)}"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; unknown {', '.join(extra)}" if extra else ""))
    if not isinstance(record["custom_id"], str) or not record["custom_id"]:
        raise ValueError(f"custom_id must be a non-empty string, got {record['custom_id']!r}")
    if record["method"] != "POST":
        raise ValueError(f"method must be POST, got {record['method']!r}")
    if record["url"] not in ENDPOINTS:
        raise ValueError(f"url {record['url']!r} is not supported (supported: {', '.join(ENDPOINTS)})")
    if not isinstance(record["body"], dict):
        raise ValueError("body must be a JSON object")
    return record


def check_same_url(url: str, first: str) -> None:
    if url != first:
        raise ValueError(f"url {url!r} differs from the first request's {first!r}; one file, one endpoint")


def check_new_id(custom_id: str, seen: dict[str, int], number: int) -> None:
    if custom_id in seen:
        raise ValueError(f"custom_id {custom_id!r} repeats line {seen[custom_id]}'s; custom_ids must be unique")
    seen[custom_id] = number


def request_row(record: dict) -> dict:
    """``{id, messages | prompt, sampling_params, model}`` of one checked request."""
    body, text_field = record["body"], ENDPOINTS[record["url"]]
    allowed = {text_field, "model", *BODY_FIELDS, *NEUTRAL, *IGNORED}
    refused = sorted(k for k in body if k not in allowed)
    if refused:
        raise ValueError(f"body field(s) {', '.join(refused)} not supported for {record['url']} "
                         f"(supported: {', '.join(sorted(allowed))})")
    for name, neutral in NEUTRAL.items():
        if body.get(name) not in (None, neutral):
            raise ValueError(f"body.{name} = {body[name]!r} is not supported (only {json.dumps(neutral)})")
    if "model" in body and not isinstance(body["model"], (str, type(None))):
        raise ValueError(f"body.model must be a string, got {body['model']!r}")
    text = check_messages(body.get("messages")) if text_field == "messages" else check_prompt(body.get("prompt"))
    return {"id": record["custom_id"], text_field: text, "sampling_params": sampling_struct(body),
            "model": body.get("model")}


def check_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("body.messages must be a non-empty list of {role, content}")
    for i, m in enumerate(messages):
        where = f"body.messages[{i}]"
        if not isinstance(m, dict):
            raise ValueError(f"{where} must be an object with role and content")
        extra = sorted(k for k in m if k not in ("role", "content"))
        if extra:
            raise ValueError(f"{where} has field(s) {', '.join(extra)}, not supported (only role and content)")
        if m.get("role") not in ROLES:
            raise ValueError(f"{where}.role {m.get('role')!r} is not supported (supported: {', '.join(ROLES)})")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"{where}.content must be a string (content parts are not supported)")
    return messages


def check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("body.prompt must be a non-empty string (lists of prompts or token ids are not supported)")
    return prompt


def sampling_struct(body: dict) -> dict:
    """The body's sampling fields under their sampling_params names, values checked."""
    if None not in (body.get("max_tokens"), body.get("max_completion_tokens")) \
            and body["max_tokens"] != body["max_completion_tokens"]:
        raise ValueError("body.max_tokens and body.max_completion_tokens differ; give one")
    values = {BODY_FIELDS[k]: v for k, v in body.items() if k in BODY_FIELDS and v is not None}
    if isinstance(values.get("stop"), str):
        values["stop"] = [values["stop"]]
    checked = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    for name in ("temperature", "top_p", "repetition_penalty", "presence_penalty"):
        if type(checked.get(name)) is int:
            checked[name] = values[name] = float(checked[name])
    problem = SamplingParams(**checked).problem()
    if problem:
        raise ValueError(f"body: {problem}")
    return values


def to_table(requests: list[dict], text_field: str) -> pa.Table:
    """Columns id, the text column, sampling_params (the fields any request sets) and model (when
    any request names one)."""
    columns = {"id": pa.array([r["id"] for r in requests], pa.string())}
    text_type = MESSAGES_TYPE if text_field == "messages" else pa.string()
    columns[text_field] = pa.array([r[text_field] for r in requests], text_type)
    used = [name for name in STRUCT_TYPES if any(name in r["sampling_params"] for r in requests)]
    if used:
        struct = pa.struct([(name, STRUCT_TYPES[name]) for name in used])
        columns["sampling_params"] = pa.array([r["sampling_params"] for r in requests], struct)
    if any(r["model"] is not None for r in requests):
        columns["model"] = pa.array([r["model"] for r in requests], pa.string())
    return pa.table(columns)
