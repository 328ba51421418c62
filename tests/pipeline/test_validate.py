"""Bad configuration fails in validate(), before any actor or GPU is reserved, naming the problem."""
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, GenerateConfig
from pipeline.validate import validate
from tests.pipeline.fakes import make_model_dir
from tests.pipeline.helpers import write_prompts


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model") / "m")


def _config(tmp_path, model_dir, **kw):
    kw.setdefault("input", str(tmp_path / "in"))
    return GenerateConfig(output=str(tmp_path / "out"), target=str(model_dir), device="cpu", **kw)


def _refused(config, match):
    with pytest.raises(ConfigError, match=match):
        validate(config)


def _write(tmp_path, table, name="part-0.parquet"):
    (tmp_path / "in").mkdir(exist_ok=True)
    pq.write_table(table, tmp_path / "in" / name)


def test_valid_config_passes(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 4)
    assert validate(_config(tmp_path, model_dir)) == []


def test_missing_input(tmp_path, model_dir):
    _refused(_config(tmp_path, model_dir), "does not exist")
    _refused(_config(tmp_path, model_dir, input=None), "--input is required")


def test_unreadable_input(tmp_path, model_dir):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.parquet").write_bytes(b"not parquet at all")
    _refused(_config(tmp_path, model_dir), "not a readable Parquet file")
    _refused(_config(tmp_path, model_dir, input="nosuchproto://x/y"), "not readable")


def test_no_parquet_files(tmp_path, model_dir):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "prompts.jsonl").write_text('{"id": 1}\n')
    _refused(_config(tmp_path, model_dir), "no .parquet files")


def test_missing_columns(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 2)
    _refused(_config(tmp_path, model_dir, id_column="key"), "no id column 'key'")
    _refused(_config(tmp_path, model_dir, prompt_column="text"), "no column 'text'.*--prompt-column")
    _refused(_config(tmp_path, model_dir, messages_column="messages"), "no column 'messages'.*--messages-column")


def test_missing_column_in_one_of_many_files(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 4)
    _write(tmp_path, pa.table({"id": [9], "text": ["x"]}), "part-9.parquet")
    _refused(_config(tmp_path, model_dir), "part-9.parquet has no column 'prompt'")


def test_duplicate_ids(tmp_path, model_dir):
    _write(tmp_path, pa.table({"id": [1, 2], "prompt": ["a", "b"]}), "a.parquet")
    _write(tmp_path, pa.table({"id": [2, 3], "prompt": ["c", "d"]}), "b.parquet")
    _refused(_config(tmp_path, model_dir), r"1 id\(s\) in column 'id' occur more than once \(e.g. 2\)")


def test_duplicate_scan_reads_only_the_id_column(tmp_path, model_dir, monkeypatch):
    write_prompts(tmp_path / "in", 4)
    seen = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **kw: seen.append(kw.get("columns")) or real(*a, **kw))
    validate(_config(tmp_path, model_dir))
    assert seen and all(cols == ["id"] for cols in seen)


def test_null_ids_and_no_rows(tmp_path, model_dir):
    _write(tmp_path, pa.table({"id": [1, None], "prompt": ["a", "b"]}))
    _refused(_config(tmp_path, model_dir), "null id")
    _write(tmp_path, pa.table({"id": pa.array([], pa.int64()), "prompt": pa.array([], pa.string())}))
    _refused(_config(tmp_path, model_dir), "holds no rows")


def test_wrong_column_types(tmp_path, model_dir):
    _write(tmp_path, pa.table({"id": [1], "prompt": [3]}))
    _refused(_config(tmp_path, model_dir), "prompt column 'prompt' has type int64")
    _write(tmp_path, pa.table({"id": [1.5], "prompt": ["a"]}))
    _refused(_config(tmp_path, model_dir), "id column 'id' has type double")
    _write(tmp_path, pa.table({"id": [1], "prompt": ["a"], "max_new_tokens": ["many"]}))
    _refused(_config(tmp_path, model_dir), "override column 'max_new_tokens'")
    for messages in ([["hello"]], [[{"role": "user", "text": "hi"}]], ["hello"]):
        _write(tmp_path, pa.table({"id": [1], "messages": messages}))
        _refused(_config(tmp_path, model_dir, messages_column="messages"), "list of structs with string fields")
    _write(tmp_path, pa.table({"id": [1], "messages": [[{"role": "user", "content": "hi"}]]}))
    validate(_config(tmp_path, model_dir, messages_column="messages"))


