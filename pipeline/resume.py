"""Exactly-once output across reruns and kills.

Why not Ray Data's ``CheckpointConfig`` (ray.data.checkpoint, beta in the installed Ray): it
records finished ids in separate checkpoint files written *after* the data, so a kill between
the data write and the checkpoint write leaves rows that a rerun generates and writes again
(duplicates); it also needs a cluster-shared path for local outputs and reserves an extra
actor pool. Instead the output data is its own checkpoint:

- a run writes into ``<output>/_staging/<run_id>/``; Ray Data writes each Parquet file whole, and
  a file cut short by a kill has no footer, so it cannot be read;
- ``commit_staged`` moves every readable staged file into ``<output>/data/`` and deletes the
  unreadable ones; it runs when a run ends and when the next run starts (recovering a killed
  run), so ``data/`` only ever holds complete files;
- the done ids are the ``id`` column of ``data/``; the next run drops those input rows.

One run per output directory at a time.
"""
from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import is_transient, join, retry

JOB_FILE = "_job.json"
DATA_DIR = "data"
STAGING_DIR = "_staging"


def read_job_file(fs, out: str) -> dict | None:
    return retry(_read_job_file, fs, out)


def _read_job_file(fs, out: str) -> dict | None:
    path = join(out, JOB_FILE)
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as f:
        return json.load(f)


def write_job_file(fs, out: str, config) -> None:
    record = {"fingerprint": config.fingerprint(), "identity": config.identity(), "created": time.time()}
    retry(fs.makedirs, out, exist_ok=True)
    retry(_write_text, fs, join(out, JOB_FILE), json.dumps(record, indent=2))


def _write_text(fs, path: str, text: str) -> None:
    with fs.open(path, "w") as f:
        f.write(text)


def clear_output(fs, out: str) -> None:
    """--overwrite: remove what simsd wrote before (only its own names)."""
    for name in (DATA_DIR, STAGING_DIR, JOB_FILE, "summary.parquet"):
        path = join(out, name)
        if retry(fs.exists, path):
            retry(fs.rm, path, recursive=True)


def staging_path(out: str, run_id: str) -> str:
    return join(out, STAGING_DIR, run_id)


def commit_staged(fs, out: str) -> list[str]:
    """Move complete staged files into data/, drop partial ones. Returns the committed paths."""
    staging = join(out, STAGING_DIR)
    fs.invalidate_cache()  # object stores: the listing may predate the files Ray just wrote
    if not retry(fs.exists, staging):
        return []
    retry(fs.makedirs, join(out, DATA_DIR), exist_ok=True)
    committed = []
    for path in sorted(p for p in retry(fs.find, staging) if p.endswith(".parquet")):
        run_id = path[len(staging):].strip("/").split("/")[0]
        if retry(_is_complete, fs, path):
            dest = join(out, DATA_DIR, f"{run_id}-{path.rsplit('/', 1)[-1]}")
            retry(_move, fs, path, dest)
            committed.append(dest)
        else:
            retry(fs.rm, path)
    try:
        retry(fs.rm, staging, recursive=True)
    except FileNotFoundError:  # object stores: the prefix vanished with its last file
        pass
    return committed


def _move(fs, src: str, dest: str) -> None:
    # Idempotent under retry: a move that completed before its error was reported is done.
    if not fs.exists(src) and fs.exists(dest):
        return
    fs.mv(src, dest)


def _is_complete(fs, path: str) -> bool:
    """Whether a staged file has a Parquet footer. Storage errors propagate (``retry`` decides);
    only a file that was read and holds no valid footer counts as cut short by a kill."""
    with fs.open(path, "rb") as f:
        try:
            pq.read_metadata(f)
        except (pa.ArrowInvalid, pa.ArrowIOError) as err:  # truncated by a kill: no footer
            if isinstance(err, OSError) and is_transient(err):
                raise
            return False
    return True


def data_files(fs, out: str) -> list[str]:
    path = join(out, DATA_DIR)
    fs.invalidate_cache()
    if not retry(fs.exists, path):
        return []
    return sorted(p for p in retry(fs.find, path) if p.endswith(".parquet"))


def read_columns(fs, files: list[str], columns: list[str]) -> pa.Table | None:
    tables = []
    for path in files:
        tables.append(retry(_read_table, fs, path, columns))
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def _read_table(fs, path: str, columns: list[str]) -> pa.Table:
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def done_ids(fs, out: str) -> pa.Array | None:
    table = read_columns(fs, data_files(fs, out), ["id"])
    if table is None or table.num_rows == 0:
        return None
    return pa.compute.unique(table.column("id").combine_chunks())
