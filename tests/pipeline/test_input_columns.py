"""`simsd generate` reads a `prompt` or a `messages` column without a column flag (Ray Data LLM's
contract), refuses an input with both, and names CLI flags in its errors."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from pipeline import columns
from pipeline.config import ConfigError, GenerateConfig
from pipeline.validate import validate
from tests.pipeline.fakes import make_model_dir

CHAT = [[{"role": "user", "content": "hello world"}], [{"role": "user", "content": "the sea"}]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model") / "m")


def _input(tmp_path, **files) -> str:
    """One Parquet file per keyword: its name -> its columns (ids 0, 1)."""
    (tmp_path / "in").mkdir()
    for name, cols in files.items():
        pq.write_table(pa.table({"id": [0, 1], **cols}), tmp_path / "in" / f"{name}.parquet")
    return str(tmp_path / "in")


def _config(tmp_path, model_dir, **kw) -> GenerateConfig:
    return GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), target=str(model_dir),
                          device="cpu", **kw)


def test_messages_input_is_chat_without_a_flag(tmp_path, model_dir):
    _input(tmp_path, part=dict(messages=CHAT, qid=["a", "b"]))
    auto = _config(tmp_path, model_dir)
    assert validate(auto) == []
    chosen = columns.for_input(auto)
    assert (chosen.prompt_column, chosen.messages_column) == ("prompt", "messages")
    assert chosen.decode == auto.decode                       # a copy: the resolved settings stay
    # An output written with an explicit --messages-column messages resumes without it, and back.
    assert chosen.identity() == _config(tmp_path, model_dir, messages_column="messages").identity()
    assert columns.passthrough(auto, columns.input_schema(auto)).names == ["qid"]   # messages consumed


def test_prompt_input_is_text_without_a_flag(tmp_path, model_dir):
    _input(tmp_path, part=dict(prompt=["hello", "the sea"]))
    auto = _config(tmp_path, model_dir)
    assert validate(auto) == []
    chosen = columns.for_input(auto)
    assert (chosen.prompt_column, chosen.messages_column) == ("prompt", None)
    assert auto.identity() == chosen.identity() == _config(tmp_path, model_dir, prompt_column="prompt").identity()


def test_both_columns_are_refused_naming_the_flags(tmp_path, model_dir):
    _input(tmp_path, part=dict(prompt=["hello", "the sea"], messages=CHAT))
    for refused in (validate, columns.for_input):
        with pytest.raises(ConfigError, match="--input has both a 'prompt' and a 'messages' column; pass "
                                              "--prompt-column prompt .* or --messages-column messages"):
            refused(_config(tmp_path, model_dir))
    for setting in ({"prompt_column": "prompt"}, {"messages_column": "messages"}):   # a setting picks one
        config = _config(tmp_path, model_dir, **setting)
        assert validate(config) == []
        assert columns.for_input(config).messages_column == setting.get("messages_column")


def test_one_column_in_one_file_and_the_other_in_another(tmp_path, model_dir):
    _input(tmp_path, a=dict(prompt=["hello", "the sea"]), b=dict(messages=CHAT))
    with pytest.raises(ConfigError, match="--input has both a 'prompt' and a 'messages' column"):
        validate(_config(tmp_path, model_dir))
    with pytest.raises(ConfigError, match="b.parquet has no column 'prompt'"):
        validate(_config(tmp_path, model_dir, prompt_column="prompt"))


def test_cli_errors_name_flags(tmp_path, model_dir, capsys):
    _input(tmp_path, part=dict(prompt=["hello", "the sea"], messages=CHAT))
    argv = ["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--target", str(model_dir), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--prompt-column prompt" in err and "--messages-column messages" in err and "prompt_column" not in err
    (tmp_path / "in" / "part.parquet").unlink()
    pq.write_table(pa.table({"id": [0, 1], "messages": CHAT}), tmp_path / "in" / "part.parquet")
    assert main([*argv, "--prompt-column", "prompt"]) == 2
    err = capsys.readouterr().err
    assert "has no column 'prompt' (columns: id, messages); pass --prompt-column" in err and "prompt_column" not in err
