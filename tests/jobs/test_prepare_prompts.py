"""`simsd prepare`: every field kept by default, one --keep-columns syntax, defaults in --help."""
import json

import pyarrow.parquet as pq
import pytest

from jobs.cli import main

ROWS = [{"question": "1+1?", "qid": "q1", "answer": "2", "kind": "add", "id": 7},
        {"question": "2*3?", "qid": "q2", "answer": "6", "kind": "mul", "id": 8}]


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    return path


def _prepare(source, out, *extra) -> list[dict]:
    assert main(["prepare", "--input", str(source), "--output", str(out), "--prompt-field", "question", *extra]) == 0
    return pq.read_table(out).to_pylist()


def test_every_field_is_kept_by_default(source, tmp_path):
    rows = _prepare(source, tmp_path / "out")
    assert {k for k in rows[0]} == {"id", "prompt", "qid", "answer", "kind", "source_id"}
    assert [(r["qid"], r["answer"], r["kind"], r["source_id"]) for r in rows] == [("q1", "2", "add", 7), ("q2", "6", "mul", 8)]


def test_keep_columns_is_comma_separated_as_in_generate(source, tmp_path):
    rows = _prepare(source, tmp_path / "out", "--keep-columns", "qid,answer")
    assert set(rows[0]) == {"id", "prompt", "qid", "answer"}
    assert set(_prepare(source, tmp_path / "none", "--keep-columns", "")[0]) == {"id", "prompt"}


def test_help_shows_defaults_and_typos_get_suggestions(source, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: prompt)" in text and "(default: 1)" in text and "(default: every field" in text
    assert main(["prepare", "--input", str(source), "--output", str(tmp_path / "o"), "--shard", "2"]) == 2
    assert "--shard (did you mean --shards?)" in capsys.readouterr().err
