"""build_processor: the `simsd generate` stage applied to a user's own Ray Dataset."""
from __future__ import annotations

import pyarrow as pa
import pytest

import simsd
from pipeline.config import ConfigError
from pipeline.processor import ProcessorUDF, as_config
from tests.pipeline.fakes import FakeEngine, make_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


def _settings(model_dir, **kw) -> dict:
    return {"target": str(model_dir), "max_new_tokens": 4, "batch_size": 4, "device": "cpu", "workers": 1, **kw}


@pytest.mark.slow
def test_inside_a_user_pipeline(ray_local, model_dir):
    """Slow (~1 min on 2 shared CPUs): a Ray Data job with an actor pool."""
    rows = [{"id": i, "question": q, "topic": f"t{i}"}
            for i, q in enumerate(["hello world", "write a haiku", "about the sea", "", "what is", "name"])]
    processor = simsd.build_processor(
        _settings(model_dir),
        preprocess=lambda row: {**row, "prompt": row["question"]},
        postprocess=lambda row: {**row, "answer_words": len((row["generated_text"] or "").split())},
        engine_factory=FakeEngine)
    ds = ray_local.data.from_items(rows).filter(lambda row: row["id"] != 5)   # the user's own step before
    ds = processor(ds).map(lambda row: {**row, "checked": True})              # ... and after
    out = sorted(ds.take_all(), key=lambda r: r["id"])

    assert [r["id"] for r in out] == [0, 1, 2, 3, 4]
    assert all(r["checked"] for r in out)
    assert [r["topic"] for r in out] == ["t0", "t1", "t2", "t3", "t4"]     # input columns pass through
    assert out[1]["question"] == "write a haiku" and out[1]["prompt"] == "write a haiku"
    good = [r for r in out if r["id"] != 3]
    assert all(r["finish_reason"] == "length" and r["num_generated_tokens"] == 4 for r in good)
    assert all(r["answer_words"] == len(r["generated_text"].split()) for r in good)
    bad = out[3]                                                           # the empty prompt: an error row
    assert bad["finish_reason"] == "error" and "null or empty" in bad["error"] and bad["generated_text"] is None


def _udf(model_dir, **kw) -> ProcessorUDF:
    return ProcessorUDF(as_config(_settings(model_dir, **kw)), FakeEngine, pass_through=True)


def test_rows_without_an_id_column(model_dir):
    out = _udf(model_dir)(pa.table({"prompt": ["hello", "hello world"], "extra": [1, 2]}))
    assert "id" not in out.column_names
    assert out.column("extra").to_pylist() == [1, 2]
    assert out.column("num_generated_tokens").to_pylist() == [4, 4]


def test_sampling_params_per_row(model_dir):
    """Per-row structs are the actor's: n expands into sample rows, bad values are error rows."""
    params = [{"n": 3}, None, {"temperature": 300.0}, {"bogus": 1}]
    batch = pa.table({"id": [10, 11, 12, 13], "prompt": ["hello world"] * 4, "sampling_params": params,
                      "topic": ["a", "b", "c", "d"]})
    out = _udf(model_dir)(batch).to_pylist()
    assert [(r["id"], r["sample_index"]) for r in out] == [(10, 0), (10, 1), (10, 2), (11, 0), (12, 0), (13, 0)]
    assert [r["topic"] for r in out] == ["a", "a", "a", "b", "c", "d"]     # each sample keeps its row's columns
    assert all(r["finish_reason"] == "length" and r["num_generated_tokens"] == 4 for r in out[:4])
    assert out[4]["finish_reason"] == "error" and "temperature" in out[4]["error"]
    assert out[5]["finish_reason"] == "error" and "unknown field(s) bogus" in out[5]["error"]
    assert out[5]["generated_text"] is None


def test_job_wide_n_without_an_id_column(model_dir):
    out = _udf(model_dir, n=2)(pa.table({"prompt": ["hello", "hello world"]}))
    assert "id" not in out.column_names and out.column("sample_index").to_pylist() == [0, 1, 0, 1]
    assert out.column("prompt").to_pylist() == ["hello", "hello", "hello world", "hello world"]


def test_validation_at_build_time(tmp_path, model_dir):
    with pytest.raises(ConfigError, match="unknown setting"):
        simsd.build_processor(_settings(model_dir, max_tokens=3))
    with pytest.raises(ConfigError, match="^target: ") as err:  # keyword terms, not --target
        simsd.build_processor(_settings(model_dir, target=str(tmp_path / "missing")))
    assert "--" not in str(err.value)
    with pytest.raises(ConfigError, match="^batch_size must be >= 1"):
        simsd.build_processor(_settings(model_dir, batch_size=0))
    with pytest.raises(ConfigError, match="must be a GenerateConfig or a dict"):
        simsd.build_processor(["target", str(model_dir)])


def test_missing_prompt_column_is_refused_when_the_schema_is_known(ray_local, model_dir):
    processor = simsd.build_processor(_settings(model_dir), engine_factory=FakeEngine)
    with pytest.raises(ConfigError, match="no column 'prompt'"):
        processor(ray_local.data.from_items([{"id": 1, "text": "hello"}]).materialize())
