"""One writer per output: the lease on local paths and on S3 (moto on 127.0.0.1)."""
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import fsspec
import pytest

from pipeline.lease import Lease, LeaseHeld, LeaseLost, create_exclusive
from tests.pipeline.moto_s3 import moto_bucket


def _local(tmp_path):
    return fsspec.filesystem("file"), str(tmp_path / "out")


def test_second_driver_is_refused_and_named(tmp_path):
    fs, out = _local(tmp_path)
    first = Lease(fs, out, "run-a", timeout_s=30).acquire()
    with pytest.raises(LeaseHeld) as err:
        Lease(fs, out, "run-b", timeout_s=30).acquire()
    text = str(err.value)
    assert f"pid {os.getpid()}" in text and socket.gethostname() in text and "since" in text and "run-a" in text
    first.release()
    Lease(fs, out, "run-c", timeout_s=30).acquire().release()  # free again once released
    assert not [p for p in os.listdir(out) if p.startswith("_lease")]


def test_racing_drivers_exactly_one_wins(tmp_path):
    fs, out = _local(tmp_path)
    wins, refused = [], []
    barrier = threading.Barrier(8)

    def contend(i):
        barrier.wait()
        try:
            wins.append(Lease(fs, out, f"run-{i}", timeout_s=30).acquire())
        except LeaseHeld:
            refused.append(i)
    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(refused) == 7
    wins[0].release()


def test_stale_heartbeat_is_taken_over_and_logged(tmp_path, caplog):
    fs, out = _local(tmp_path)
    old = Lease(fs, out, "run-old", timeout_s=0.5, heartbeat_s=3600).acquire()  # heartbeat never beats
    time.sleep(0.7)
    with caplog.at_level(logging.WARNING, logger="pipeline.lease"):
        new = Lease(fs, out, "run-new", timeout_s=0.5, heartbeat_s=0.1).acquire()
    assert "taking over the lease" in caplog.text and "run-old" in caplog.text and "heartbeat" in caplog.text
    with pytest.raises(LeaseLost, match="taken over"):
        old.check()  # the paused holder must not commit
    time.sleep(0.8)  # the new holder's heartbeat keeps its lease alive past the timeout
    with pytest.raises(LeaseHeld, match="run-new"):
        Lease(fs, out, "run-third", timeout_s=0.5).acquire()
    new.check()
    new.release()
    old.release()  # a lost lease's release deletes nothing


def test_lease_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    fs, out = _local(tmp_path)
    os.makedirs(out)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"host": socket.gethostname(), "pid": int(dead.stdout), "run_id": "killed", "started": time.time(),
              "heartbeat": time.time(), "generation": 4}
    with open(os.path.join(out, "_lease.4.json"), "w") as f:
        json.dump(record, f)
    lease = Lease(fs, out, "rerun", timeout_s=3600).acquire()
    assert lease.record.generation == 5 and not os.path.exists(os.path.join(out, "_lease.4.json"))
    lease.release()


def test_lease_held_by_another_process(tmp_path):
    """A live driver in another process holds the lease; this one is refused with its pid."""
    code = ("import fsspec, sys, time; from pipeline.lease import Lease;"
            f"l = Lease(fsspec.filesystem('file'), {str(tmp_path / 'out')!r}, 'other', timeout_s=30).acquire();"
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld, match=f"pid {proc.pid}"):
            Lease(*_local(tmp_path), "mine", timeout_s=30).acquire()
    finally:
        proc.kill()
        proc.wait()
    # Killed without releasing: same host, process gone -> taken over at once.
    Lease(*_local(tmp_path), "mine", timeout_s=3600).acquire().release()


@pytest.fixture
def s3(monkeypatch):
    with moto_bucket(monkeypatch, "lease") as (fs, _, bucket):
        yield fs, bucket


def test_s3_conditional_put_and_second_driver(s3):
    fs, bucket = s3
    assert create_exclusive(fs, f"{bucket}/x/_lease.1.json", b"first")
    assert not create_exclusive(fs, f"{bucket}/x/_lease.1.json", b"second")
    assert fs.cat_file(f"{bucket}/x/_lease.1.json") == b"first"
    first = Lease(fs, f"{bucket}/out", "run-a", timeout_s=30).acquire()
    with pytest.raises(LeaseHeld, match=f"pid {os.getpid()}.*run-a"):
        Lease(fs, f"{bucket}/out", "run-b", timeout_s=30).acquire()
    first.release()
    Lease(fs, f"{bucket}/out", "run-c", timeout_s=30).acquire().release()


def test_s3_stale_lease_is_taken_over(s3):
    fs, bucket = s3
    old = Lease(fs, f"{bucket}/out", "run-old", timeout_s=0.5, heartbeat_s=3600).acquire()
    old.record.host = "another-host"  # not this host: only the heartbeat age can free it
    old.heartbeat()
    time.sleep(0.8)
    new = Lease(fs, f"{bucket}/out", "run-new", timeout_s=0.5).acquire()
    with pytest.raises(LeaseLost):
        old.check()
    new.release()
