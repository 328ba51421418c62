"""Rows that kill their worker, CPU starvation, and jobs that cannot progress (Ray, fake engines)."""
import os
import re
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import driver, resources
from pipeline.config import GenerateConfig
from pipeline.watchdog import starved_resource
from tests.pipeline.fake_job import start_job
from tests.pipeline.fakes import FakeEngine, make_model_dir
from tests.pipeline.helpers import read_output, write_prompts


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


def _config(tmp_path, model_dir, **kw):
    kw.setdefault("batch_size", 2)
    return GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), target=str(model_dir),
                          max_new_tokens=3, device="cpu", **kw)


def _write(tmp_path, prompts: dict) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": list(prompts), "prompt": list(prompts.values())}), tmp_path / "in" / "a.parquet")


class PoisonEngine(FakeEngine):
    """Kills its worker process (os._exit: no cleanup, no exception) on any batch holding 'sea'."""

    def __init__(self, config):
        super().__init__(config)
        self.poison = self.tokenizer.encode_prompt(prompt="sea", use_chat_template=False)[0]

    def generate(self, requests):
        if any(self.poison in r.prompt_ids for r in requests):
            os._exit(1)
        return super().generate(requests)


def test_poison_row_is_isolated_and_written_as_an_error_row(ray_local, tmp_path, model_dir):
    """Calls of 4 rows (batch size 1): the call holding row 5 kills its worker, is re-run once and
    kills it again, then is bisected (rows 4-5, then row 5 alone, each killing a worker) until row
    5 alone is written as an error row. Each death costs an actor restart (seconds), so the calls
    are as small as still needs two levels of bisection."""
    prompts = {i: "hello world" for i in range(8)}
    prompts[5] = "about the sea"
    _write(tmp_path, prompts)
    stats = driver.run(_config(tmp_path, model_dir, max_batch_retries=1, batch_size=1), engine_factory=PoisonEngine)
    rows = {r["id"]: r for r in read_output(tmp_path / "out").to_pylist()}
    assert sorted(rows) == list(range(8))  # every row exactly once
    assert rows[5]["finish_reason"] == "error" and "killed its worker process" in rows[5]["error"]
    assert all(rows[i]["finish_reason"] == "length" and rows[i]["error"] is None for i in rows if i != 5)
    assert stats["errors"] == 1 and stats["poison_rows"] == 1
    assert stats["batch_retries"] == 1  # --max-batch-retries 1: one re-run, then bisection


def test_as_many_workers_as_cpus_completes(ray_local, tmp_path, model_dir):
    assert ray_local.cluster_resources()["CPU"] == 2
    write_prompts(tmp_path / "in", 12, shards=3)
    config = _config(tmp_path, model_dir, workers=2, stall_timeout_s=120)
    assert resources.cpus_per_worker(config) == 0.5  # one CPU stays free for reading and writing
    stats = driver.run(config, engine_factory=FakeEngine)
    assert stats["rows"] == 12 and stats["num_workers"] == 2
    assert len(set(read_output(tmp_path / "out").column("actor_id").to_pylist())) >= 1


def test_cpus_per_worker_that_starves_io_is_a_config_error(ray_local, tmp_path, model_dir):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="leaves 0 of the cluster's 2 CPUs for reading and writing"):
        resources.cpus_per_worker(_config(tmp_path, model_dir, workers=2, cpus_per_worker=1.0))


FAKE_HANG = "tests.pipeline.fakes:HangAfterFirstEngine"


def _flags(tmp_path, model_dir, *extra: str) -> list[str]:
    return ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--target", str(model_dir),
            "--max-new-tokens", "3", "--device", "cpu", *extra]


def _first_batch_staged(out) -> bool:
    return any(out.glob("_staging/*/*.parquet")) or any(out.glob("data/*.parquet"))


# Jobs the watchdog fails run in a process of their own (tests.pipeline.fake_job): exit code 1 and
# the message on stderr are what a user sees, and the pytest process's shared Ray is never touched.
@pytest.fixture(scope="module")
def watchdog_jobs(tmp_path_factory, model_dir):
    """Two failed jobs: one whose engine hangs after its first batch (20 s stall timeout) and one
    whose actors need a GPU the machine lacks (4 s). The second starts once the first has staged
    its first batch: from then on the first only waits out its stall timeout, so the second's
    start-up (Ray, seconds of CPU) runs in that idle time instead of after it."""
    hang_dir, gpu_dir = tmp_path_factory.mktemp("hang"), tmp_path_factory.mktemp("no-gpu")
    write_prompts(hang_dir / "in", 12, shards=1)
    write_prompts(gpu_dir / "in", 4)
    # The clock restarts at each finished row and each actor placed or loaded: 20 s without any
    # (start-up, placement and the first batch each take a few seconds at most).
    hang = start_job(FAKE_HANG, _flags(hang_dir, model_dir, "--batch-size", "1", "--stall-timeout-s", "20"),
                     hang_dir / "logs")
    deadline = time.monotonic() + 240
    while hang.running() and not _first_batch_staged(hang_dir / "out") and time.monotonic() < deadline:
        time.sleep(0.2)
    no_gpu = start_job("tests.pipeline.fakes:FakeEngine",
                       _flags(gpu_dir, model_dir, "--gpus-per-worker", "1", "--stall-timeout-s", "4"), gpu_dir / "logs")
    return {"hang": hang.wait(), "hang_out": hang_dir / "out", "no_gpu": no_gpu.wait()}


@pytest.mark.slow  # waits out a 20 s stall timeout
def test_watchdog_fails_a_job_without_progress_and_keeps_written_rows(watchdog_jobs):
    done = watchdog_jobs["hang"]
    assert done.returncode == 1, done.stderr[-3000:]
    assert re.search(r"failed: JobStalled: no row finished and no token generated for .* s.*an engine call is hung", done.stderr), \
        done.stderr[-3000:]
    kept = read_output(watchdog_jobs["hang_out"]).column("id").to_pylist()
    assert len(kept) == 4 and len(set(kept)) == 4  # the first batch (4 rows per call) was committed
    assert not list(watchdog_jobs["hang_out"].glob("_lease*"))  # the lease was released


@pytest.mark.slow  # a job of its own (Ray start, 4 s stall timeout)
def test_watchdog_names_a_missing_gpu(watchdog_jobs):
    done = watchdog_jobs["no_gpu"]
    assert done.returncode == 1, done.stderr[-3000:]
    assert "starved resource: GPU: engine actors need 1 GPU each" in done.stderr, done.stderr[-3000:]


def test_starved_resource_messages():
    total = {"CPU": 2.0, "GPU": 2.0}
    assert "starved resource: CPU: 0 of 2 CPUs free" in starved_resource(
        total, {"CPU": 0.0, "GPU": 0.0}, {"CPU": 1.0, "GPU": 1.0}, placed=2, workers=2)
    assert "starved resource: GPU" in starved_resource(total, {"CPU": 1.0}, {"CPU": 0.5, "GPU": 1.0}, 1, 3)
    assert "starved resource: CPU: engine actors need 1 CPU" in starved_resource(
        {"CPU": 4.0}, {"CPU": 0.5}, {"CPU": 1.0, "GPU": 0.0}, 0, 1)
    assert "no resource is exhausted" in starved_resource(total, {"CPU": 1.5, "GPU": 0.0}, {"CPU": 0.5, "GPU": 1.0}, 2, 2)
