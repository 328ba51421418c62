"""`simsd prepare` on OpenAI batch files: detected, read into id/messages/sampling_params columns,
and every request it cannot honour refused by name and line number (exit 2)."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main

# As OpenAI's batch guide shows them (two lines verbatim), plus one with temperature, top_p, stop, seed.
DOCS_BATCH = """\
{"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-3.5-turbo-0125", "messages": [{"role": "system", "content": "You are a helpful assistant."},{"role": "user", "content": "Hello world!"}],"max_tokens": 1000}}
{"custom_id": "request-2", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-3.5-turbo-0125", "messages": [{"role": "system", "content": "You are an unhelpful assistant."},{"role": "user", "content": "Hello world!"}],"max_tokens": 1000}}
{"custom_id": "request-3", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Count to 3."}], "max_completion_tokens": 20, "temperature": 0.7, "top_p": 0.9, "stop": "4", "seed": 11, "n": 2, "stream": false, "user": "team-a"}}
"""


def _request(custom_id="r1", url="/v1/chat/completions", **body) -> dict:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _write(tmp_path, *lines, name="batch.jsonl"):
    path = tmp_path / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _prepare(path, out, *extra) -> int:
    return main(["prepare", "--input", str(path), "--output", str(out), *extra])


def _refused(capsys, tmp_path, *lines, extra=()) -> str:
    assert _prepare(_write(tmp_path, *lines), tmp_path / "out", *extra) == 2
    assert not (tmp_path / "out").exists()
    return capsys.readouterr().err


def test_the_docs_batch_file_becomes_prompt_columns(tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_text(DOCS_BATCH)
    assert _prepare(path, tmp_path / "out") == 0
    table = pq.read_table(tmp_path / "out")
    assert table.column_names == ["id", "messages", "sampling_params", "model"]
    assert table.schema.field("messages").type == pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == ["request-1", "request-2", "request-3"]
    assert rows[0]["messages"] == [{"role": "system", "content": "You are a helpful assistant."},
                                   {"role": "user", "content": "Hello world!"}]
    assert rows[2]["messages"] == [{"role": "user", "content": "Count to 3."}]
    assert rows[0]["sampling_params"] == {"n": None, "temperature": None, "top_p": None, "max_tokens": 1000,
                                          "stop": None, "seed": None}
    assert rows[2]["sampling_params"] == {"n": 2, "temperature": 0.7, "top_p": 0.9, "max_tokens": 20,
                                          "stop": ["4"], "seed": 11}
    assert [r["model"] for r in rows] == ["gpt-3.5-turbo-0125", "gpt-3.5-turbo-0125", "gpt-4o-mini"]


def test_completions_endpoint_gives_a_prompt_column_and_shards_split_it(tmp_path):
    lines = [_request(f"c{i}", url="/v1/completions", prompt=f"Once upon a time {i}", messages=None, top_k=5)
             for i in range(3)]
    for line in lines:
        del line["body"]["messages"], line["body"]["model"]
    assert _prepare(_write(tmp_path, *lines, ""), tmp_path / "out", "--shards", "2") == 0
    files = sorted((tmp_path / "out").glob("*.parquet"))
    assert [f.name for f in files] == ["prompts-00000-of-00002.parquet", "prompts-00001-of-00002.parquet"]
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    assert rows == [{"id": f"c{i}", "prompt": f"Once upon a time {i}", "sampling_params": {"top_k": 5}}
                    for i in range(3)]


def test_format_flag_forces_either_reading(tmp_path):
    path = _write(tmp_path, _request("a"), name="requests.txt")  # no .jsonl: not detected
    assert _prepare(path, tmp_path / "out", "--format", "openai-batch") == 0
    assert pq.read_table(tmp_path / "out").column("id").to_pylist() == ["a"]
    plain = _write(tmp_path, _request("b"))
    assert _prepare(plain, tmp_path / "plain", "--format", "dataset", "--prompt-field", "custom_id") == 0
    assert pq.read_table(tmp_path / "plain").column("prompt").to_pylist() == ["b"]


@pytest.mark.parametrize("body, named", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "body field(s) tools not supported"),
    ({"logit_bias": {"50256": -100}, "response_format": {"type": "json_object"}},
     "body field(s) logit_bias, response_format not supported"),
    ({"logprobs": True}, "body.logprobs = True is not supported"),
    ({"frequency_penalty": 0.5}, "body.frequency_penalty = 0.5 is not supported"),
    ({"max_tokens": 0}, "body: max_tokens must be an integer >= 1, got 0"),
    ({"temperature": "hot"}, "body: temperature must be a number"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "body.messages[0].role 'tool' is not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
     "body.messages[0].content must be a string"),
    ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "body.messages[0] has field(s) name"),
])
def test_unsupported_body_fields_are_refused_by_name_and_line(tmp_path, capsys, body, named):
    err = _refused(capsys, tmp_path, _request("ok"), _request("bad", **body))
    assert "simsd prepare: error:" in err and f"line 2: {named}" in err, err
    assert "line 1" not in err


def test_bad_url_method_and_mixed_endpoints_are_refused(tmp_path, capsys):
    embeddings = {**_request("e"), "url": "/v1/embeddings"}
    get = {**_request("g"), "method": "GET"}
    completions = _request("c", url="/v1/completions", prompt="x", messages=None)
    del completions["body"]["messages"]
    err = _refused(capsys, tmp_path, _request("a"), embeddings, get, completions)
    assert "line 2: url '/v1/embeddings' is not supported (supported: /v1/chat/completions, /v1/completions)" in err
    assert "line 3: method must be POST, got 'GET'" in err
    assert "line 4: url '/v1/completions' differs from the first request's '/v1/chat/completions'" in err


def test_duplicate_custom_id_and_malformed_lines_are_refused(tmp_path, capsys):
    err = _refused(capsys, tmp_path, _request("a"), _request("b"), '{"custom_id": "c", "method": "POST",',
                   _request("a"), "[1, 2]", {**_request("d"), "extra": 1}, {"custom_id": "e", "body": {}})
    assert "line 3: not valid JSON" in err
    assert "line 4: custom_id 'a' repeats line 1's; custom_ids must be unique" in err
    assert "line 5: a request must be a JSON object, got list" in err
    assert "line 6: a request has exactly the keys custom_id, method, url, body; unknown extra" in err
    assert "line 7: a request has exactly the keys custom_id, method, url, body; missing method, url" in err
    assert "line 1:" not in err and "line 2:" not in err


def test_a_malformed_first_line_is_still_read_as_a_batch_file(tmp_path, capsys):
    err = _refused(capsys, tmp_path, '{"custom_id": "a", "method": "POST"', _request("b"))
    assert "line 1: not valid JSON" in err


def test_dataset_flags_do_not_apply_to_a_batch_file(tmp_path, capsys):
    err = _refused(capsys, tmp_path, _request("a"), extra=("--keep-columns", "model"))
    assert "--keep-columns do(es) not apply to an OpenAI batch file" in err
