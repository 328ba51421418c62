"""The `simsd` console script: described subcommands, suggestions for a mistyped one, and exit codes
that are deterministic (no abort at interpreter exit)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import COMMANDS, main, run_main
from tests.pipeline.helpers import finished_output, job_argv

ROOT = Path(__file__).resolve().parents[2]
REPEATS = 12  # each repeat runs two short processes (about 1 s): the suite stays under its time budget


def test_run_main_turns_every_ending_into_a_status(capsys):
    assert run_main(lambda: 2) == 2
    assert run_main(lambda: None) == 0
    assert run_main(lambda: {"report": 1}) == 0
    assert run_main(lambda: sys.exit(3)) == 3
    assert run_main(lambda: sys.exit("bad")) == 1 and "bad" in capsys.readouterr().err

    def boom():
        raise ValueError("broken")
    assert run_main(boom) == 1 and "ValueError: broken" in capsys.readouterr().err


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_short_paths_exit_with_their_code_every_time(tmp_path):
    """A config error (2) and a rerun with nothing left (0), REPEATS times each: never 134 or -6."""
    model = finished_output(tmp_path)
    codes = {"error": [], "nothing to do": []}
    for _ in range(REPEATS):
        codes["error"].append(_run(["-m", "jobs.cli", "generate", *job_argv(tmp_path, model),
                                    "--batch-size", "0"]).returncode)
        done = _run(["-m", "jobs.generate", *job_argv(tmp_path, model)])
        assert "nothing to do" in done.stdout, done.stderr
        codes["nothing to do"].append(done.returncode)
    assert codes == {"error": [2] * REPEATS, "nothing to do": [0] * REPEATS}


@pytest.mark.slow
def test_a_daemon_thread_busy_in_native_code_does_not_change_the_exit_code():
    """The pattern behind `terminate called without an active exception`: a daemon thread inside
    native code while the process ends. exit_now ends the process without finalizing."""
    code = ("import threading, pyarrow as pa, pyarrow.compute as pc\n"
            "from jobs.cli import exit_now\n"
            "data = pa.array(range(1_000_000))\n"
            "def spin():\n"
            "    while True: pc.sum(pc.multiply(data, 3))\n"
            "for _ in range(4): threading.Thread(target=spin, daemon=True).start()\n"
            "print('bye', flush=True)\n"
            "exit_now(2)\n")
    for _ in range(5):
        result = _run(["-c", code])
        assert (result.returncode, result.stdout) == (2, "bye\n"), result.stderr


def test_help_describes_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, about) in COMMANDS.items():
        assert f"  {name} " in out and about in out


def test_a_mistyped_command_gets_a_suggestion(capsys):
    assert main(["generat"]) == 2
    assert "unknown command 'generat' (did you mean 'generate'?)" in capsys.readouterr().err


def test_report_does_not_accept_an_abbreviated_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path), "--storage", "{}"])  # --storage-options, abbreviated
    assert exit_.value.code == 2 and "unrecognized arguments: --storage" in capsys.readouterr().err
