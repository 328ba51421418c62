"""Rows an attacker or a broken export can produce: invalid UTF-8, tokenizer failures, engine
failures on one row. Each becomes an error row; the batch and the job go on."""
import pyarrow as pa
import pytest

from pipeline.config import GenerateConfig
from tests.pipeline.fakes import FakeEngine, make_model_dir
from workers.actor import GenerateUDF


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    model = make_model_dir(tmp_path_factory.mktemp("model"))
    return GenerateConfig(input="x", output=str(model.parent / "out"), target=str(model), max_new_tokens=2)


def test_invalid_utf8_row_is_an_error_row(config):
    raw = pa.array([b"hello world", b"\xff\xfe bad \xc3", b"the sea"], pa.binary())
    prompts = raw.view(pa.string())  # what a Parquet file with broken text reads back as
    with pytest.raises(Exception):
        prompts.validate(full=True)
    out = GenerateUDF(config, FakeEngine)(pa.table({"id": [1, 2, 3], "prompt": prompts}))
    assert out.column("id").to_pylist() == [1, 2, 3]
    assert out.column("finish_reason").to_pylist() == ["length", "error", "length"]
    assert "cannot be read" in out.column("error")[1].as_py()


def test_tokenizer_exception_is_an_error_row(config):
    class Raising(FakeEngine):
        def __init__(self, config):
            super().__init__(config)
            real = self.tokenizer.tokenizer.encode

            def encode(text, **kw):
                if "sea" in text:
                    raise BaseException("tokenizer panicked")  # like pyo3's PanicException
                return real(text, **kw)
            self.tokenizer.tokenizer.encode = encode
    out = GenerateUDF(config, Raising)(pa.table({"id": [1, 2], "prompt": ["the sea", "hello"]}))
    assert out.column("finish_reason").to_pylist() == ["error", "length"]
    assert "tokenizer panicked" in out.column("error")[0].as_py()


def test_one_row_failing_in_the_engine_is_an_error_row(config):
    released = []

    class OneBadRow(FakeEngine):
        def generate(self, requests):
            poison = self.tokenizer.encode_prompt(prompt="sea", use_chat_template=False)[0]
            if any(poison in r.prompt_ids for r in requests):
                raise IndexError("index out of range in the engine")
            return super().generate(requests)

        def release_caches(self):
            released.append(1)
    prompts = ["hello", "world", "the sea", "hello world"]
    out = GenerateUDF(config, OneBadRow)(pa.table({"id": [1, 2, 3, 4], "prompt": prompts}))
    assert out.column("finish_reason").to_pylist() == ["length", "length", "error", "length"]
    assert "IndexError" in out.column("error")[2].as_py()
    assert released  # the failed call's caches were released before the retry


def test_overlong_text_is_refused_by_its_length_before_tokenizing(config):
    """A 45 MB prompt cost 111 s and 9.5 GB before it became an error row (issue 25)."""
    class Counting(FakeEngine):
        def __init__(self, config):
            super().__init__(config)
            real, self.seen = self.tokenizer.encode_prompt, []

            def encode_prompt(**kw):
                self.seen.append(kw)
                return real(**kw)
            self.tokenizer.encode_prompt = encode_prompt
    limit = FakeEngine.max_prompt_tokens * 64
    huge = "hello " * (limit // 6 + 1)
    udf = GenerateUDF(config, Counting)
    out = udf(pa.table({"id": [1, 2], "prompt": [huge, "hello"]}))
    assert out.column("finish_reason").to_pylist() == ["error", "length"]
    assert f"more than the {limit}" in out.column("error")[0].as_py()
    assert len(udf.engine.seen) == 1  # the long one was never tokenized
    messages = [[{"role": "user", "content": huge}]]
    chat = GenerateUDF(GenerateConfig(input="x", target=config.target, messages_column="messages",
                                      max_new_tokens=2), Counting)
    out = chat(pa.table({"id": [3], "messages": messages}))
    assert "not tokenized" in out.column("error")[0].as_py() and chat.engine.seen == []
