"""Prompts and the target checkpoint read from S3, outputs and summary written to S3 (moto)."""
import json

import pytest

from jobs.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def s3(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    options = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("bucket")
    yield fs, options
    server.stop()


def test_s3_end_to_end(ray_local, s3, tmp_path, tiny_models):
    from tests.pipeline.helpers import write_prompts

    fs, options = s3
    write_prompts(tmp_path / "in", 6, shards=2)
    fs.put(str(tmp_path / "in"), "bucket/prompts", recursive=True)
    fs.put(str(tiny_models["target"]), "bucket/models/target", recursive=True)
    argv = ["generate", "--input", "s3://bucket/prompts", "--output", "s3://bucket/out",
            "--target", "s3://bucket/models/target", "--storage-options", json.dumps(options),
            "--max-new-tokens", "4", "--device", "cpu"]
    assert main(argv) == 0
    import pyarrow.parquet as pq

    files = fs.glob("bucket/out/data/*.parquet")
    ids = sorted(i for f in files for i in pq.read_table(fs.open(f, "rb")).column("id").to_pylist())
    assert ids == list(range(6))
    assert fs.exists("bucket/out/summary.parquet") and fs.exists("bucket/out/_job.json")
    # Credentials never land in the output.
    assert "testing" not in fs.cat("bucket/out/_job.json").decode()
