"""The Ray Data plan in-process with a fake engine: exactly-once output, resume, summary."""
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


def test_run_resume_and_summary(ray_local, tmp_path, model_dir):
    write_prompts(tmp_path / "in", 20)
    config = _config(tmp_path, model_dir)
    stats = driver.run(config, engine_factory=FakeEngine)
    table = read_output(tmp_path / "out")
    assert sorted(table.column("id").to_pylist()) == list(range(20))
    # Summary figures are sums of the row statistics.
    for key in ("num_rounds", "num_drafted_tokens", "num_accepted_tokens", "num_target_forwards"):
        assert stats[key] == sum(table.column(key).to_pylist())
    assert stats["generated_tokens"] == sum(table.column("num_generated_tokens").to_pylist())
    assert stats["rows"] == 20 and stats["errors"] == 0
    assert stats["acceptance_rate"] == pytest.approx(0.5)
    assert pq.read_table(tmp_path / "out" / "summary.parquet").num_rows == 1

    # A second identical run has nothing left to do and duplicates nothing.
    write_prompts(tmp_path / "in", 24)  # grow the input: only the 4 new ids are generated
    stats = driver.run(config, engine_factory=FakeEngine)
    assert stats["rows_this_run"] == 4
    assert sorted(read_output(tmp_path / "out").column("id").to_pylist()) == list(range(24))
    assert [r["rows_this_run"] for r in stats["runs"]] == [20, 4]  # each run's own figures
    # A run with nothing left (driven directly: the CLI stops before Ray) keeps the figures.
    again = driver.run(config, engine_factory=FakeEngine)
    assert again["runs"] == stats["runs"] and again["tokens_per_s"] == stats["tokens_per_s"] > 0


def test_partial_staged_file_is_dropped(ray_local, tmp_path, model_dir):
    write_prompts(tmp_path / "in", 6)
    config = _config(tmp_path, model_dir)
    staged = tmp_path / "out" / "_staging" / "killed-run"
    staged.mkdir(parents=True)
    (staged / "x.parquet").write_bytes(b"PAR1 truncated by a kill")
    driver.run(config, engine_factory=FakeEngine)
    assert sorted(read_output(tmp_path / "out").column("id").to_pylist()) == list(range(6))
    assert not (tmp_path / "out" / "_staging").exists()


def test_different_config_on_existing_output_is_refused(ray_local, tmp_path, model_dir):
    write_prompts(tmp_path / "in", 4)
    driver.run(_config(tmp_path, model_dir), engine_factory=FakeEngine)
    with pytest.raises(ConfigError, match="different config.*temperature"):
        validate(_config(tmp_path, model_dir, temperature=0.5))
    validate(_config(tmp_path, model_dir, temperature=0.5, overwrite=True))
