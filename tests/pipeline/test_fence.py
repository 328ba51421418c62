"""Fencing a driver that lost its lease (pipeline.fence): its late staged files never reach data/."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import resume
from pipeline.lease import Lease, LeaseLost
from tests.pipeline.moto_s3 import moto_bucket

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _stage(fs, out: str, lease: Lease, name: str, ids: list[int]) -> None:
    path = resume.staging_path(out, lease.record.run_id, lease.record.generation) + f"/{name}.parquet"
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        pq.write_table(pa.table({"id": pa.array(ids, pa.int64())}), f)


def _data_ids(fs, out: str) -> list[int]:
    table = resume.read_columns(fs, resume.data_files(fs, out), ["id"])
    return sorted(table.column("id").to_pylist()) if table is not None else []


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        yield fsspec.filesystem("file"), str(tmp_path / "out")
        return
    with moto_bucket(monkeypatch, "fence") as (fs, _, bucket):
        yield fs, f"{bucket}/out"


def test_late_files_of_a_paused_holder_are_never_committed(store):
    """A holder paused past the timeout is taken over; what its workers write afterwards is
    dropped by the new holder's commit and by every later recovery (112 rows for 64 ids before)."""
    fs, out = store
    old = Lease(fs, out, "run-a", timeout_s=0.3, heartbeat_s=3600).acquire()  # paused: never beats
    resume.commit_staged(fs, out, old.record.generation, recover=True)
    _stage(fs, out, old, "before", [0, 1])  # written while it held the lease
    time.sleep(0.5)
    new = Lease(fs, out, "run-b", timeout_s=0.3, heartbeat_s=3600).acquire()
    assert new.record.generation == old.record.generation + 1
    resume.commit_staged(fs, out, new.record.generation, recover=True)  # recovers the old run's files
    assert _data_ids(fs, out) == [0, 1]
    _stage(fs, out, old, "late", [2, 3])  # the paused holder's worker finishes after the takeover
    _stage(fs, out, new, "mine", [2, 3])  # the new holder generates the same rows
    resume.commit_staged(fs, out, new.record.generation)
    assert _data_ids(fs, out) == [0, 1, 2, 3]
    _stage(fs, out, old, "later", [2, 3])  # even later: after the new holder's final commit
    new.release()
    third = Lease(fs, out, "run-c", timeout_s=30, heartbeat_s=3600).acquire()
    assert third.record.generation > new.record.generation  # generations grow past a release
    resume.commit_staged(fs, out, third.record.generation, recover=True)
    assert _data_ids(fs, out) == [0, 1, 2, 3]
    third.release()


def test_a_killed_holders_files_are_still_recovered(tmp_path):
    fs, out = fsspec.filesystem("file"), str(tmp_path / "out")
    first = Lease(fs, out, "run-a", timeout_s=30, heartbeat_s=3600).acquire()
    resume.commit_staged(fs, out, first.record.generation, recover=True)
    _stage(fs, out, first, "f", [5])
    first.record.heartbeat = 0.0  # killed: its record goes stale
    first._stop.set()
    fs.pipe_file(f"{out}/_lease.{first.record.generation}.json", json.dumps(first.record.__dict__).encode())
    rerun = Lease(fs, out, "run-b", timeout_s=30, heartbeat_s=3600).acquire()
    resume.commit_staged(fs, out, rerun.record.generation, recover=True)
    assert _data_ids(fs, out) == [5]
    rerun.release()


def test_a_lost_lease_is_reported_to_its_holder_at_once(tmp_path):
    fs, out = fsspec.filesystem("file"), str(tmp_path / "out")
    lost = threading.Event()
    old = Lease(fs, out, "run-a", timeout_s=0.3, heartbeat_s=3600, on_lost=lambda err: lost.set()).acquire()
    time.sleep(0.5)
    new = Lease(fs, out, "run-b", timeout_s=0.3).acquire()
    old.heartbeat_s = 0.05
    old._stop.set()  # restart its heartbeat with a short period: the "SIGCONT"
    old._thread.join()
    old._stop.clear()
    old._start_heartbeat()
    assert lost.wait(5)
    with pytest.raises(LeaseLost):
        old.check()
    new.release()
    old.release()


def test_run_watched_stops_at_once_when_interrupted():
    from pipeline.watchdog import run_watched

    class Config:
        stall_timeout_s, storage_options = 3600, {}
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(LeaseLost, match="taken"):
        run_watched(lambda: release.wait(30), None, Config(), on_stall=lambda: None,
                    interrupt=lambda: LeaseLost("taken over") if time.monotonic() - started > 0.5 else None)
    release.set()
    assert time.monotonic() - started < 10


_HOLDER = """
import json, sys, threading, time
import fsspec, pyarrow as pa, pyarrow.parquet as pq
from pipeline import resume
from pipeline.lease import Lease
url, options = sys.argv[1], json.loads(sys.argv[2])
fs, out = fsspec.core.url_to_fs(url, **options)
lost = threading.Event()
lease = Lease(fs, out, "paused", timeout_s=1.0, on_lost=lambda err: lost.set()).acquire()
resume.commit_staged(fs, out, lease.record.generation, recover=True)
staging = resume.staging_path(out, "paused", lease.record.generation)
fs.makedirs(staging, exist_ok=True)
print("held", flush=True)
i = 0
while not lost.is_set():
    fs.makedirs(staging, exist_ok=True)  # as Ray Data's writer does
    with fs.open(f"{staging}/{i}.parquet", "wb") as f:
        pq.write_table(pa.table({"id": pa.array([1000 + i], pa.int64())}), f)
    i += 1
    time.sleep(0.05)
print("stopped", flush=True)
"""


@pytest.mark.slow
def test_sigstop_sigcont_takeover(store):
    """The issue's attack with a real process: paused past the timeout, taken over, continued:
    it stops writing within a second and none of its late files is committed."""
    fs, out = store
    options = dict(fs.storage_options)
    url = out if fs.protocol == "file" or "file" in fs.protocol else f"s3://{out}"
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, url, json.dumps(options)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(1.5)
        new = Lease(fs, out, "taker", timeout_s=1.0, heartbeat_s=3600).acquire()
        resume.commit_staged(fs, out, new.record.generation, recover=True)
        recovered = _data_ids(fs, out)
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.stdout.readline().strip() == "stopped"
        proc.wait(timeout=10)
        resume.commit_staged(fs, out, new.record.generation)
        assert _data_ids(fs, out) == recovered  # nothing written after the takeover
        new.release()
        rerun = Lease(fs, out, "rerun", timeout_s=30, heartbeat_s=3600).acquire()
        resume.commit_staged(fs, out, rerun.record.generation, recover=True)
        assert _data_ids(fs, out) == recovered
        rerun.release()
    finally:
        proc.kill()
        proc.wait()
