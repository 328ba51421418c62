"""Whole jobs (the CLI, each with a private local Ray) at temperature > 0 with n samples, killed
and resumed: per-row reproducibility and exactly-once output.

Three runs, shared by every test here (a job spends about 30 s starting up on a 2-core CPU, Ray,
actor, imports and model load, against seconds of decoding):

- the reference: 1 worker, batch 4;
- a run with 2 workers at batch 3, its whole process group SIGKILLed once its first file is staged;
- that output resumed by 1 worker at a third batch size, 2.

The reference runs beside the other two (its own Ray, its own output): a job's start-up mostly
waits, so two at once on 2 cores took 44 s where one takes 37 s.

Every (id, sample_index) must come out exactly once after the kill and resume, with the
reference's text. The same-command kill/resume at n = 1 runs with simulated actors in
test_driver_scale; this module is its real-engine counterpart (it replaced test_resume_kill.py,
which paid two more job start-ups for a subset of these checks)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline.helpers import read_output, write_prompts

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
N_PROMPTS = 16
EVERY_KEY = {(i, k) for i in range(N_PROMPTS) for k in (0, 1)}


def _command(inputs: Path, target, out: Path, workers: int, batch: int) -> list[str]:
    return [sys.executable, "-m", "jobs.generate", "--input", str(inputs), "--output", str(out),
            "--target", str(target), "--max-new-tokens", "12", "--temperature", "0.9",
            "--top-p", "0.95", "--n", "2", "--seed", "7", "--workers", str(workers), "--batch-size", str(batch),
            "--device", "cpu"]


def _env():
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # a fresh local Ray owned by each run
    return env


def _keys(out: Path) -> list:
    """Every written row's (id, sample_index), duplicates kept."""
    return [(r["id"], r["sample_index"]) for r in read_output(out).select(["id", "sample_index"]).to_pylist()]


def _texts(out: Path) -> dict:
    rows = read_output(out).select(["id", "sample_index", "generated_text"]).to_pylist()
    return {(r["id"], r["sample_index"]): r["generated_text"] for r in rows}


def _run(cmd) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _start(cmd, log_path: Path) -> subprocess.Popen:
    """``cmd`` running beside the caller in a process group of its own (its Ray's processes
    included), its output (both streams) in ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=_env(), start_new_session=True, stdout=log,
                                stderr=subprocess.STDOUT)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group already exited
        pass
    proc.wait()


def _finish(proc: subprocess.Popen, log_path: Path) -> None:
    assert proc.wait(timeout=400) == 0, log_path.read_text(errors="replace")[-3000:]


def _run_killed_after_first_file(cmd, out: Path, log_path: Path) -> bool:
    """Start ``cmd``, SIGKILL its whole process group (the driver and the Ray processes it
    started) once a file is staged; True when it was still running then (killed mid-run)."""
    proc = _start(cmd, log_path)
    deadline = time.time() + 240
    while not any(out.glob("_staging/*/*.parquet")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    killed = proc.poll() is None  # else the run ended on its own and the resume proves nothing
    _kill_group(proc)
    return killed


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_models):
    """The reference output, whether the second run was killed mid-run (and its log), and the
    resumed output with the resuming run's stdout."""
    tmp = tmp_path_factory.mktemp("reproducible")
    inputs = write_prompts(tmp / "in", N_PROMPTS, shards=8)
    target = tiny_models["target"]
    reference = _start(_command(inputs, target, tmp / "one", workers=1, batch=4), tmp / "one.log")
    try:
        resumed = tmp / "killed"
        killed = _run_killed_after_first_file(_command(inputs, target, resumed, workers=2, batch=3), resumed,
                                              tmp / "killed.log")
        rerun = _run(_command(inputs, target, resumed, workers=1, batch=2)) if killed else None
        _finish(reference, tmp / "one.log")
    finally:
        if reference.poll() is None:  # a failure above: never leave the job behind
            _kill_group(reference)
    return {"reference": tmp / "one", "killed": killed, "killed_log": tmp / "killed.log",
            "resumed": resumed, "rerun": rerun}


def test_reference_has_every_sample_and_samples_differ(runs):
    """n = 2 at temperature 0.9: both samples of every prompt, and they are not copies."""
    keys = _keys(runs["reference"])
    assert len(keys) == len(set(keys)) and set(keys) == EVERY_KEY
    texts = _texts(runs["reference"])
    assert sum(texts[(i, 0)] != texts[(i, 1)] for i in range(N_PROMPTS)) > N_PROMPTS // 2


def test_sigkilled_run_resumes_every_sample_exactly_once(runs):
    """The second run was killed mid-run (not after it ended on its own: else the resume proves
    nothing); rerunning into its output finishes it with each (id, sample_index) once."""
    assert runs["killed"], runs["killed_log"].read_text(errors="replace")[-3000:]
    keys = _keys(runs["resumed"])
    assert len(keys) == len(set(keys)) and set(keys) == EVERY_KEY
    assert "rows_this_run" in runs["rerun"].stdout


def test_resumed_text_equals_one_worker_text(runs):
    """Two workers at batch 3, killed, then one worker at batch 2: every row's text is still the
    text of the reference run (1 worker, batch 4)."""
    assert runs["killed"], runs["killed_log"].read_text(errors="replace")[-3000:]
    assert _texts(runs["resumed"]) == _texts(runs["reference"])
