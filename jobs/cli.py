"""The `simsd` console script: one subcommand per module in jobs/, imported only when used."""
from __future__ import annotations

import importlib
import sys

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


def _usage() -> str:
    return "usage: simsd {" + ",".join(COMMANDS) + "} [options]   (simsd <command> --help)"


if __name__ == "__main__":
    sys.exit(main())
