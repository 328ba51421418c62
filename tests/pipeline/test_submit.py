"""The README's cluster steps, as written: a local head (`ray start --head` on 127.0.0.1, token
auth on), `ray job submit` of `python -m jobs.generate`, the output checked; and a plain
`simsd generate` beside that running cluster starts its own private Ray instead of joining it.

Needs the cluster extra (`pip install -e '.[cluster]'`: the dashboard and job server); CI
installs it. Slow: a Ray head, a submitted job and a second driver (about a minute or two).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.needs import import_or_skip
from tests.pipeline.helpers import read_output

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> list[str]:
    script = Path(sys.executable).parent / "ray"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


@pytest.fixture
def head(tmp_path):
    """A Ray head with the job server on 127.0.0.1, private to this test (own temp dir, so no
    other process on the machine discovers it), stopped by killing its process group."""
    import_or_skip("aiohttp_cors", "the cluster extra: pip install -e '.[cluster]'")
    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths have a length limit
    token = tmp_path / "auth_token"
    token.write_text(uuid.uuid4().hex)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_TMPDIR=temp,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    dashboard = _free_port()
    ports = {"--port": _free_port(), "--dashboard-port": dashboard, "--ray-client-server-port": _free_port(),
             "--dashboard-agent-listen-port": _free_port(), "--dashboard-agent-grpc-port": _free_port(),
             "--metrics-export-port": _free_port(), "--runtime-env-agent-port": _free_port()}
    args = [*_ray_cli(), "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
            "--num-cpus=2", "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items())]
    proc = subprocess.Popen(args, env=env, cwd=ROOT, start_new_session=True,
                            stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_job_server(address, env, proc, tmp_path / "head.log")
        yield address, env
    finally:
        _stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_job_server(address, env, proc, log, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"ray start --head exited:\n{log.read_text()[-3000:]}"
        ok = subprocess.run([*_ray_cli(), "job", "list", "--address", address], env=env,
                            capture_output=True, text=True, timeout=60)
        if ok.returncode == 0:
            return
        time.sleep(2)
    raise AssertionError(f"the job server at {address} did not answer in {timeout_s}s:\n{log.read_text()[-3000:]}")


def _stop(proc) -> None:
    """The head and everything it started share its process group (start_new_session). The
    head is private to the test, so a few seconds' grace is enough (`ray start --block` often
    takes longer than 20 s to exit on SIGTERM) before the whole group is killed."""
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            time.sleep(1)  # children of the group exit after their parent
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _inputs(tmp_path, tiny_models):
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "prompt": ["a b", "hello", "the sea"], "qid": ["x", "y", "z"]}),
                   tmp_path / "in" / "p.parquet")
    return ["--input", str(tmp_path / "in"), "--target", str(tiny_models["target"]), "--device", "cpu",
            "--max-new-tokens", "4", "--batch-size", "4"]


def test_ray_job_submit_to_a_local_head(head, tmp_path, tiny_models):
    address, env = head
    common = _inputs(tmp_path, tiny_models)
    submit = subprocess.run([*_ray_cli(), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
                             "python", "-m", "jobs.generate", *common, "--output", str(tmp_path / "submitted")],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=480)
    logs = submit.stdout + submit.stderr
    assert submit.returncode == 0, logs[-5000:]
    assert "simsd: joined the Ray cluster at" in logs and "from RAY_ADDRESS" in logs, logs[-3000:]
    table = read_output(tmp_path / "submitted")
    assert sorted(zip(table.column("id").to_pylist(), table.column("qid").to_pylist())) == [(1, "x"), (2, "y"), (3, "z")]

    # A plain run on the same machine, with that cluster discoverable (same RAY_TMPDIR): its own Ray.
    plain = subprocess.run([sys.executable, "-m", "jobs.generate", *common, "--output", str(tmp_path / "plain")],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=480)
    assert plain.returncode == 0, (plain.stdout + plain.stderr)[-5000:]
    assert "simsd: started a private local Ray" in plain.stdout, plain.stdout
    assert read_output(tmp_path / "plain").num_rows == 3
