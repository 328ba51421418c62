"""Output safety on S3 (moto on 127.0.0.1): one writer per output, a rerun with nothing left,
and a kill during the final commit followed by a rerun (every row exactly once)."""
import json
import os

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from tests.pipeline.helpers import write_prompts
from tests.pipeline.moto_s3 import moto_bucket

pytestmark = pytest.mark.slow  # Ray jobs against a local S3 server


@pytest.fixture
def s3(monkeypatch):
    with moto_bucket(monkeypatch, "safety") as s3:
        yield s3


def _argv(tmp_path, fs, options, bucket, target):
    write_prompts(tmp_path / "in", 6, shards=2)
    fs.put(str(tmp_path / "in"), f"{bucket}/prompts", recursive=True)
    return ["generate", "--input", f"s3://{bucket}/prompts", "--output", f"s3://{bucket}/out",
            "--target", str(target), "--storage-options", json.dumps(options), "--max-new-tokens", "2",
            "--device", "cpu"]


def _ids(fs, bucket):
    fs.invalidate_cache()
    return sorted(i for f in fs.glob(f"{bucket}/out/data/*.parquet")
                  for i in pq.read_table(fs.open(f, "rb")).column("id").to_pylist())


def test_second_driver_on_s3_exits_2_naming_the_holder(ray_local, s3, tmp_path, tiny_models, capsys):
    from pipeline.lease import Lease

    fs, options, bucket = s3
    argv = _argv(tmp_path, fs, options, bucket, tiny_models["target"])
    holder = Lease(fs, f"{bucket}/out", "first-run", timeout_s=60).acquire()
    try:
        assert main(argv) == 2
    finally:
        holder.release()
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and "first-run" in err and "since" in err
    assert options["endpoint_url"] in err or "out" in err  # the endpoint is not a secret
    assert not fs.glob(f"{bucket}/out/data/*.parquet")  # nothing was written


def test_rerun_with_nothing_left_and_kill_during_commit(ray_local, s3, tmp_path, tiny_models, monkeypatch):
    from pipeline import resume

    fs, options, bucket = s3
    argv = _argv(tmp_path, fs, options, bucket, tiny_models["target"])
    moves = []
    real_move = resume._move

    def killed_after_first_move(*args):
        real_move(*args)  # the first file reaches data/, then the driver dies mid-commit
        moves.append(args)
        raise KeyboardInterrupt("killed during the final commit")
    monkeypatch.setattr(resume, "_move", killed_after_first_move)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    monkeypatch.setattr(resume, "_move", real_move)
    assert moves and _ids(fs, bucket)  # some rows were committed before the kill
    assert main(argv) == 0  # recovers the staged files, generates what is missing
    assert _ids(fs, bucket) == list(range(6))
    assert main(argv) == 0  # nothing left: no crash on a staging prefix that does not exist
    assert _ids(fs, bucket) == list(range(6))
    assert not fs.glob(f"{bucket}/out/_lease*")
