"""The `simsd` console script: one subcommand per module in jobs/, imported only when used."""
from __future__ import annotations

import atexit
import importlib
import os
import sys
import traceback

# Subcommand -> module exposing main(argv). Add a command by adding a line here and a module.
COMMANDS = {
    "generate": "jobs.generate",
    "prepare": "jobs.prepare_prompts",
    "bench": "jobs.benchmark",
    "evaluate": "jobs.evaluate",
    "train-reference": "jobs.train_reference",
    "pipeline-bench": "jobs.pipeline_bench",
    "scale-bench": "jobs.scale_bench",
    "report": "jobs.report",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"simsd: error: unknown command {command!r}\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[command])
    except ModuleNotFoundError as err:
        if err.name != COMMANDS[command]:
            raise
        print(f"simsd: error: command {command!r} is not available in this install", file=sys.stderr)
        return 2
    status = module.main(rest)
    return status if isinstance(status, int) else 0  # some jobs return their report


def entry() -> None:
    """The console script: ``main``, then :func:`exit_now` with its status."""
    exit_now(run_main(main))


def run_main(fn, *args) -> int:
    """``fn(*args)``'s exit status: its return value, a SystemExit's code (argparse), or 1 after
    printing the traceback of any other exception."""
    try:
        status = fn(*args)
    except SystemExit as err:
        status = err.code
    except BaseException:  # noqa: BLE001 - reported, then a deterministic exit
        traceback.print_exc()
        return 1
    if status is None or isinstance(status, bool):
        return int(bool(status))
    if isinstance(status, int):
        return status
    if isinstance(status, str):  # sys.exit("message")
        print(status, file=sys.stderr)
        return 1
    return 0  # some jobs return their report


def exit_now(status: int) -> None:
    """End the process with ``status``, deterministically.

    A normal interpreter exit first finalizes Python, which kills daemon threads (the lease
    heartbeat, progress, fsspec's event loop) wherever they are, even inside C++ code, then runs
    the C++ static destructors of the native libraries (Arrow's thread pool, jemalloc, torch).
    Either can end in ``terminate called without an active exception`` and SIGABRT (exit 134
    or -6) after a job already finished. So: run the atexit handlers (Ray's shutdown of a
    private local Ray, logging), flush the output, and leave with ``os._exit``."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream must not change the status
                pass
        os._exit(status)


def _usage() -> str:
    return "usage: simsd {" + ",".join(COMMANDS) + "} [options]   (simsd <command> --help)"


if __name__ == "__main__":
    entry()
