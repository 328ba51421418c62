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
- the done keys are the (``id``, ``sample_index``) pairs of ``data/``; the next run drops those
  samples.

One run per output directory at a time.
"""
from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.compute as pc
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


def staging_path(out: str, run_id: str, generation: int | None = None) -> str:
    """Where a run stages its files; with its lease generation in the name (pipeline.fence)."""
    from .fence import staged_dir_name

    return join(out, STAGING_DIR, run_id if generation is None else staged_dir_name(generation, run_id))


def commit_staged(fs, out: str, generation: int | None = None, recover: bool = False) -> list[str]:
    """Move complete staged files into data/, drop partial ones. Returns the committed paths.

    ``generation``: the lease generation of the caller (pipeline.fence). Without ``recover`` (the
    end of a run) only the caller's own generation's files are committed; with ``recover`` (the
    start of a run) the previous holder's are, after fencing every older generation. Staged files
    of any other generation are late writes of a holder that lost its lease: deleted. ``None``
    commits every complete file (no lease: tools and tests)."""
    from . import fence

    staging = join(out, STAGING_DIR)
    fs.invalidate_cache()  # object stores: the listing may predate the files Ray just wrote
    keep = generation
    if generation is not None and recover:
        keep = fence.take_over(fs, out, generation)  # before listing: later late files stay fenced
        fs.invalidate_cache()
    if not retry(fs.exists, staging):
        return []
    retry(fs.makedirs, join(out, DATA_DIR), exist_ok=True)
    committed = []
    for path in sorted(p for p in retry(fs.find, staging) if p.endswith(".parquet")):
        run_id = path[len(staging):].strip("/").split("/")[0]
        fenced = keep is not None and fence.dir_generation(run_id) != keep
        if not fenced and retry(_is_complete, fs, path):
            dest = join(out, DATA_DIR, f"{run_id}-{path.rsplit('/', 1)[-1]}")
            retry(_move, fs, path, dest)
            committed.append(dest)
        else:
            _remove(fs, path)
    try:
        retry(fs.rm, staging, recursive=True)
    except FileNotFoundError:  # object stores: the prefix vanished with its last file
        pass
    return committed


def _remove(fs, path: str) -> None:
    try:
        retry(fs.rm, path)
    except FileNotFoundError:
        pass


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


def done_keys(fs, out: str) -> pa.Array | None:
    """The (id, sample_index) keys already written, as ``sampling_params.sample_keys`` spells them
    (outputs written before n samples existed have no sample_index: 0)."""
    from .sampling_params import SAMPLE_INDEX, sample_keys

    files = data_files(fs, out)
    tables = [read_columns(fs, [f], ["id", SAMPLE_INDEX] if _has_column(fs, f, SAMPLE_INDEX) else ["id"])
              for f in files]
    keys = [sample_keys(t.column("id").combine_chunks(),
                        t.column(SAMPLE_INDEX).combine_chunks() if SAMPLE_INDEX in t.column_names else None)
            for t in tables if t is not None and t.num_rows]
    if not keys:
        return None
    return pa.compute.unique(pa.concat_arrays(keys))


def _has_column(fs, path: str, name: str) -> bool:
    with fs.open(path, "rb") as f:
        return name in pq.read_schema(f).names


# Settings that cannot change what a row's generation is, only where things are read from or which
# input columns ride along: a changed value may be resumed with --resume-anyway (moved data/models).
RESUMABLE_ANYWAY = ("input", "target", "draft", "keep_columns", "keep_prompt")
_LOCATIONS = {"input": False, "target": True, "draft": True}  # name -> hub ids possible


def changed_settings(old: dict, new: dict) -> dict[str, tuple]:
    """{setting: (old value, new value)} for every identity setting that differs. Settings the
    earlier run did not record (written by an older version) are not compared; locations are
    compared after normalisation, so `prompts/` and `/abs/prompts` are the same input."""
    old = {k: _normal(k, v) for k, v in old.items()}
    return {k: (old[k], new.get(k)) for k in sorted(old) if k in new and old[k] != new[k]}


def _normal(key: str, value):
    from .locations import normalize

    if key in _LOCATIONS and isinstance(value, str):
        return normalize(value, local_only_if_exists=_LOCATIONS[key])
    return value


def check_resumable(config, job: dict, fs=None, out: str | None = None) -> None:
    """Raise ConfigError unless ``config`` may resume the output described by ``job`` (_job.json).
    The message lists each changed setting with its old and new value and the flag that keeps the
    rows already written (--resume-anyway) or discards them (--overwrite)."""
    from .config import ConfigError

    changes = changed_settings(job.get("identity", {}), config.identity())
    if not changes:
        return
    hard = [k for k in changes if k not in RESUMABLE_ANYWAY]
    if not hard and config.resume_anyway:
        return
    listed = "; ".join(f"{_flag(k)}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
    rows = _rows_note(fs, out)
    if hard:
        remedy = (f"{', '.join(map(_flag, hard))} change{'s' if len(hard) == 1 else ''} the generated text, so "
                  f"these results cannot be continued: rerun with the earlier values to resume, pass --overwrite "
                  f"to delete {rows} and start over, or choose another --output")
    else:
        remedy = (f"if the data or models only moved, pass --resume-anyway to keep {rows} and continue; "
                  f"--overwrite deletes them and starts over")
    raise ConfigError(f"--output {config.output} holds results of a different config ({listed}); {remedy}")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _rows_note(fs, out: str | None) -> str:
    if fs is None or out is None:
        return "the rows already written"
    try:
        rows = written_rows(fs, out)
    except Exception:  # noqa: BLE001 - only for the message
        return "the rows already written"
    return f"the {rows} rows already written"


def written_rows(fs, out: str) -> int:
    """Rows in ``data/`` (every sample of every id), from the Parquet footers only."""
    def count(path):
        with fs.open(path, "rb") as f:
            return pq.read_metadata(f).num_rows
    return sum(retry(count, path) for path in data_files(fs, out))


def all_done(config) -> tuple[int, int] | None:
    """(input rows, samples) when every sample the input asks for - each (id, sample_index), n
    per row from --n or the row's own ``sampling_params.n`` - is already in ``config.output`` (a
    finished job rerun): the caller then exits at once, without Ray or models. None when there
    is work left, or when that cannot be told cheaply (no earlier run, a killed run's staged files
    to recover, an unreadable input: the normal path handles and reports those). Raises
    ConfigError when the output holds another config's results (see ``check_resumable``)."""
    from .storage import open_fs

    if config.overwrite or config.input is None or config.output is None:
        return None
    out_fs, out = open_fs(config.output, config.storage_options)
    job = read_job_file(out_fs, out)
    if job is None or retry(out_fs.exists, join(out, STAGING_DIR)):
        return None
    check_resumable(config, job, out_fs, out)
    done = done_keys(out_fs, out)
    if done is None:
        return None
    try:
        rows, wanted = wanted_keys(config)
    except Exception:  # noqa: BLE001 - validation reports input problems with a proper message
        return None
    if len(wanted) == 0 or not pc.all(pc.is_in(wanted, value_set=done)).as_py():
        return None
    return rows, len(wanted)


def wanted_keys(config) -> tuple[int, pa.Array]:
    """(input rows, the (id, sample_index) keys the input asks for), reading only the id column and
    the per-row ``sampling_params`` column when there is one."""
    from .sampling_params import COLUMN, SAMPLE_INDEX, expand, sample_keys
    from .storage import list_parquet, open_fs

    in_fs, path = open_fs(config.input, config.storage_options)
    files = list_parquet(in_fs, path)
    wanted = [config.id_column] + ([COLUMN] if any(_has_column(in_fs, f, COLUMN) for f in files) else [])
    table = read_columns(in_fs, files, wanted)
    samples = expand(table, config.sampling)
    return table.num_rows, sample_keys(samples.column(config.id_column), samples.column(SAMPLE_INDEX))
