"""Test-only entry point: ``python -m tests.pipeline.fake_job MODULE:CLASS [simsd generate flags]``.

Runs ``simsd generate`` (jobs.generate.main: parsing, validation, exit codes, messages) with the
engine class ``MODULE:CLASS`` in place of the real engine, in a process of its own. Tests whose
job stops Ray (the watchdog) or may take the interpreter down use it through :func:`start_job`,
so the pytest process and its shared Ray are never touched.
"""
from __future__ import annotations

import functools
import importlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class StartedJob:
    """A job started by :func:`start_job`, running beside the caller (its output goes to files,
    so several can run at once without filling a pipe)."""

    def __init__(self, engine: str, flags: list[str], log_dir: Path):
        log_dir.mkdir(parents=True, exist_ok=True)
        self._out, self._err = log_dir / "stdout.txt", log_dir / "stderr.txt"
        with open(self._out, "wb") as out, open(self._err, "wb") as err:
            self.proc = subprocess.Popen(_command(engine, flags), cwd=ROOT, env=_env(), stdout=out, stderr=err)

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout_s: float = 300) -> subprocess.CompletedProcess:
        """Its exit code and output (text)."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        read = lambda path: path.read_text(errors="replace")  # noqa: E731
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, read(self._out), read(self._err))


def start_job(engine: str, flags: list[str], log_dir: Path) -> StartedJob:
    """Run the job in a fresh interpreter with a private local Ray, without waiting for it:
    it runs while the caller goes on (:meth:`StartedJob.wait` for its exit code and output)."""
    return StartedJob(engine, flags, log_dir)


def _command(engine: str, flags: list[str]) -> list[str]:
    return [sys.executable, "-m", "tests.pipeline.fake_job", engine, *flags]


def _env() -> dict:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never the pytest process's Ray or a cluster on this machine
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _engine_class(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str]) -> int:
    from jobs import generate
    from pipeline import driver

    engine = _engine_class(argv[0])
    driver.run = functools.partial(driver.run, engine_factory=engine)  # jobs.generate calls driver.run(config)
    return generate.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
