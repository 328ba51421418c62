"""`simsd prepare`: turn a local json/jsonl/csv/parquet dataset into prompt Parquet shards.

Ids are stable: a hash of the row's prompt (or messages) content plus its occurrence count, so
re-preparing the same data gives the same ids and a resumed generate run skips the same rows.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

PROG = "simsd prepare"
_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="local .json/.jsonl/.csv/.parquet file")
    p.add_argument("--output", required=True, help="directory for the prompt Parquet shards")
    p.add_argument("--prompt-field", default="prompt", help="source field with the text prompt")
    p.add_argument("--messages-field", help="source field with chat messages (instead of --prompt-field)")
    p.add_argument("--shards", type=int, default=1, help="number of Parquet files to write")
    p.add_argument("--keep-columns", nargs="*", default=[],
                   help="source fields copied through (e.g. max_new_tokens, temperature)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = prepare(args)
    except ValueError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {rows} prompts in {args.shards} shard(s) to {args.output}")
    return 0


def prepare(args) -> int:
    dataset = _load(Path(args.input))
    field = args.messages_field or args.prompt_field
    missing = [c for c in [field, *args.keep_columns] if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{args.input} has no field(s) {missing} (fields: {dataset.column_names})")
    if args.shards < 1:
        raise ValueError("--shards must be >= 1")
    out_name = "messages" if args.messages_field else "prompt"
    ids = stable_ids(dataset[field])
    table = dataset.select_columns([field, *args.keep_columns]).rename_column(field, out_name)
    table = table.add_column("id", ids)
    _write_shards(table, Path(args.output), args.shards)
    return len(table)


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
