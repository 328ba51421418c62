"""Bad rows get finish_reason "error" and a message; they never stop a job, and every input id
comes out exactly once. One Ray Data job per input style (text prompts, chat messages), each
mixing every kind of bad row with good ones."""
import math

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import driver
from pipeline.config import GenerateConfig
from pipeline.validate import validate
from tests.pipeline.fakes import FakeEngine
from tests.pipeline.helpers import read_output

LONG = "hello " * 400  # far more tokens than the fake engine's 48-token prompt limit


def _run(tmp_path, model, table, **kw):
    (tmp_path / "in").mkdir()
    pq.write_table(table.slice(0, 6), tmp_path / "in" / "a.parquet")
    pq.write_table(table.slice(6), tmp_path / "in" / "b.parquet")
    config = GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), target=str(model),
                            max_new_tokens=4, batch_size=2, device="cpu", **kw)
    validate(config)  # bad rows are not a config error
    stats = driver.run(config, engine_factory=FakeEngine)
    out = read_output(tmp_path / "out")
    ids = out.column("id").to_pylist()
    assert sorted(ids) == sorted(table.column("id").to_pylist()) and len(set(ids)) == len(ids)
    return {r["id"]: r for r in out.to_pylist()}, stats


def _assert_error(row, fragment):
    assert row["finish_reason"] == "error" and fragment in row["error"], row
    assert row["generated_text"] is None and row["generated_token_ids"] == []


def _assert_good(row, tokens=4):
    assert row["finish_reason"] == "length" and row["error"] is None, row
    assert row["num_generated_tokens"] == tokens


def test_bad_text_prompts_and_overrides(ray_local, tmp_path, tiny_models):
    rows = [  # id, prompt, max_new_tokens, temperature, expected error fragment (None: good)
        (0, "hello world", None, None, None),
        (1, None, None, None, "null or empty"),
        (2, "", None, None, "null or empty"),
        (3, "   \n\t", None, None, "null or empty"),
        (4, LONG, None, None, "limit"),
        (5, "write a haiku", 0, None, "max_new_tokens override"),
        (6, "write a haiku", -3, None, "max_new_tokens override"),
        (7, "write a haiku", 10**9, None, "exceeds the model's context"),
        (8, "write a haiku", None, -0.5, "temperature override"),
        (9, "write a haiku", None, math.nan, "temperature override"),
        (10, "write a haiku", None, 1e9, "temperature override"),
        (11, "about the sea", 2, 0.7, None),
        (12, "héllo wörld ✓ 日本語", None, 0.0, None),
        (13, "hello", None, None, None),
    ]
    table = pa.table({"id": [r[0] for r in rows], "prompt": [r[1] for r in rows],
                      "max_new_tokens": pa.array([r[2] for r in rows], pa.int64()),
                      "temperature": pa.array([r[3] for r in rows], pa.float64())})
    out, stats = _run(tmp_path, tiny_models["target"], table)
    for id_, _, max_new, _, fragment in rows:
        if fragment is None:
            _assert_good(out[id_], tokens=max_new or 4)
        else:
            _assert_error(out[id_], fragment)
    assert stats["errors"] == sum(r[4] is not None for r in rows)


def test_malformed_chat_messages(ray_local, tmp_path, tiny_models):
    user = lambda text: {"role": "user", "content": text}  # noqa: E731
    rows = [  # id, messages, expected error fragment
        ("a", [user("hello world")], None),
        ("b", None, "is null"),
        ("c", [], "empty messages"),
        ("d", [{"role": None, "content": "hi"}], "string 'role' and 'content'"),
        ("e", [{"role": "user", "content": None}], "string 'role' and 'content'"),
        ("f", [user(LONG)], "limit"),
        ("g", [{"role": "system", "content": "be brief"}, user("write a haiku")], None),
        ("h", [user("the sea")], None),
    ]
    mtype = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    table = pa.table({"id": [r[0] for r in rows], "messages": pa.array([r[1] for r in rows], mtype)})
    out, stats = _run(tmp_path, tiny_models["target"], table, messages_column="messages")
    for id_, _, fragment in rows:
        if fragment is None:
            _assert_good(out[id_])
        else:
            _assert_error(out[id_], fragment)
    assert stats["errors"] == sum(r[2] is not None for r in rows)
