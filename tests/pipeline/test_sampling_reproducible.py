"""Per-row reproducibility of a whole job at temperature > 0 with n samples: 1 worker vs 2
workers with another batch size, and a run killed mid-way then resumed, give every
(id, sample_index) the same text. Slow (three to four CLI runs, about a minute each on CPU)."""
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


def _command(tmp_path, tiny_models, out, workers, batch):
    return [sys.executable, "-m", "jobs.generate", "--input", str(tmp_path / "in"), "--output", str(out),
            "--target", str(tiny_models["target"]), "--max-new-tokens", "12", "--temperature", "0.9",
            "--top-p", "0.95", "--n", "2", "--seed", "7", "--workers", str(workers), "--batch-size", str(batch),
            "--device", "cpu"]


def _env():
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # a fresh local Ray owned by each run
    return env


def _texts(out: Path) -> dict:
    table = read_output(out)
    rows = table.select(["id", "sample_index", "generated_text", "finish_reason"]).to_pylist()
    keys = [(r["id"], r["sample_index"]) for r in rows]
    assert len(keys) == len(set(keys))  # (id, sample_index) unique
    return {(r["id"], r["sample_index"]): r["generated_text"] for r in rows}


def _run(cmd):
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]


def test_same_text_across_workers_batches_and_resume(tmp_path, tiny_models):
    write_prompts(tmp_path / "in", N_PROMPTS, shards=8)
    _run(_command(tmp_path, tiny_models, tmp_path / "one", workers=1, batch=4))
    want = _texts(tmp_path / "one")
    assert set(want) == {(i, k) for i in range(N_PROMPTS) for k in (0, 1)}
    assert sum(want[(i, 0)] != want[(i, 1)] for i in range(N_PROMPTS)) > N_PROMPTS // 2  # samples differ
    # Two workers at another batch size, killed after its first file, then resumed by one worker
    # at a third batch size: every row's text is still the one-worker text.
    out = tmp_path / "killed"
    log = open(tmp_path / "killed.log", "wb")
    proc = subprocess.Popen(_command(tmp_path, tiny_models, out, workers=2, batch=3), cwd=ROOT, env=_env(),
                            start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not any(out.glob("_staging/*/*.parquet")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    killed = proc.poll() is None  # else the run ended on its own and the resume proves nothing
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    log.close()
    assert killed, (tmp_path / "killed.log").read_text(errors="replace")[-3000:]
    _run(_command(tmp_path, tiny_models, out, workers=1, batch=2))
    assert _texts(out) == want
