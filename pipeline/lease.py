"""One writer per output: a lease held by the running driver.

The lease is a small JSON record (host, pid, run id, start time, heartbeat) in the output
directory, named ``_lease.<generation>.json``. The holder of the highest generation owns the
output. A record is created only if its name does not exist yet:

- local paths: ``os.open(O_CREAT | O_EXCL)``, atomic on every local filesystem;
- S3 (s3fs): a conditional put (``If-None-Match: *``), which S3 and S3-compatible stores that
  support conditional writes honour;
- any other fsspec store: "check, then write, then read back". Two drivers starting within the
  same instant can then both believe they won. This is the documented caveat for stores
  without conditional writes.

The holder rewrites its record every ``timeout / 4`` seconds (the heartbeat). A new driver that
finds a live lease stops with :class:`LeaseHeld` (a ConfigError: exit 2) naming the holder. A
lease whose heartbeat is older than the timeout, or whose holder process is gone (same host), is
taken over by creating the next generation; only one contender can create it. The previous
holder, if it was only paused, sees the higher generation at its next heartbeat or before it
commits, and stops without committing (:class:`LeaseLost`; ``on_lost`` lets the driver stop its
execution at once). Its workers' late staged files are fenced by generation (pipeline.fence).
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from .errors import ConfigError
from .fence import read_fence
from .storage import is_local, join, retry, write_atomic

log = logging.getLogger(__name__)
_NAME = re.compile(r"_lease\.(\d+)\.json$")
_ATTEMPTS = 5


class LeaseHeld(ConfigError):
    """Another live driver writes this output."""


class LeaseLost(RuntimeError):
    """This driver's lease was taken over (its heartbeat stalled longer than the timeout)."""


@dataclass
class LeaseRecord:
    host: str
    pid: int
    run_id: str
    started: float
    heartbeat: float
    generation: int = 0

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.started))
        return f"host {self.host}, pid {self.pid}, since {since} (run {self.run_id})"


