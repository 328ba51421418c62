"""Nothing-to-do is decided on (id, sample_index) before Ray: n samples per row, per-row n too."""
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline import cluster, resume
from pipeline.config import GenerateConfig
from pipeline.storage import open_fs
from tests.pipeline.fakes import make_model_dir
from tests.pipeline.helpers import finished_rows, write_prompts


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


def _output(tmp_path, config, ids, samples) -> None:
    """A finished output holding sample indices ``samples`` of each id."""
    fs, out = open_fs(config.output)
    resume.write_job_file(fs, out, config)
    (tmp_path / "out" / "data").mkdir(parents=True, exist_ok=True)
    rows = [(i, k) for i in ids for k in samples]
    table = finished_rows([i for i, _ in rows]).append_column("sample_index", pa.array([k for _, k in rows]))
    pq.write_table(table, tmp_path / "out" / "data" / "run-0.parquet")


def _config(tmp_path, model_dir, **kw):
    return GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), target=str(model_dir), **kw)


def test_n_samples_all_written_is_nothing_to_do(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 3)
    config = _config(tmp_path, model_dir, n=2, temperature=0.8)
    _output(tmp_path, config, range(3), [0, 1])
    assert resume.all_done(config) == (3, 6)


def test_a_missing_sample_is_work_left(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 3)
    config = _config(tmp_path, model_dir, n=2, temperature=0.8)
    _output(tmp_path, config, range(3), [0])  # every id, but only its first sample
    assert resume.all_done(config) is None


def test_per_row_n_from_the_sampling_params_column(tmp_path, model_dir):
    (tmp_path / "in").mkdir()
    structs = [{"n": 3}, None]
    pq.write_table(pa.table({"id": [0, 1], "prompt": ["a", "b"], "sampling_params": structs}),
                   tmp_path / "in" / "part.parquet")
    config = _config(tmp_path, model_dir)
    _output(tmp_path, config, [0, 1], [0])
    assert resume.all_done(config) is None  # id 0 asks for 3 samples
    _output(tmp_path, config, [0], [0, 1, 2])
    pq.write_table(pa.table({"id": [1], "sample_index": [0]}), tmp_path / "out" / "data" / "run-1.parquet")
    assert resume.all_done(config) == (2, 4)


def test_rerun_with_n_exits_before_ray(tmp_path, model_dir, monkeypatch, capsys):
    write_prompts(tmp_path / "in", 4)
    config = _config(tmp_path, model_dir, n=2, temperature=0.8, seed=1)
    _output(tmp_path, config, range(4), [0, 1])

    def forbidden(*args, **kwargs):
        raise AssertionError("must not run")
    monkeypatch.setattr(cluster, "init_ray", forbidden)
    began = time.monotonic()
    assert main(["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--target", str(model_dir), "--n", "2", "--temperature", "0.8", "--seed", "1"]) == 0
    assert time.monotonic() - began < 5
    assert "nothing to do: all 4 input rows (8 samples: every (id, sample_index)) are already in" \
        in capsys.readouterr().out


def test_the_refusal_counts_every_written_row_not_ids(tmp_path, model_dir):
    from pipeline.config import ConfigError

    write_prompts(tmp_path / "in", 30)
    config = _config(tmp_path, model_dir, n=2, temperature=0.8)
    _output(tmp_path, config, range(30), [0, 1])  # 60 rows, 30 ids
    job = resume.read_job_file(*open_fs(config.output))
    changed = _config(tmp_path, model_dir, n=2, temperature=0.5)
    with pytest.raises(ConfigError, match="delete the 60 rows already written"):
        resume.check_resumable(changed, job, *open_fs(config.output))
