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
    """Until `ray job list` answers. Each try of it is a Ray CLI start-up (seconds of CPU that the
    starting head competes for on a 2-core machine), so it is tried only once the dashboard's
    HTTP port answers at all, which a cheap request in this process sees."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"ray start --head exited:\n{log.read_text()[-3000:]}"
        if _http_answers(address):
            ok = subprocess.run([*_ray_cli(), "job", "list", "--address", address], env=env,
                                capture_output=True, text=True, timeout=60)
            if ok.returncode == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"the job server at {address} did not answer in {timeout_s}s:\n{log.read_text()[-3000:]}")


def _http_answers(address: str) -> bool:
    """Whether an HTTP server answers at ``address`` (any status: with token auth on, an
    unauthenticated request may be refused, and that is an answer too)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{address}/api/version", timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:  # refused, reset, timed out: not listening yet
        return False
    return True


def _stop(proc) -> None:
    """Kill ``proc``'s process group (start_new_session: everything it started) at once. The
    head is private to the test (its own temp dir, removed after): `ray start --block` often
    takes longer than 20 s to exit on SIGTERM, and a grace period only cost each run seconds of
    waiting."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.wait(timeout=30)


def _inputs(tmp_path, tiny_models):
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "prompt": ["a b", "hello", "the sea"], "qid": ["x", "y", "z"]}),
                   tmp_path / "in" / "p.parquet")
    return ["--input", str(tmp_path / "in"), "--target", str(tiny_models["target"]), "--device", "cpu",
            "--max-new-tokens", "4", "--batch-size", "4"]


def test_ray_job_submit_to_a_local_head(head, tmp_path, tiny_models):
    """The submitted job joins the head; a plain run beside it, with that cluster discoverable
    (same RAY_TMPDIR), starts its own Ray. The two run at once: a job's start-up mostly waits, so
    on 2 cores the pair takes little longer than one of them."""
    address, env = head
    common = _inputs(tmp_path, tiny_models)
    plain = _start_plain_run(common, tmp_path, env)
    try:
        job = ["python", "-m", "jobs.generate", *common, "--output", str(tmp_path / "submitted")]
        submit = subprocess.run([*_ray_cli(), "job", "submit", "--address", address, "--working-dir", str(ROOT),
                                 "--", *job], env=env, cwd=ROOT, capture_output=True, text=True, timeout=480)
        plain.wait(timeout=480)
    finally:
        _stop(plain)  # at once when it is still running after a failure; nothing when it has exited
    logs = submit.stdout + submit.stderr
    assert submit.returncode == 0, logs[-5000:]
    assert "simsd: joined the Ray cluster at" in logs and "from RAY_ADDRESS" in logs, logs[-3000:]
    table = read_output(tmp_path / "submitted")
    assert sorted(zip(table.column("id").to_pylist(), table.column("qid").to_pylist())) == [(1, "x"), (2, "y"), (3, "z")]

    plain_out = (tmp_path / "plain.out").read_text(errors="replace")
    plain_logs = plain_out + (tmp_path / "plain.err").read_text(errors="replace")
    assert plain.returncode == 0, plain_logs[-5000:]
    assert "simsd: started a private local Ray" in plain_out, plain_out
    assert read_output(tmp_path / "plain").num_rows == 3


def _start_plain_run(common: list[str], tmp_path, env) -> subprocess.Popen:
    """`python -m jobs.generate` into tmp_path/plain, in a process group of its own, its output
    in plain.out and plain.err."""
    with open(tmp_path / "plain.out", "wb") as out, open(tmp_path / "plain.err", "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "jobs.generate", *common, "--output", str(tmp_path / "plain")],
                                env=env, cwd=ROOT, stdout=out, stderr=err, start_new_session=True)
