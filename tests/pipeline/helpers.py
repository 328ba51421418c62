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


def job_argv(tmp_path, model):
    return ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--target", str(model),
            "--device", "cpu"]


def finished_output(tmp_path):
    """An output whose every row is in data/ and has no summary (killed after the final commit);
    returns the model directory (the arguments: job_argv)."""
    import fsspec

    from pipeline import resume
    from pipeline.config import parse_args
    from tests.pipeline.fakes import make_model_dir

    model = make_model_dir(tmp_path / "model")
    write_prompts(tmp_path / "in", 4)
    fs, out = fsspec.filesystem("file"), str(tmp_path / "out")
    resume.write_job_file(fs, out, parse_args(job_argv(tmp_path, model)))
    (tmp_path / "out" / "data").mkdir(parents=True)
    pq.write_table(finished_rows(range(4)), tmp_path / "out" / "data" / "run-0.parquet")
    return model


def finished_rows(ids) -> pa.Table:
    """Written rows with the columns a summary is built from."""
    n = len(ids)
    return pa.table({"id": list(ids), "finish_reason": ["length"] * n, "error": [None] * n,
                     "actor_id": ["h:1"] * n, "time_taken_s": [0.5] * n, "finished_at": [1e9] * n,
                     **{name: [3] * n for name in ("num_input_tokens", "num_generated_tokens", "num_rounds",
                                                   "num_drafted_tokens", "num_accepted_tokens",
                                                   "num_target_forwards", "num_draft_forwards")}})
