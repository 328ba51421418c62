"""SIGKILL the driver's whole process group mid-run, rerun the same command: every id once."""
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


def _command(tmp_path, tiny_models):
    return [sys.executable, "-m", "jobs.generate", "--input", str(tmp_path / "in"), "--output",
            str(tmp_path / "out"), "--target", str(tiny_models["target"]), "--max-new-tokens", "24",
            "--batch-size", "2", "--device", "cpu"]


def _staged_or_done(out: Path) -> bool:
    return any(out.glob("_staging/*/*.parquet")) or any(out.glob("data/*.parquet"))


def test_resume_after_sigkill(tmp_path, tiny_models):
    n = 48
    write_prompts(tmp_path / "in", n, shards=12)  # many small blocks: files land one by one
    env = {**os.environ, "RAY_ADDRESS": ""}  # a fresh local Ray owned by the subprocess
    env.pop("RAY_ADDRESS")
    log = open(tmp_path / "first-run.log", "wb")
    proc = subprocess.Popen(_command(tmp_path, tiny_models), cwd=ROOT, env=env, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not _staged_or_done(tmp_path / "out") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    killed = proc.poll() is None
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    except ProcessLookupError:  # the group already exited
        pass
    proc.wait()
    log.close()
    # The first run must have been killed mid-run (rows staged, not all committed), or the
    # test proves nothing; if it exited on its own, say why.
    assert killed, (tmp_path / "first-run.log").read_text(errors="replace")[-3000:]
    rerun = subprocess.run(_command(tmp_path, tiny_models), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    ids = read_output(tmp_path / "out").column("id").to_pylist()
    assert sorted(ids) == list(range(n))  # every id, none twice
    assert "rows_this_run" in rerun.stdout
