"""Test-only entry point: ``python -m tests.pipeline.fake_job MODULE:CLASS [simsd generate flags]``.

Runs ``simsd generate`` (jobs.generate.main: parsing, validation, exit codes, messages) with the
engine class ``MODULE:CLASS`` in place of the real engine, in a process of its own. Tests whose
job stops Ray (the watchdog) or may take the interpreter down use it through :func:`run_job`,
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


def run_job(engine: str, flags: list[str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run the job in a fresh interpreter with a private local Ray; return its exit code and
    output (text)."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never the pytest process's Ray or a cluster on this machine
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "tests.pipeline.fake_job", engine, *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


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