def test_mixed_id_types_across_files(tmp_path, model_dir):
    _write(tmp_path, pa.table({"id": [1], "prompt": ["a"]}), "a.parquet")
    _write(tmp_path, pa.table({"id": ["x"], "prompt": ["b"]}), "b.parquet")
    _refused(_config(tmp_path, model_dir), "integers in some files and strings in others")


def _model_variant(tmp_path, model_dir, **changes):
    path = tmp_path / "variant"
    shutil.copytree(model_dir, path)
    raw = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    (path / "config.json").write_text(json.dumps(raw))
    return path


def test_not_a_model(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 2)
    (tmp_path / "empty").mkdir()
    _refused(_config(tmp_path, tmp_path / "empty"), "--target: .*not a model directory")
    _refused(_config(tmp_path, tmp_path / "nowhere" / "x" / "y"), "--target: .*does not exist")


def test_unknown_model_type(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 2)
    _refused(_config(tmp_path, _model_variant(tmp_path, model_dir, model_type="llama")), "unsupported model_type 'llama'")


def test_sdar_without_mask_token(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 2)
    _refused(_config(tmp_path, _model_variant(tmp_path, model_dir, mask_token_id=None)), "needs mask_token_id")


def test_draft_with_other_vocab_size(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 2)
    draft = _model_variant(tmp_path, model_dir, vocab_size=99)
    # Only config.json says 99: the checkpoint check finds the weights disagree, before the vocab comparison.
    _refused(_config(tmp_path, model_dir, decoder="simsd", draft=str(draft)), "--draft: .*config.json implies \\[99")


def test_draft_with_other_tokenizer(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 2)
    draft = make_model_dir(tmp_path / "draft", vocab_extra=["extra"])
    _refused(_config(tmp_path, model_dir, decoder="simsd", draft=str(draft)), "different tokenizers")


def test_untrained_block_length_is_a_warning(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 2)
    warnings = validate(_config(tmp_path, model_dir, block_length=8))
    assert len(warnings) == 1 and "block size the target was trained with (4)" in warnings[0]
    assert validate(_config(tmp_path, model_dir, block_length=4)) == []


def test_output_of_another_job_is_refused_unless_overwrite(tmp_path, model_dir):
    from pipeline.resume import write_job_file

    write_prompts(tmp_path / "in", 2)
    (tmp_path / "out").mkdir()
    write_job_file(__import__("fsspec").filesystem("file"), str(tmp_path / "out"),
                   _config(tmp_path, model_dir, temperature=0.7))
    _refused(_config(tmp_path, model_dir), "different config.*temperature")
    validate(_config(tmp_path, model_dir, overwrite=True))


def test_foreign_parquet_in_output_is_refused(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 2)
    write_prompts(tmp_path / "out", 2)
    _refused(_config(tmp_path, model_dir), "not written by simsd")


def test_cli_exit_code_and_message(tmp_path, model_dir, capsys):
    from jobs.cli import main

    write_prompts(tmp_path / "in", 2)
    _write(tmp_path, pa.table({"id": [0], "prompt": ["dup"]}), "dup.parquet")
    assert main(["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--target", str(model_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "simsd generate: error: " in err and "more than once" in err
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_a_model_that_cannot_fit_the_gpu_is_refused_with_the_numbers():
    from pipeline.validate import check_fits_gpu
    from jobs.bench.shapes import shape_config

    moe = shape_config("sdar-30b-a3b")
    config = GenerateConfig(device="cuda")
    with pytest.raises(ConfigError, match=r"does not fit in GPU memory: weights 56\.9 GiB .* > 55\.9 GiB"):
        check_fits_gpu(config, moe, None, 60 * 10**9)
    check_fits_gpu(config, moe, None, 80 * 10**9)  # an 80 GB GPU holds it with a minimal pool
    check_fits_gpu(config, moe, None, None)  # no GPU on the driver: nothing to check
    dense = shape_config("sdar-8b")
    with pytest.raises(ConfigError, match="--target with --draft"):
        check_fits_gpu(config, dense, moe, 80 * 10**9)  # each alone would fit; the pair does not


def test_stop_token_ids_outside_the_vocabulary_are_refused(tmp_path, model_dir):
    write_prompts(tmp_path / "in", 2)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    _refused(_config(tmp_path, model_dir, stop_token_ids=[1, 99999999999]),
             rf"--stop-token-ids 99999999999: outside the target's vocabulary \(token ids 0\.\.{vocab - 1}")
    _refused(_config(tmp_path, model_dir, stop_token_ids=[vocab]), f"--stop-token-ids {vocab}:")
    validate(_config(tmp_path, model_dir, stop_token_ids=[vocab - 1]))
