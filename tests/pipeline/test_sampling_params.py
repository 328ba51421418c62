"""Job-wide sampling flags, the per-row sampling_params struct, n-sample expansion and the
(id, sample_index) keys that resume compares."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from pipeline import resume
from pipeline.config import ConfigError, GenerateConfig, parse_args
from pipeline.sampling_params import check_column_type, expand, sample_keys
from workers.row_params import row_params
from tests.pipeline.fakes import FakeEngine, make_model_dir
from workers.actor import GenerateUDF
from workers.api import SamplingParams

BASE = ["--input", "in", "--output", "/tmp/simsd-sampling-out", "--target", "t"]


def test_flags_build_the_job_params():
    c = parse_args(BASE + ["--n", "3", "--stop", "###", "--stop", "\n\n", "--stop-token-ids", "5,7",
                           "--min-tokens", "2", "--ignore-eos", "--seed", "9", "--logprobs", "2",
                           "--repetition-penalty", "1.2", "--presence-penalty", "0.5", "--temperature", "0.7"])
    assert c.sampling == SamplingParams(n=3, temperature=0.7, stop=("###", "\n\n"), stop_token_ids=(5, 7),
                                        min_tokens=2, ignore_eos=True, seed=9, logprobs=2,
                                        repetition_penalty=1.2, presence_penalty=0.5)
    assert parse_args(BASE).sampling == SamplingParams()  # defaults: one greedy sample, no stops, no logprobs


@pytest.mark.parametrize("flags,match", [
    (["--n", "0"], "--n: n must be"),
    (["--stop-token-ids", "a,b"], "comma-separated integers"),
    (["--logprobs", "99"], "--logprobs: logprobs must be"),
    (["--min-tokens", "300"], "min_tokens must be <= max_tokens"),
    (["--repetition-penalty", "0"], "--repetition-penalty"),
    (["--presence-penalty", "3"], "--presence-penalty"),
])
def test_bad_flags_are_config_errors(flags, match):
    with pytest.raises(ConfigError, match=match):
        parse_args(BASE + flags)


def test_fingerprint_covers_sampling_flags():
    a, b = parse_args(BASE), parse_args(BASE + ["--stop", "x"])
    assert a.fingerprint() != b.fingerprint() and "stop" in b.identity()


def test_row_struct_over_job_params():
    job = SamplingParams(temperature=0.5, max_tokens=20, stop=("a",))
    assert row_params(job, None) is job
    got = row_params(job, {"temperature": 1, "top_k": None, "stop": "END", "n": 2, "seed": 4})
    assert got == SamplingParams(temperature=1.0, max_tokens=20, stop=("END",), n=2, seed=4)
    assert row_params(job, {"stop_token_ids": [1, 2], "logprobs": 0}).stop_token_ids == (1, 2)


@pytest.mark.parametrize("struct,match", [
    ({"temperature": -1}, "sampling_params.temperature must be"),
    ({"top_p": 0}, "sampling_params.top_p"),
    ({"max_tokens": 0}, "max_tokens must be"),
    ({"stop": [""]}, "stop must be a list of non-empty strings"),
    ({"stop_token_ids": 5}, "stop_token_ids must be a list"),
    ({"best_of": 2}, "unknown field"),
    ({"n": True}, "n must be an integer"),
    ("fast", "must be a struct"),
])
def test_bad_row_values_are_messages(struct, match):
    got = row_params(SamplingParams(), struct)
    assert isinstance(got, str) and match in got


def test_expand_repeats_rows_per_n():
    batch = pa.table({"id": [1, 2, 3], "sampling_params": [{"n": 2}, None, {"n": -1}]})
    out = expand(batch, SamplingParams(n=3))
    assert out.column("id").to_pylist() == [1, 1, 2, 2, 2, 3]  # a bad n gives one (error) row
    assert out.column("sample_index").to_pylist() == [0, 1, 0, 1, 2, 0]
    plain = expand(pa.table({"id": ["a", "b"]}), SamplingParams())
    assert plain.column("sample_index").to_pylist() == [0, 0]


def test_resume_keys_are_id_and_sample_index(tmp_path):
    fs = LocalFileSystem()
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"id": [1, 1, 2], "sample_index": [0, 1, 0]}), tmp_path / "data" / "a.parquet")
    pq.write_table(pa.table({"id": [3]}), tmp_path / "data" / "old.parquet")  # before n samples existed
    done = resume.done_keys(fs, str(tmp_path))
    want = sample_keys(pa.array([1, 1, 2, 3]), pa.array([0, 1, 0, 0]))
    assert sorted(done.to_pylist()) == sorted(want.to_pylist())
    assert sample_keys(pa.array([1]), pa.array([1])) != sample_keys(pa.array([11]), pa.array([0]))


def test_struct_column_type_is_checked():
    assert check_column_type(pa.schema([("sampling_params", pa.struct([("n", pa.int64())]))])) is None
    assert "must be a struct" in check_column_type(pa.schema([("sampling_params", pa.string())]))


class RecordingEngine(FakeEngine):
    def generate(self, requests):
        self.seen = list(requests)
        return super().generate(requests)


def test_actor_rows_carry_params_and_errors(tmp_path):
    model = make_model_dir(tmp_path / "model")
    config = GenerateConfig(input="x", output=str(tmp_path / "out"), target=str(model), max_new_tokens=3,
                            temperature=0.0, stop=["zz"])
    udf = GenerateUDF(config, RecordingEngine)
    batch = pa.table({"id": ["a", "a", "b"], "prompt": ["hello world"] * 3, "sample_index": [0, 1, 0],
                      "sampling_params": [{"temperature": 0.5, "seed": 3}, {"temperature": 0.5, "seed": 3},
                                          {"temperature": 500.0, "seed": None}]})
    out = udf(batch)
    assert out.column("sample_index").to_pylist() == [0, 1, 0]
    assert out.column("finish_reason").to_pylist()[2] == "error"
    assert "sampling_params.temperature" in out.column("error").to_pylist()[2]
    seen = udf.engine.seen
    assert [(r.row_id, r.sample_index, r.params.temperature, r.params.seed, r.params.stop) for r in seen] == \
        [("a", 0, 0.5, 3, ("zz",)), ("a", 1, 0.5, 3, ("zz",))]
    assert out.column("logprobs").to_pylist() == [None, None, None] and "stop_reason" in out.column_names


@pytest.mark.parametrize("remasking,temperature,refused", [
    ("static", 0.8, True), ("dynamic", 0.8, True), ("sequential", 0.8, False), ("static", 0.0, False)])
def test_validation_refuses_lossy_mrs(remasking, temperature, refused):
    from types import SimpleNamespace

    from pipeline.validate import check_lossless_sampling

    config = parse_args(BASE + ["--draft", "d", "--draft-remasking", remasking, "--temperature", str(temperature)])
    if refused:
        with pytest.raises(ConfigError, match="--draft-remasking sequential"):
            check_lossless_sampling(config, SimpleNamespace(is_diffusion=True))
    else:
        check_lossless_sampling(config, SimpleNamespace(is_diffusion=True))
    check_lossless_sampling(config, SimpleNamespace(is_diffusion=False))  # an AR draft is always fine
