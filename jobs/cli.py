"""The `simsd` console script: one subcommand per module in jobs/, imported only when used."""
from __future__ import annotations

import atexit
import difflib
import importlib
import os
import sys
import traceback

# Subcommand -> (module exposing main(argv), what it does). Add a command by adding a line here and a module.
COMMANDS = {
    "generate": ("jobs.generate", "Parquet prompts -> Parquet generations on Ray (no --input: a demo)"),
    "prepare": ("jobs.prepare_prompts", "a json/jsonl/csv/parquet dataset or OpenAI batch file -> prompt Parquet shards"),
    "export": ("jobs.export", "a finished output directory -> an OpenAI batch result file (JSONL)"),
    "report": ("jobs.report", "an output directory -> report.html (figures and plots)"),
    "evaluate": ("jobs.evaluate", "quality on held-out data (accuracy, agreement) with tokens/s and acceptance"),
    "bench": ("jobs.benchmark", "decoders side by side on one GPU (HF baseline, vanilla, SimSD)"),
    "pipeline-bench": ("jobs.pipeline_bench", "the Ray pipeline against the bare engine on one GPU"),
    "scale-bench": ("jobs.scale_bench", "the pipeline with 1, 2, 4 ... actors: scaling efficiency"),
    "train-reference": ("jobs.train_reference", "rebuild the shipped reference model family"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"simsd: error: unknown command {command!r}{hint}\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[command][0])
    except ModuleNotFoundError as err:
        if err.name != COMMANDS[command][0]:
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
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {about}" for name, (_, about) in COMMANDS.items()]
    return "\n".join(["usage: simsd <command> [options]   (simsd <command> --help for its options)", "",
                      "commands:", *lines])


if __name__ == "__main__":
    entry()
