"""What a new user meets first: flags and their messages, resume identity, nothing-to-do,
column pass-through, honest throughput, which Ray a job uses, and actors that cannot be placed."""
import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline import cluster, columns, resume, startup
from pipeline.config import ConfigError, GenerateConfig
from pipeline.storage import open_fs
from tests.pipeline.fakes import FakeEngine, make_model_dir
from tests.pipeline.helpers import finished_rows, read_output, write_prompts


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


def _error(capsys, argv) -> str:
    assert main(["generate", *argv]) == 2
    err = capsys.readouterr().err
    assert "simsd generate: error: " in err, err
    return err


def test_draft_without_decoder_means_simsd_and_vanilla_with_draft_is_refused(capsys):
    assert GenerateConfig(target="t", draft="d").decoder == "simsd"
    assert GenerateConfig(target="t").decoder == "vanilla"
    err = _error(capsys, ["--target", "t", "--draft", "d", "--decoder", "vanilla"])
    assert "--draft d is only used by --decoder simsd" in err


def test_output_required_with_input_and_never_inside_it(tmp_path, capsys):
    write_prompts(tmp_path / "in", 2)
    assert "--output is required with --input" in _error(capsys, ["--input", str(tmp_path / "in"), "--target", "t"])
    for output in (tmp_path / "in", f"{tmp_path}/in/", tmp_path / "in" / "out"):
        err = _error(capsys, ["--input", str(tmp_path / "in"), "--output", str(output), "--target", "t"])
        assert "is inside --input" in err and "--overwrite" not in err


def test_messages_name_flags_not_fields(capsys):
    assert "--max-new-tokens must be >= 1, got 0" in _error(capsys, ["--target", "t", "--max-new-tokens", "0"])
    assert "--placement-timeout-s must be > 0" in _error(capsys, ["--target", "t", "--placement-timeout-s", "0"])


def test_help_shows_defaults_and_demo_mode(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Demo mode" in text and "(default: 256)" in text and "(default: 300.0)" in text
    assert "--draft alone means simsd" not in text or "simsd when --draft is given" in text


def _finished_output(tmp_path, config: GenerateConfig, ids) -> None:
    """An output as a finished run leaves it: _job.json and one data file."""
    fs, out = open_fs(config.output)
    resume.write_job_file(fs, out, config)
    (tmp_path / "out" / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(finished_rows(list(ids)), tmp_path / "out" / "data" / "run-0.parquet")


def test_resume_compares_normalised_paths_and_lists_old_and_new_values(tmp_path, monkeypatch, model_dir):
    monkeypatch.chdir(tmp_path)
    write_prompts(tmp_path / "prompts", 4)
    first = GenerateConfig(input="prompts/", output="out/", target=str(model_dir))
    _finished_output(tmp_path, first, range(2))
    job = resume.read_job_file(*open_fs("out"))
    for spelling in ("prompts", str(tmp_path / "prompts"), f"file://{tmp_path}/prompts", "./prompts/"):
        resume.check_resumable(GenerateConfig(input=spelling, output="out", target=str(model_dir) + "/"), job)
    with pytest.raises(ConfigError) as err:
        resume.check_resumable(GenerateConfig(input="prompts", output="out", target=str(model_dir),
                                              temperature=0.5), job, *open_fs("out"))
    assert "--temperature: 0.0 -> 0.5" in str(err.value) and "--overwrite" in str(err.value)
    assert "the 2 rows already written" in str(err.value)
    write_prompts(tmp_path / "moved", 4)
    moved = GenerateConfig(input="moved", output="out", target=str(model_dir))
    with pytest.raises(ConfigError, match=r"--input: '.*/prompts' -> '.*/moved'.*--resume-anyway"):
        resume.check_resumable(moved, job)
    resume.check_resumable(GenerateConfig(input="moved", output="out", target=str(model_dir), resume_anyway=True), job)


def test_nothing_to_do_exits_at_once_without_ray_or_models(tmp_path, monkeypatch, model_dir, capsys):
    import pipeline.driver
    import pipeline.validate

    write_prompts(tmp_path / "in", 6)
    config = GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), target=str(model_dir))
    _finished_output(tmp_path, config, range(6))

    def forbidden(*args, **kwargs):
        raise AssertionError("must not run")
    monkeypatch.setattr(pipeline.driver, "run", forbidden)
    monkeypatch.setattr(pipeline.validate, "check_model", forbidden)
    monkeypatch.setattr(cluster, "init_ray", forbidden)
    started = time.monotonic()
    assert main(["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--target", str(model_dir)]) == 0
    assert time.monotonic() - started < 5
    assert "nothing to do: all 6 input rows are already in" in capsys.readouterr().out
    # One id missing: there is work, so the normal path (here: the forbidden validate) runs.
    write_prompts(tmp_path / "in", 7)
    assert main(["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--target", str(model_dir)]) == 1
    assert "AssertionError: must not run" in capsys.readouterr().err


