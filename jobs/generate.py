"""`simsd generate` / `python -m jobs.generate`: parse -> validate -> run the Ray Data plan.

Exit codes: 0 done (rows that could not be generated carry an error value; also a rerun with
nothing left to do), 2 bad configuration (nothing was started), 1 the run failed (rows written so
far are kept; rerun to resume). Messages never include credential values (--storage-options,
AWS_* and similar env vars).
"""
from __future__ import annotations

import dataclasses
import sys
import traceback

PROG = "simsd generate"
DEMO_OUTPUT = "./simsd-demo-output"


def main(argv: list[str] | None = None) -> int:
    from pipeline.cluster import PlacementTimeout
    from pipeline.config import ConfigError, parse_args
    from pipeline.storage import for_terminal

    options: dict = {}
    try:
        config = parse_args(argv, prog=PROG)
        options = config.storage_options
        return _generate(config)
    except ConfigError as err:
        print(for_terminal(f"{PROG}: error: {err}", options, sys.stderr), file=sys.stderr)
        return 2
    except PlacementTimeout as err:  # a clear message is the whole story: no traceback
        print(for_terminal(f"{PROG}: failed: {err}", options, sys.stderr), file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - report, redacted, and exit nonzero
        print(for_terminal(traceback.format_exc(), options, sys.stderr), file=sys.stderr)
        print(for_terminal(f"{PROG}: failed: {type(err).__name__}: {err}{_cause(err)} "
                           "(rows already written are kept; rerun the same command to resume)", options, sys.stderr),
              file=sys.stderr)
        return 1


def root_cause(err: BaseException) -> BaseException:
    """The innermost error behind ``err``: Ray's task errors wrap the worker's (``cause``),
    Python chains the rest (``__cause__``, ``__context__``)."""
    seen = {id(err)}
    while True:
        inner = getattr(err, "cause", None)
        if not isinstance(inner, BaseException):
            inner = err.__cause__ or err.__context__
        if inner is None or id(inner) in seen:
            return err
        seen.add(id(inner))
        err = inner


def _cause(err: BaseException) -> str:
    """`` (cause: No space left on device: /out/...)`` when a wrapped error says more."""
    from pipeline.output_check import describe

    inner = root_cause(err)
    text = describe(inner)
    if inner is err or text in str(err):
        return ""
    return f" (cause: {text})"


def _generate(config) -> int:
    from pipeline import columns, demo, driver, quiet, report, resume, summary
    from pipeline.config import ConfigError
    from pipeline.storage import open_fs

    quiet.install(config.verbose)
    if config.input is None and config.target is None:
        config = demo.prepare(dataclasses.replace(config, output=config.output or DEMO_OUTPUT))
        with demo.workdir_removed(config):  # no simsd-demo-* dirs left in the temp folder
            return _run(config, is_demo=True)
    if config.output is None:  # a real job never writes into the demo's directory
        raise ConfigError("--output is required with --input (only the demo, run with neither --input nor "
                          "--target, has a default output)")
    config = columns.for_input(config)  # prompt or messages, before the fingerprint is compared
    done = resume.all_done(config)  # a finished job rerun: seconds, no Ray, no models
    if done is not None:
        rows, samples = done
        each = "" if samples == rows else f" ({samples} samples: every (id, sample_index))"
        print(f"{PROG}: nothing to do: all {rows} input rows{each} are already in {config.output} "
              "(--overwrite generates them again)")
        if driver.ensure_written(*open_fs(config.output, config.storage_options), config):
            print(f"{PROG}: {summary.SUMMARY_FILE} (or {report.REPORT_FILE}) was missing or unreadable: "
                  "written again from the rows in data/")
        return 0
    return _run(config, is_demo=False)


def _run(config, is_demo: bool) -> int:
    from pipeline import columns, demo, driver, summary
    from pipeline.storage import for_terminal
    from pipeline.validate import validate

    for warning in validate(config):
        print(for_terminal(f"{PROG}: warning: {warning}", config.storage_options, sys.stderr), file=sys.stderr)
    if getattr(config, "sampling_choice", None):
        print(f"{PROG}: {config.sampling_choice}", file=sys.stderr)
    columns.passthrough(config, columns.input_schema(config))  # a column clash is exit 2 before Ray starts
    stats = driver.run(config)
    if is_demo:
        demo.show_samples(config)
    print(summary.format_table(stats))
    print(f"output: {config.output}")
    return 0


if __name__ == "__main__":  # `python -m jobs.generate` (what `ray job submit` runs)
    from jobs.cli import exit_now, run_main

    exit_now(run_main(main))
