"""The row contract of GenerateUDF: one output per input, in order, per-row errors as data."""
import pyarrow as pa
import pytest

from pipeline.config import GenerateConfig
from tests.pipeline.fakes import FakeEngine, make_model_dir
from workers.actor import OUTPUT_SCHEMA_TAIL, GenerateUDF


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


def _udf(model_dir, **kw):
    return GenerateUDF(GenerateConfig(input="x", target=str(model_dir), max_new_tokens=3, **kw), FakeEngine)


def test_rows_and_errors(model_dir):
    batch = pa.table({
        "id": [10, 11, 12, 13, 14],
        "prompt": ["hello world", None, "", "w1 " * 60, "write a haiku"],
        "max_new_tokens": [None, None, None, None, 0],
    })
    out = _udf(model_dir)(batch)
    assert out.column_names == ["id"] + [n for n, _ in OUTPUT_SCHEMA_TAIL]
    assert out.column("id").to_pylist() == [10, 11, 12, 13, 14]
    reasons = out.column("finish_reason").to_pylist()
    assert reasons == ["length", "error", "error", "error", "error"]
    errors = out.column("error").to_pylist()
    assert errors[0] is None and "null or empty" in errors[1] and "limit" in errors[3]
    assert "max_new_tokens" in errors[4]
    assert out.column("num_generated_tokens").to_pylist()[0] == 3
    assert out.column("generated_token_ids").type == pa.list_(pa.int64())


def test_messages_column_without_chat_template_is_a_row_error(model_dir):
    batch = pa.table({"id": ["a"], "messages": [[{"role": "user", "content": "hello"}]]})
    out = _udf(model_dir, messages_column="messages")(batch)
    assert out.column("finish_reason").to_pylist() == ["error"]
    assert "chat template" in out.column("error")[0].as_py()