def _schema(*names):
    return pa.schema([(n, pa.int64() if n in ("id", "max_new_tokens") else pa.string()) for n in names])


def test_passthrough_columns_chosen_and_clashes_refused():
    schema = _schema("id", "prompt", "qid", "answer", "max_new_tokens")
    config = GenerateConfig(target="t")
    assert columns.passthrough(config, schema).names == ["qid", "answer"]
    assert columns.passthrough(GenerateConfig(target="t", keep_columns="answer"), schema).names == ["answer"]
    assert columns.passthrough(GenerateConfig(target="t", keep_columns=""), schema).names == []
    kept = columns.passthrough(GenerateConfig(target="t", keep_prompt=True), schema).names
    assert kept == ["prompt", "qid", "answer"]
    with pytest.raises(ConfigError, match="--keep-columns names 'nope'"):
        columns.passthrough(GenerateConfig(target="t", keep_columns="qid,nope"), schema)
    with pytest.raises(ConfigError, match="--input column 'error' has the name of an output column"):
        columns.passthrough(config, _schema("id", "prompt", "error"))


def test_carry_aligns_by_id_with_several_samples_per_row():
    batch = pa.table({"id": [7, 8], "qid": ["a", "b"]})
    out = pa.table({"id": [8, 7, 8], "generated_text": ["x", "y", "z"]})
    keep = pa.schema([("qid", pa.string()), ("answer", pa.string())])  # 'answer' absent from this file
    carried = columns.carry(out, batch, keep, "id")
    assert carried.column("qid").to_pylist() == ["b", "a", "b"]
    assert carried.column("answer").to_pylist() == [None, None, None]


def test_run_carries_columns_and_fills_throughput(ray_local, tmp_path, model_dir):
    from pipeline import driver

    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": list(range(8)), "prompt": ["hello world"] * 8, "qid": [f"q{i}" for i in range(8)],
                             "answer": [str(i) for i in range(8)]}), tmp_path / "in" / "p.parquet")
    config = GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), target=str(model_dir),
                            max_new_tokens=4, batch_size=4, device="cpu")
    stats = driver.run(config, engine_factory=FakeEngine)
    table = read_output(tmp_path / "out")
    assert "prompt" not in table.column_names
    rows = {r["id"]: (r["qid"], r["answer"]) for r in table.select(["id", "qid", "answer"]).to_pylist()}
    assert rows == {i: (f"q{i}", str(i)) for i in range(8)}
    for key in ("tokens_per_s", "tokens_per_s_e2e", "startup_s", "time_to_first_row_s"):
        assert isinstance(stats[key], float) and stats[key] >= 0, key
    assert stats["tokens_per_s"] > stats["tokens_per_s_e2e"] > 0  # start-up is outside the decode window
    # Start-up phases: all known, consecutive up to the end of the first engine call, whose rows
    # are the first ones written; the phases before that call end before its first row began.
    parts = json.loads(stats["startup_breakdown"])
    assert set(parts) == {*startup.PHASES, *startup.COUNTS, "load", "actor_cpus"}, parts
    assert all(isinstance(parts[k], float) and parts[k] >= 0 for k in startup.PHASES), parts
    assert abs(sum(parts[k] for k in startup.PHASES) - stats["time_to_first_row_s"]) < 0.5, parts
    before_call = sum(parts[k] for k in startup.PHASES[:5])
    assert before_call <= stats["startup_s"] + 0.05, (parts, stats["startup_s"])
    assert "startup_breakdown" in stats["runs"][-1]


def test_default_is_a_private_local_ray(monkeypatch):
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    said = []
    cluster.init_ray(GenerateConfig(target="t"), say=said.append)
    assert calls[-1]["address"] == "local" and "started a private local Ray" in said[-1]
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    cluster.init_ray(GenerateConfig(target="t"), say=said.append)
    assert calls[-1]["address"] == "10.0.0.1:6379" and "from RAY_ADDRESS" in said[-1]
    cluster.init_ray(GenerateConfig(target="t", address="auto"), say=said.append)
    assert calls[-1]["address"] == "auto" and "from --address" in said[-1]


def test_unplaceable_actors_fail_naming_the_missing_resources(ray_local, tmp_path, model_dir):
    from pipeline import driver

    write_prompts(tmp_path / "in", 4)
    config = GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), target=str(model_dir),
                            device="cpu", gpus_per_worker=1, workers=1, placement_timeout_s=3)
    started = time.monotonic()
    with pytest.raises(cluster.PlacementTimeout, match="lacks 1 GPU") as err:
        driver.run(config, engine_factory=FakeEngine)
    assert "--placement-timeout-s 3" in str(err.value)
    assert time.monotonic() - started < 60
    assert json.loads((tmp_path / "out" / "_job.json").read_text())["fingerprint"]  # output left resumable