class Lease:
    """The writer lease on output ``out`` of filesystem ``fs``. Use as a context manager or call
    :meth:`acquire` / :meth:`release`; :meth:`check` before committing."""

    def __init__(self, fs, out: str, run_id: str, timeout_s: float = 120.0, heartbeat_s: float | None = None,
                 on_lost=None):
        self.fs, self.out, self.timeout_s = fs, out, timeout_s
        self.on_lost = on_lost  # called once, from the heartbeat thread, when the lease is found lost
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else max(timeout_s / 4, 0.05)
        now = time.time()
        self.record = LeaseRecord(socket.gethostname(), os.getpid(), run_id, now, now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    # -- acquire / release -------------------------------------------------------------------
    def acquire(self) -> "Lease":
        retry(self.fs.makedirs, self.out, exist_ok=True)
        for _ in range(_ATTEMPTS):
            generations = self._generations()
            top = max(generations, default=0)
            # Generations only grow, also after a release deleted the record: the fence holds the
            # last generation that touched the staging area (pipeline.fence).
            floor = read_fence(self.fs, self.out)
            if top:
                holder = self._read(top)
                if self._why_stale(holder) is None:
                    raise LeaseHeld(f"--output {self._url()} is being written by another run: "
                                    f"{holder.describe()}; wait for it to finish (or stop it), then rerun")
                log.warning("taking over the lease on %s from %s: %s", self.out, holder.describe(),
                            self._why_stale(holder))
            self.record.generation = max(top, floor) + 1
            self.record.heartbeat = time.time()
            if create_exclusive(self.fs, self._path(self.record.generation), self._payload()):
                self._drop_older(generations)
                self._start_heartbeat()
                return self
            # Another driver created that generation first: look again.
        raise LeaseHeld(f"--output {self._url()}: another run keeps taking the lease; rerun later")

    def release(self) -> None:
        """Stop the heartbeat and delete the record, if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.record.generation and self.lost is None and max(self._generations(), default=0) == self.record.generation:
            try:
                retry(self.fs.rm, self._path(self.record.generation))
            except FileNotFoundError:
                pass

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -- holding -----------------------------------------------------------------------------
    def check(self) -> None:
        """Raise LeaseLost unless this driver still holds the lease (call before committing)."""
        if self.lost is None:
            top = max(self._generations(), default=0)
            if top != self.record.generation:
                self.lost = f"generation {top} now exists ({self._read(top).describe()})"
        if self.lost is not None:
            raise LeaseLost(f"the lease on {self.out} was taken over: {self.lost}; this run stops without "
                            "committing (its complete files are committed by the next run)")

    def heartbeat(self) -> None:
        self.check()
        self.record.heartbeat = time.time()
        write_record(self.fs, self._path(self.record.generation), self._payload())

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="simsd-lease-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.heartbeat()
            except LeaseLost as err:
                log.error("%s", err)
                if self.on_lost is not None:
                    self.on_lost(err)  # stop this holder's execution at once (pipeline.driver)
                return
            except Exception as err:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("lease heartbeat on %s failed: %s", self.out, err)

    # -- records -----------------------------------------------------------------------------
    def _why_stale(self, holder: LeaseRecord) -> str | None:
        age = time.time() - holder.heartbeat
        if age > self.timeout_s:
            return f"its heartbeat is {age:.0f} s old (timeout {self.timeout_s:g} s)"
        if holder.host == socket.gethostname() and holder.pid > 0 and not _alive(holder.pid):
            return f"process {holder.pid} on this host has exited"
        return None

    def _generations(self) -> list[int]:
        self.fs.invalidate_cache()
        try:
            names = retry(self.fs.ls, self.out, detail=False)
        except FileNotFoundError:
            return []
        return [int(m.group(1)) for m in (_NAME.search(n.rsplit("/", 1)[-1]) for n in names) if m]

    def _read(self, generation: int) -> LeaseRecord:
        path = self._path(generation)
        try:
            data = json.loads(retry(self.fs.cat_file, path))
            return LeaseRecord(**{k: data[k] for k in LeaseRecord.__dataclass_fields__})
        except FileNotFoundError:
            # Released between listing and reading: a record with no holder, stale at once.
            return LeaseRecord("?", -1, "?", 0.0, 0.0, generation)
        except (ValueError, KeyError, TypeError):
            # Created but not written yet (or torn): its age is the file's.
            when = _mtime(self.fs, path)
            return LeaseRecord("?", -1, "?", when, when, generation)

    def _drop_older(self, generations: list[int]) -> None:
        for gen in generations:
            if gen < self.record.generation:
                try:
                    retry(self.fs.rm, self._path(gen))
                except FileNotFoundError:
                    pass

    def _path(self, generation: int) -> str:
        return join(self.out, f"_lease.{generation}.json")

    def _payload(self) -> bytes:
        return json.dumps(asdict(self.record)).encode()

    def _url(self) -> str:
        return self.out


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def create_exclusive(fs, path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if it does not exist. True if this call created it."""
    if is_local(fs):
        return _create_local(path, data)
    if _supports_conditional_put(fs):
        try:
            retry(fs.pipe_file, path, data, mode="create")
            return True
        except (FileExistsError, OSError) as err:
            if isinstance(err, FileExistsError) or "PreconditionFailed" in str(err) or "412" in str(err):
                return False
            raise
    # No conditional write: check, write, read back (see the module docstring's caveat).
    if retry(fs.exists, path):
        return False
    retry(fs.pipe_file, path, data)
    return retry(fs.cat_file, path) == data


def write_record(fs, path: str, data: bytes) -> None:
    """Overwrite ``path`` whole: atomic rename locally, one PUT on object stores."""
    write_atomic(fs, path, data)


def _create_local(path: str, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _supports_conditional_put(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return any(p in ("s3", "s3a") for p in protocols)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mtime(fs, path: str) -> float:
    try:
        modified = fs.modified(path)
        return modified.timestamp()
    except Exception:  # noqa: BLE001 - unknown age: treat as old
        return 0.0
