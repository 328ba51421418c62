"""`simsd export`: an OpenAI batch file through prepare -> generate (tiny real models) -> export,
and the result lines' fields from an output written with the real output schema."""
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline import resume
from pipeline.config import parse_args
from workers.actor import OUTPUT_SCHEMA_TAIL

CHAT = "/v1/chat/completions"


def _line(custom_id, messages, **body):
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT,
                       "body": {"model": "gpt-4o-mini", "messages": messages, **body}})


def _results(path) -> dict[str, dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["custom_id"] for r in lines] == sorted(r["custom_id"] for r in lines)
    return {r["custom_id"]: r for r in lines}


def test_batch_file_round_trip_through_the_real_pipeline(ray_local, tmp_path, tiny_models, capsys):
    (tmp_path / "batch.jsonl").write_text("\n".join([
        _line("greet", [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello world!"}],
              max_tokens=4),
        _line("twice", [{"role": "user", "content": "write a haiku"}], n=2, temperature=0.8, seed=3),
        _line("broken", [{"role": "user", "content": "hello"}], min_tokens=10),  # > the job's 6 new tokens
    ]) + "\n")
    assert main(["prepare", "--input", str(tmp_path / "batch.jsonl"), "--output", str(tmp_path / "in")]) == 0
    assert main(["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--target", str(tiny_models["target"]), "--messages-column", "messages",
                 "--max-new-tokens", "6", "--batch-size", "4", "--device", "cpu"]) == 0
    output = pq.read_table(tmp_path / "out" / "data").to_pylist()
    assert main(["export", str(tmp_path / "out"), "--to", str(tmp_path / "results.jsonl")]) == 0
    assert "wrote 3 result line(s)" in capsys.readouterr().out
    results = _results(tmp_path / "results.jsonl")
    assert set(results) == {"greet", "twice", "broken"}

    by_key = {(r["id"], r["sample_index"]): r for r in output}
    greet = results["greet"]
    assert greet["error"] is None and greet["id"].startswith("batch_req_")
    assert greet["response"]["status_code"] == 200 and greet["response"]["request_id"].startswith("req_")
    body, row = greet["response"]["body"], by_key[("greet", 0)]
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == str(tiny_models["target"]) and body["created"] == int(row["finished_at"])
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": row["generated_text"]},
                                "logprobs": None, "finish_reason": row["finish_reason"]}]
    assert row["num_generated_tokens"] <= 4 and row["finish_reason"] in ("stop", "length")
    assert body["usage"] == {"prompt_tokens": row["num_input_tokens"],
                             "completion_tokens": row["num_generated_tokens"],
                             "total_tokens": row["num_input_tokens"] + row["num_generated_tokens"]}

    twice = results["twice"]["response"]["body"]
    samples = [by_key[("twice", i)] for i in (0, 1)]
    assert [c["index"] for c in twice["choices"]] == [0, 1]
    assert [c["message"]["content"] for c in twice["choices"]] == [s["generated_text"] for s in samples]
    assert twice["usage"]["completion_tokens"] == sum(s["num_generated_tokens"] for s in samples)

    broken = results["broken"]
    assert broken["response"] is None
    assert broken["error"] == {"code": "generation_failed", "message": by_key[("broken", 0)]["error"]}
    assert "min_tokens must be <= max_tokens" in broken["error"]["message"]


def _output(tmp_path, rows: list[dict], messages: bool = True, summary: bool = True):
    """An output directory with _job.json, data/ in the real output schema and (optionally) a summary."""
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "in"), "--output", str(out), "--target", str(model), "--device", "cpu"]
    resume.write_job_file(fsspec.filesystem("file"), str(out),
                          parse_args(argv + (["--messages-column", "messages"] if messages else [])))
    schema = pa.schema([("id", pa.string()), *OUTPUT_SCHEMA_TAIL])
    full = [{name: row.get(name) for name in schema.names} for row in rows]
    (out / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(full, schema), out / "data" / "part-0.parquet")
    if summary:
        pq.write_table(pa.table({"rows": [len(rows)]}), out / "summary.parquet")
    return out


ROWS = [{"id": "b", "sample_index": 0, "generated_text": "Hi there.", "num_input_tokens": 12,
         "num_generated_tokens": 3, "finish_reason": "stop", "finished_at": 1711652795.6},
        {"id": "a", "sample_index": 0, "generated_text": None, "num_input_tokens": 9,
         "num_generated_tokens": 0, "finish_reason": "error", "error": "column 'messages' is null",
         "finished_at": 1711652796.0}]


def test_export_fields_from_the_output_schema(tmp_path):
    out = _output(tmp_path, ROWS)
    assert main(["export", str(out), "--to", str(tmp_path / "r.jsonl"), "--model", "sdar-8b"]) == 0
    results = _results(tmp_path / "r.jsonl")
    assert list(results) == ["a", "b"]
    assert results["a"]["response"] is None
    assert results["a"]["error"] == {"code": "generation_failed", "message": "column 'messages' is null"}
    body = results["b"]["response"]["body"]
    assert body == {"id": body["id"], "object": "chat.completion", "created": 1711652795, "model": "sdar-8b",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there."},
                                 "logprobs": None, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
    first = tmp_path / "r.jsonl"
    again = tmp_path / "again.jsonl"
    assert main(["export", str(out), "--to", str(again), "--model", "sdar-8b"]) == 0
    assert again.read_text() == first.read_text()  # ids are stable, not random


def test_prompt_column_jobs_export_text_completions(tmp_path):
    out = _output(tmp_path, ROWS[:1], messages=False)
    assert main(["export", str(out), "--to", str(tmp_path / "r.jsonl")]) == 0
    body = _results(tmp_path / "r.jsonl")["b"]["response"]["body"]
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"] == [{"index": 0, "text": "Hi there.", "logprobs": None, "finish_reason": "stop"}]
    assert body["model"] == str(tmp_path / "model")


def test_unfinished_or_foreign_outputs_are_refused(tmp_path, capsys):
    out = _output(tmp_path, ROWS, summary=False)
    assert main(["export", str(out), "--to", str(tmp_path / "r.jsonl")]) == 2
    assert "is not finished" in capsys.readouterr().err and not (tmp_path / "r.jsonl").exists()
    assert main(["export", str(out), "--to", str(tmp_path / "r.jsonl"), "--allow-incomplete"]) == 0
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2
    (tmp_path / "other").mkdir()
    assert main(["export", str(tmp_path / "other"), "--to", str(tmp_path / "x.jsonl")]) == 2
    assert "not a simsd generate output (no _job.json)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--to", "r.jsonl", "--format", "csv"], "argument --format: invalid choice: 'csv'"),
    (["--to", "r.jsonl", "--allow-incomplet"], "--allow-incomplet (did you mean --allow-incomplete?)"),
    ([], "the following arguments are required: --to"),
])
def test_bad_flags_exit_2(tmp_path, capsys, argv, message):
    assert main(["export", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
