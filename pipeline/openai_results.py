"""A finished ``simsd generate`` output -> OpenAI batch result lines (``simsd export``).

One line per input row (its n samples are the choices), sorted by custom_id. Where each field
comes from:

- ``custom_id``: the row's ``id`` (as a string);
- ``id`` (``batch_req_<h>``), ``response.request_id`` (``req_<h>``) and ``response.body.id``
  (``chatcmpl-<h>`` / ``cmpl-<h>``): ``h`` is a hash of the job's fingerprint (``_job.json``) and
  the custom_id, so exporting again gives the same ids (simsd has no server request ids);
- ``response.body.object``: ``chat.completion`` when the job read ``--messages-column``, else
  ``text_completion``;
- ``created``: the latest ``finished_at`` of the row's samples, in whole seconds;
- ``model``: ``--model``, else the job's ``--target`` (from ``_job.json``);
- ``choices[i]``: sample ``sample_index`` = i, its ``generated_text`` as the assistant message
  (or ``text``), its ``finish_reason`` (``stop`` or ``length``); ``logprobs`` is null;
- ``usage``: ``prompt_tokens`` = ``num_input_tokens``, ``completion_tokens`` = the samples'
  ``num_generated_tokens`` summed, ``total_tokens`` their sum;
- a row with an ``error`` (any sample) becomes ``"response": null`` and
  ``"error": {"code": "generation_failed", "message": <the error column>}``.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict

import pyarrow.parquet as pq

from .resume import data_files, read_job_file
from .storage import retry

COLUMNS = ("id", "sample_index", "generated_text", "num_input_tokens", "num_generated_tokens",
           "finish_reason", "error", "finished_at")
ERROR_CODE = "generation_failed"


def read_rows(fs, out: str) -> list[dict]:
    """The output's rows, only the columns a result line needs (sample_index 0 where absent)."""
    rows = []
    for path in data_files(fs, out):
        rows.extend(retry(_read_rows, fs, path))
    return rows


def _read_rows(fs, path: str) -> list[dict]:
    with fs.open(path, "rb") as f:
        parquet = pq.ParquetFile(f)
        names = [c for c in COLUMNS if c in parquet.schema_arrow.names]
        rows = parquet.read(columns=names).to_pylist()
    for row in rows:
        row.setdefault("sample_index", 0)
    return rows


def job_record(fs, out: str) -> dict:
    """The job's ``_job.json``; ValueError when the directory is not a simsd generate output."""
    job = read_job_file(fs, out)
    if job is None or "identity" not in job:
        raise ValueError(f"{out} is not a simsd generate output (no _job.json)")
    return job


def result_lines(rows: list[dict], job: dict, model: str | None = None):
    """One result object per row id, its samples the choices; sorted by custom_id."""
    identity = job["identity"]
    chat = bool(identity.get("messages_column"))
    model = model or identity.get("target")
    samples = defaultdict(list)
    for row in rows:
        samples[str(row["id"])].append(row)
    for custom_id in sorted(samples):
        group = sorted(samples[custom_id], key=lambda r: r["sample_index"] or 0)
        yield result_line(custom_id, group, job.get("fingerprint", ""), chat, model)


def result_line(custom_id: str, samples: list[dict], fingerprint: str, chat: bool, model: str | None) -> dict:
    h = hashlib.sha256(f"{fingerprint}\x1f{custom_id}".encode()).hexdigest()[:32]
    line = {"id": f"batch_req_{h}", "custom_id": custom_id, "response": None, "error": None}
    failed = next((s for s in samples if s.get("error") is not None or s.get("finish_reason") == "error"), None)
    if failed is not None:
        line["error"] = {"code": ERROR_CODE, "message": failed.get("error") or "generation failed"}
        return line
    line["response"] = {"status_code": 200, "request_id": f"req_{h}",
                        "body": completion(h, samples, chat, model)}
    return line


def completion(h: str, samples: list[dict], chat: bool, model: str | None) -> dict:
    """The chat.completion (or text_completion) object of a row's samples."""
    choices = [choice(s, chat) for s in samples]
    prompt_tokens = samples[0].get("num_input_tokens") or 0
    completion_tokens = sum(s.get("num_generated_tokens") or 0 for s in samples)
    finished = [s["finished_at"] for s in samples if s.get("finished_at") is not None]
    return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{h}", "object": "chat.completion" if chat else "text_completion",
            "created": int(max(finished)) if finished else None, "model": model, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def choice(sample: dict, chat: bool) -> dict:
    text = sample.get("generated_text") or ""
    out = {"index": sample["sample_index"] or 0}
    if chat:
        out["message"] = {"role": "assistant", "content": text}
    else:
        out["text"] = text
    out.update(logprobs=None, finish_reason=sample.get("finish_reason"))
    return out


def to_jsonl(lines) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
