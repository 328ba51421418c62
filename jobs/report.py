"""`simsd report OUTPUT`: write OUTPUT/report.html (summary figures and plots) for a job's output.

Exit codes: 0 written, 2 the output cannot be read (no such directory, no rows, bad options).
"""
from __future__ import annotations

import argparse
import json
import sys

PROG = "simsd report"


def main(argv: list[str] | None = None) -> int:
    from pipeline import report, resume
    from pipeline.storage import open_fs, redact, retry

    args = _parser().parse_args(argv)
    try:
        options = json.loads(args.storage_options) if args.storage_options else {}
    except json.JSONDecodeError as err:
        print(f"{PROG}: error: --storage-options is not valid JSON ({err})", file=sys.stderr)
        return 2
    try:
        fs, out = open_fs(args.output, options)
        if not retry(fs.exists, out):
            print(f"{PROG}: error: {args.output} does not exist", file=sys.stderr)
            return 2
        if not resume.data_files(fs, out):
            print(f"{PROG}: error: {args.output} holds no generated rows (no data/*.parquet)", file=sys.stderr)
            return 2
        path = report.write(fs, out)
    except Exception as err:  # noqa: BLE001 - unreadable output: say why, redacted
        print(f"{PROG}: error: {redact(f'{type(err).__name__}: {err}', options)}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog=PROG, description="Write OUTPUT/report.html: the run summary and "
                                     "plots (throughput per worker, accepted tokens per round, generated "
                                     "length, time per row, error rows by reason) in one self-contained page.")
    parser.add_argument("output", help="a `simsd generate` output directory (local path or fsspec URL)")
    parser.add_argument("--storage-options", help="JSON object of fsspec storage options for URLs")
    return parser


if __name__ == "__main__":
    sys.exit(main())
