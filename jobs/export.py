"""`simsd export OUTPUT --to FILE`: a finished `simsd generate` output -> an OpenAI batch result file.

One JSONL line per input row, as OpenAI's batch API returns them: ``{id, custom_id, response:
{status_code, request_id, body: chat.completion}, error}``; rows that failed carry ``error``
instead of ``response``. Field by field: pipeline/openai_results.py.

Exit codes: 0 written, 2 the output cannot be exported (not a simsd output, no rows, unfinished
without --allow-incomplete, bad options).
"""
from __future__ import annotations

import json
import sys

PROG = "simsd export"
FORMATS = ("openai-batch",)


def build_parser():
    from pipeline.cli_parser import Parser

    p = Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("output", help="a `simsd generate` output directory (local path or fsspec URL)")
    p.add_argument("--to", required=True, help="the result file to write (local path or fsspec URL; required)")
    p.add_argument("--format", choices=FORMATS, default="openai-batch", help="result format (default: openai-batch)")
    p.add_argument("--model", help="the response's model name (default: the job's --target)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="export the rows written so far when the job has not finished (default: refuse)")
    p.add_argument("--storage-options", help="JSON object of fsspec storage options for URLs (default: none)")
    return p


def main(argv: list[str] | None = None) -> int:
    from pipeline.errors import ConfigError
    from pipeline.storage import redact

    options: dict = {}
    try:
        args = build_parser().parse_args(argv)
        options = _options(args.storage_options)
        lines = export(args, options)
    except (ConfigError, ValueError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # unreadable output or unwritable result: say why, redacted
        print(f"{PROG}: error: {redact(f'{type(err).__name__}: {err}', options)}", file=sys.stderr)
        return 2
    print(f"wrote {lines} result line(s) to {args.to}")
    return 0


def _options(text: str | None) -> dict:
    try:
        options = json.loads(text) if text else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"--storage-options is not valid JSON ({err})") from None
    if not isinstance(options, dict):
        raise ValueError("--storage-options must be a JSON object")
    return options


def export(args, options: dict) -> int:
    from pipeline import openai_results, summary
    from pipeline.storage import open_fs, retry, write_atomic

    fs, out = open_fs(args.output, options)
    if not retry(fs.exists, out):
        raise ValueError(f"{args.output} does not exist")
    job = openai_results.job_record(fs, out)
    rows = openai_results.read_rows(fs, out)
    if not rows:
        raise ValueError(f"{args.output} holds no generated rows (no data/*.parquet)")
    done = summary.read(fs, out)
    if not args.allow_incomplete and (done is None or done.get("rows") != len(rows)):
        raise ValueError(f"{args.output} is not finished (no summary of all {len(rows)} written rows); "
                         "finish it with simsd generate, or pass --allow-incomplete to export what is written")
    lines = list(openai_results.result_lines(rows, job, args.model))
    to_fs, to = open_fs(args.to, options)
    write_atomic(to_fs, to, openai_results.to_jsonl(lines))
    return len(lines)


if __name__ == "__main__":
    sys.exit(main())
