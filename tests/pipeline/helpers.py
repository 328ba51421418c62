"""Small builders shared by the pipeline tests."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_prompts(path: Path, n: int, shards: int = 2, id_column: str = "id") -> Path:
    """``n`` prompts split over ``shards`` Parquet files in directory ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    words = "hello world write a haiku about the sea".split()
    for s in range(shards):
        ids = list(range(s, n, shards))
        prompts = [" ".join(words[(i + k) % len(words)] for k in range(1 + i % 4)) for i in ids]
        pq.write_table(pa.table({id_column: ids, "prompt": prompts}), path / f"part-{s}.parquet")
    return path


def read_output(out: Path) -> pa.Table:
    files = sorted((out / "data").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])
