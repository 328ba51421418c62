"""Prompts and the target checkpoint read from S3, outputs and summary written to S3 (moto)."""
import json

import pytest

from jobs.cli import main
from tests.pipeline.moto_s3 import moto_bucket

pytestmark = pytest.mark.slow


@pytest.fixture
def s3(monkeypatch):
    with moto_bucket(monkeypatch, "bucket") as (fs, options, bucket):
        yield fs, options, bucket


def test_s3_end_to_end(ray_local, s3, tmp_path, tiny_models):
    from tests.pipeline.helpers import write_prompts

    fs, options, bucket = s3
    write_prompts(tmp_path / "in", 6, shards=2)
    fs.put(str(tmp_path / "in"), f"{bucket}/prompts", recursive=True)
    fs.put(str(tiny_models["target"]), f"{bucket}/models/target", recursive=True)
    argv = ["generate", "--input", f"s3://{bucket}/prompts", "--output", f"s3://{bucket}/out",
            "--target", f"s3://{bucket}/models/target", "--storage-options", json.dumps(options),
            "--max-new-tokens", "4", "--device", "cpu"]
    assert main(argv) == 0
    import pyarrow.parquet as pq

    files = fs.glob(f"{bucket}/out/data/*.parquet")
    ids = sorted(i for f in files for i in pq.read_table(fs.open(f, "rb")).column("id").to_pylist())
    assert ids == list(range(6))
    assert fs.exists(f"{bucket}/out/summary.parquet") and fs.exists(f"{bucket}/out/_job.json")
    # Credentials never land in the output.
    assert "testing" not in fs.cat(f"{bucket}/out/_job.json").decode()
