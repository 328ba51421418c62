"""`simsd prepare`: turn a local json/jsonl/csv/parquet dataset into prompt Parquet shards.

Every source field is kept by default (as `simsd generate` passes input columns through);
`--keep-columns a,b` keeps only those, with the same comma-separated syntax as `simsd generate`.
Ids are stable: a hash of the row's prompt (or messages) content plus its occurrence count, so
re-preparing the same data gives the same ids and a resumed generate run skips the same rows.

An OpenAI batch file (.jsonl of {custom_id, method, url, body} requests; detected, or forced with
`--format openai-batch`) is read by pipeline.openai_batch: its custom_ids are the ids.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

PROG = "simsd prepare"
_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
INPUT_FORMATS = ("auto", "dataset", "openai-batch")


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli_parser import Parser

    p = Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="local .json/.jsonl/.csv/.parquet file (required)")
    p.add_argument("--format", choices=INPUT_FORMATS, default="auto",
                   help="'dataset': one prompt per record; 'openai-batch': an OpenAI batch file of "
                        "{custom_id, method, url, body} requests; 'auto': openai-batch for a .jsonl file whose "
                        "first line has those keys, else dataset (default: auto)")
    p.add_argument("--output", required=True, help="directory for the prompt Parquet shards (required)")
    p.add_argument("--prompt-field", default="prompt", help="source field with the text prompt, written as "
                   "column 'prompt' (default: prompt)")
    p.add_argument("--messages-field", help="source field with chat messages, written as column 'messages', "
                   "instead of --prompt-field (default: none)")
    p.add_argument("--shards", type=int, default=1, help="number of Parquet files to write (default: 1)")
    p.add_argument("--keep-columns", default=None,
                   help="comma-separated source fields to copy through, as in simsd generate (default: every "
                        "field; '' keeps none; a field named 'id' is written as 'source_id')")
    return p


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import ConfigError

    try:
        args = build_parser().parse_args(argv)
        rows = prepare(args)
    except (ConfigError, ValueError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {rows} prompts in {args.shards} shard(s) to {args.output}")
    return 0


def prepare(args) -> int:
    if args.shards < 1:
        raise ValueError("--shards must be >= 1")
    if is_batch_file(args):
        return prepare_batch_file(args)
    dataset = _load(Path(args.input))
    field = args.messages_field or args.prompt_field
    kept = kept_fields(dataset.column_names, field, args.keep_columns)
    missing = [c for c in [field, *kept] if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{args.input} has no field(s) {missing} (fields: {dataset.column_names})")
    out_name = "messages" if args.messages_field else "prompt"
    clash = [c for c in kept if c == out_name]
    if clash:
        raise ValueError(f"field {clash[0]!r} would clash with the prompt column written from {field!r}; "
                         "leave it out with --keep-columns")
    ids = stable_ids(dataset[field])
    table = dataset.select_columns([field, *kept]).rename_column(field, out_name)
    if "id" in kept:  # the source's own id rides along; the stable content id is the job's key
        table = table.rename_column("id", "source_id")
    table = table.add_column("id", ids)
    _write_shards(table, Path(args.output), args.shards)
    return len(table)


def is_batch_file(args) -> bool:
    from pipeline.openai_batch import looks_like_batch_file

    return args.format == "openai-batch" or (args.format == "auto" and looks_like_batch_file(Path(args.input)))


def prepare_batch_file(args) -> int:
    """An OpenAI batch file -> id (its custom_id), messages or prompt, sampling_params, model."""
    import pyarrow.parquet as pq

    from pipeline.openai_batch import read_batch_file

    given = [flag for flag, value in (("--prompt-field", args.prompt_field != "prompt"),
                                      ("--messages-field", args.messages_field is not None),
                                      ("--keep-columns", args.keep_columns is not None)) if value]
    if given:
        raise ValueError(f"{', '.join(given)} do(es) not apply to an OpenAI batch file (its fields are fixed); "
                         "leave them out, or pass --format dataset to read it as plain records")
    path = Path(args.input)
    if not path.is_file():
        raise ValueError(f"--input {path} must be an existing file")
    table = read_batch_file(path)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    size = -(-len(table) // args.shards)
    for i in range(args.shards):
        pq.write_table(table.slice(i * size, size), out / f"prompts-{i:05d}-of-{args.shards:05d}.parquet")
    return len(table)


def kept_fields(names: list[str], prompt_field: str, keep: str | None) -> list[str]:
    """Fields copied besides the prompt: every one by default, else the comma-separated list."""
    if keep is None:
        return [n for n in names if n != prompt_field]
    return [c.strip() for c in keep.split(",") if c.strip() and c.strip() != prompt_field]


def _load(path: Path):
    from datasets import load_dataset

    if not path.is_file() or path.suffix not in _FORMATS:
        raise ValueError(f"--input {path} must be an existing {'/'.join(_FORMATS)} file")
    return load_dataset(_FORMATS[path.suffix], data_files=str(path), split="train")


def stable_ids(values: list) -> list[str]:
    """sha256 of the content (+ '#n' for the n-th repeat), so duplicates stay distinct."""
    seen: dict[str, int] = {}
    ids = []
    for value in values:
        digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
        n = seen.get(digest, 0)
        seen[digest] = n + 1
        ids.append(digest if n == 0 else f"{digest}#{n}")
    return ids


def _write_shards(dataset, out: Path, shards: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i in range(shards):
        dataset.shard(num_shards=shards, index=i, contiguous=True).to_parquet(
            str(out / f"prompts-{i:05d}-of-{shards:05d}.parquet"))


if __name__ == "__main__":
    sys.exit(main())
