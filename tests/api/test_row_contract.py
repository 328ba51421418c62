"""Rows as Ray Data LLM users write them: a `messages` column (chat) or a `prompt` column (text),
an optional `sampling_params` struct, no column settings; errors in keyword terms."""
from __future__ import annotations

import pyarrow as pa
import pytest

import simsd
from pipeline.config import ConfigError
from pipeline.processor import ProcessorUDF, as_config
from tests.pipeline.fakes import FakeEngine
from workers.text.tokenizer import load_tokenizer

CHAT = [[{"role": "user", "content": "hello world"}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the sea"}]]
TEXT = ["the sea", "what is a haiku"]


def _settings(model, **kw) -> dict:
    return {"target": str(model), "max_new_tokens": 2, "batch_size": 4, "device": "cpu", "workers": 1, **kw}


def _udf(model, **kw) -> ProcessorUDF:
    return ProcessorUDF(as_config(_settings(model, **kw)), FakeEngine, pass_through=True)


def _input_tokens(model, messages=None, prompt=None) -> int:
    return len(load_tokenizer(model).encode_prompt(prompt=prompt, messages=messages))


def test_messages_rows_with_sampling_params_need_no_setting(tiny_models):
    model = tiny_models["target"]
    batch = pa.table({"id": [1, 2], "messages": CHAT, "sampling_params": [{"n": 2}, None]})
    out = _udf(model)(batch).to_pylist()
    assert [(r["id"], r["sample_index"]) for r in out] == [(1, 0), (1, 1), (2, 0)]  # the row's n, else 1
    assert [r["error"] for r in out] == [None] * 3
    assert [r["num_generated_tokens"] for r in out] == [2] * 3
    assert [r["num_input_tokens"] for r in out] == [_input_tokens(model, messages=CHAT[0])] * 2 + \
        [_input_tokens(model, messages=CHAT[1])]
    assert out[2]["messages"] == CHAT[1]                                  # carried, as every input column


def test_prompt_rows_with_sampling_params_need_no_setting(tiny_models):
    model = tiny_models["target"]
    out = _udf(model)(pa.table({"prompt": TEXT, "sampling_params": [None, {"n": 2}]})).to_pylist()
    assert [(r["prompt"], r["sample_index"]) for r in out] == [(TEXT[0], 0), (TEXT[1], 0), (TEXT[1], 1)]
    assert [r["error"] for r in out] == [None] * 3
    assert [r["num_input_tokens"] for r in out] == [_input_tokens(model, prompt=p) for p in (TEXT[0], *TEXT[1:] * 2)]


def test_both_columns_need_a_setting_that_picks_one(tiny_models):
    model = tiny_models["target"]
    batch = pa.table({"id": [1, 2], "prompt": TEXT, "messages": CHAT})
    with pytest.raises(ConfigError, match="has both a 'prompt' and a 'messages' column") as err:
        _udf(model)(batch)
    assert "prompt_column='prompt'" in str(err.value) and "messages_column='messages'" in str(err.value)
    assert "--" not in str(err.value)
    as_text = _udf(model, prompt_column="prompt")(batch).column("num_input_tokens").to_pylist()
    as_chat = _udf(model, messages_column="messages")(batch).column("num_input_tokens").to_pylist()
    assert as_text == [_input_tokens(model, prompt=p) for p in TEXT]
    assert as_chat == [_input_tokens(model, messages=m) for m in CHAT]
    assert as_text != as_chat


def test_known_schema_checks_name_keywords(ray_local, tiny_models):
    both = ray_local.data.from_items([{"id": 1, "prompt": TEXT[0], "messages": CHAT[0]}])
    with pytest.raises(ConfigError, match="the Dataset has both") as err:
        simsd.build_processor(_settings(tiny_models["target"]), engine_factory=FakeEngine)(both)
    assert "prompt_column='prompt'" in str(err.value) and "--" not in str(err.value)

    chat = ray_local.data.from_items([{"id": 1, "messages": CHAT[0]}])
    processor = simsd.build_processor(_settings(tiny_models["target"], prompt_column="prompt"),
                                      engine_factory=FakeEngine)
    with pytest.raises(ConfigError, match=r"no column 'prompt' \(columns: id, messages\); pass prompt_column=$") as err:
        processor(chat)
    assert "--prompt-column" not in str(err.value)
    with pytest.raises(ConfigError, match="batch_size must be >= 1") as err:
        simsd.build_processor(_settings(tiny_models["target"], batch_size=0))
    assert "--batch-size" not in str(err.value)


@pytest.mark.slow
def test_messages_dataset_through_build_processor(ray_local, tiny_models):
    """Slow (a Ray Data job with an actor pool, ~15 s on 2 CPUs): the issue's example, with its
    schema known, and with the messages column made by a preprocess step (schema unknown)."""
    model = tiny_models["target"]
    processor = simsd.build_processor(_settings(model), engine_factory=FakeEngine)
    rows = [{"id": i, "messages": m, "sampling_params": {"n": 2 - i}} for i, m in enumerate(CHAT)]
    built = simsd.build_processor(_settings(model), engine_factory=FakeEngine,
                                  preprocess=lambda row: {"id": row["id"], "messages": CHAT[row["id"]]})
    made = built(ray_local.data.from_items([{"id": i} for i in range(len(CHAT))]))
    expected = {i: _input_tokens(model, messages=m) for i, m in enumerate(CHAT)}
    for ds, ids in ((processor(ray_local.data.from_items(rows)), [0, 0, 1]), (made, [0, 1])):
        out = sorted(ds.take_all(), key=lambda r: (r["id"], r.get("sample_index") or 0))
        assert [r["id"] for r in out] == ids                               # n samples from sampling_params
        assert [r["error"] for r in out] == [None] * len(ids)
        assert [r["num_input_tokens"] for r in out] == [expected[i] for i in ids]
