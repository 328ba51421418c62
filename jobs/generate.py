"""`simsd generate` / `python -m jobs.generate`: parse -> validate -> run the Ray Data plan.

Exit codes: 0 done (rows that could not be generated carry an error value), 2 bad configuration
(nothing was started), 1 the run failed (rows written so far are kept; rerun to resume).
Messages never include credential values (--storage-options, AWS_* and similar env vars).
"""
from __future__ import annotations

import sys
import traceback

PROG = "simsd generate"


def main(argv: list[str] | None = None) -> int:
    from pipeline import demo, driver, summary
    from pipeline.config import ConfigError, parse_args
    from pipeline.storage import for_terminal
    from pipeline.validate import validate

    options: dict = {}
    try:
        config = parse_args(argv, prog=PROG)
        options = config.storage_options
        is_demo = config.input is None and config.target is None
        if is_demo:
            config = demo.prepare(config)
        for warning in validate(config):
            print(for_terminal(f"{PROG}: warning: {warning}", options, sys.stderr), file=sys.stderr)
        stats = driver.run(config)
    except ConfigError as err:
        print(for_terminal(f"{PROG}: error: {err}", options, sys.stderr), file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - report, redacted, and exit nonzero
        print(for_terminal(traceback.format_exc(), options, sys.stderr), file=sys.stderr)
        print(for_terminal(f"{PROG}: failed: {type(err).__name__}: {err} "
                           "(rows already written are kept; rerun the same command to resume)", options, sys.stderr),
              file=sys.stderr)
        return 1
    if is_demo:
        demo.show_samples(config)
    print(summary.format_table(stats))
    print(f"output: {config.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
