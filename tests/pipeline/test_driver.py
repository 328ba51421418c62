"""The Ray Data plan in-process with a fake engine: exactly-once output, resume, summary.

Each driver.run costs about 11 s on a 2-core CPU (Ray Data and a fresh actor process), so one
first run, over an output holding a killed run's truncated staged file, is checked several ways."""
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline import driver
from pipeline.config import ConfigError, GenerateConfig
from pipeline.validate import validate
from tests.pipeline.fakes import FakeEngine, make_model_dir
from tests.pipeline.helpers import read_output, write_prompts


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


def _config(tmp_path, model_dir, **kw):
    return GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), target=str(model_dir),
                          max_new_tokens=4, batch_size=4, device="cpu", **kw)


@pytest.fixture(scope="module")
def first_run(ray_module, tmp_path_factory, model_dir):
    """20 prompts generated into an output where a killed run left a truncated staged file:
    the directory, the run's summary and its output table as the run left them."""
    tmp = tmp_path_factory.mktemp("first-run")
    write_prompts(tmp / "in", 20)
    staged = tmp / "out" / "_staging" / "killed-run"
    staged.mkdir(parents=True)
    (staged / "x.parquet").write_bytes(b"PAR1 truncated by a kill")
    stats = driver.run(_config(tmp, model_dir), engine_factory=FakeEngine)
    return {"dir": tmp, "stats": stats, "table": read_output(tmp / "out"),
            "staging_left": (tmp / "out" / "_staging").exists()}


def test_every_id_once_and_summary_sums_row_statistics(first_run):
    table, stats = first_run["table"], first_run["stats"]
    assert sorted(table.column("id").to_pylist()) == list(range(20))
    for key in ("num_rounds", "num_drafted_tokens", "num_accepted_tokens", "num_target_forwards"):
        assert stats[key] == sum(table.column(key).to_pylist())
    assert stats["generated_tokens"] == sum(table.column("num_generated_tokens").to_pylist())
    assert stats["rows"] == 20 and stats["errors"] == 0
    assert stats["acceptance_rate"] == pytest.approx(0.5)
    assert pq.read_table(first_run["dir"] / "out" / "summary.parquet").num_rows == 1


def test_partial_staged_file_is_dropped(first_run):
    """A killed run's truncated staged file is neither committed nor fatal: every id once (the
    test above) and no staging directory left."""
    assert not first_run["staging_left"]
    assert sorted(first_run["table"].column("id").to_pylist()) == list(range(20))


def test_different_config_on_existing_output_is_refused(first_run, model_dir):
    with pytest.raises(ConfigError, match="different config.*temperature"):
        validate(_config(first_run["dir"], model_dir, temperature=0.5))
    validate(_config(first_run["dir"], model_dir, temperature=0.5, overwrite=True))


def test_grown_input_resumes_only_new_ids_and_keeps_each_runs_figures(ray_local, first_run, model_dir, tmp_path):
    """On a copy of the first run's output (the other tests see it as the run left it)."""
    for name in ("in", "out"):
        shutil.copytree(first_run["dir"] / name, tmp_path / name)
    config = _config(tmp_path, model_dir)
    write_prompts(tmp_path / "in", 24)  # grow the input: only the 4 new ids are generated
    stats = driver.run(config, engine_factory=FakeEngine)
    assert stats["rows_this_run"] == 4
    assert sorted(read_output(tmp_path / "out").column("id").to_pylist()) == list(range(24))
    assert [r["rows_this_run"] for r in stats["runs"]] == [20, 4]  # each run's own figures
    # A run with nothing left (driven directly: the CLI stops before Ray) keeps the figures.
    again = driver.run(config, engine_factory=FakeEngine)
    assert again["runs"] == stats["runs"] and again["tokens_per_s"] == stats["tokens_per_s"] > 0
