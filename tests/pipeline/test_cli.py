"""`simsd generate` end to end with the real engine on tiny random checkpoints."""
import pyarrow.parquet as pq

from jobs.cli import main
from tests.pipeline.helpers import read_output, write_prompts
from workers.actor import OUTPUT_SCHEMA_TAIL


def _args(tmp_path, tiny_models, *extra):
    return ["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--target", str(tiny_models["target"]), "--max-new-tokens", "6", "--batch-size", "4",
            "--device", "cpu", *extra]


def test_generate_every_id_exactly_once(ray_local, tmp_path, tiny_models, capsys):
    write_prompts(tmp_path / "in", 10, shards=3)
    assert main(_args(tmp_path, tiny_models, "--decoder", "simsd", "--draft", str(tiny_models["draft"]))) == 0
    table = read_output(tmp_path / "out")
    assert sorted(table.column("id").to_pylist()) == list(range(10))
    schema = {n: t for n, t in OUTPUT_SCHEMA_TAIL}
    for name, type_ in schema.items():
        assert table.schema.field(name).type == type_, name
    assert set(table.column("finish_reason").to_pylist()) <= {"stop", "length"}
    assert all(n <= 6 for n in table.column("num_generated_tokens").to_pylist())
    assert sum(table.column("num_draft_forwards").to_pylist()) > 0
    summary = pq.read_table(tmp_path / "out" / "summary.parquet").to_pylist()[0]
    assert summary["rows"] == 10
    assert summary["generated_tokens"] == sum(table.column("num_generated_tokens").to_pylist())
    assert "simsd run summary" in capsys.readouterr().out


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "simsd generate: error: " in err, err
    return err


def test_clear_errors(tmp_path, tiny_models, capsys):
    assert "does not exist" in _error(capsys, _args(tmp_path, tiny_models))  # no input written yet
    write_prompts(tmp_path / "in", 2, shards=1)
    assert "no column 'text'" in _error(capsys, _args(tmp_path, tiny_models, "--prompt-column", "text"))
    assert "no id column 'key'" in _error(capsys, _args(tmp_path, tiny_models, "--id-column", "key"))
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    err = _error(capsys, _args(tmp_path, tiny_models) + ["--target", str(not_a_model)])
    assert "--target" in err and "not a model directory" in err


def test_draft_with_another_tokenizer_is_refused(tmp_path, tiny_models, capsys):
    from workers.models.tiny import build_tokenizer, make_tiny_checkpoint

    other = make_tiny_checkpoint(tmp_path / "other", "qwen3", tokenizer=build_tokenizer(300), vocab_size=300)
    write_prompts(tmp_path / "in", 2, shards=1)
    err = _error(capsys, _args(tmp_path, tiny_models, "--decoder", "simsd", "--draft", str(other)))
    assert "different tokenizers" in err


def test_a_failure_names_its_root_cause(tmp_path, tiny_models, capsys, monkeypatch):
    """Ray's task errors hid 'No space left on device' behind `RayTaskError(OSError): ray::Write()`."""
    import errno

    from jobs import generate
    from pipeline import driver

    class WrappedTaskError(RuntimeError):  # a RayTaskError: the worker's error in .cause
        def __init__(self):
            super().__init__("ray::Write() failed")
            self.cause = OSError(errno.ENOSPC, "No space left on device", "/out/_staging/x.parquet")

    def failing_run(config):
        try:
            raise WrappedTaskError()
        except WrappedTaskError as err:
            raise RuntimeError("the write failed") from err
    monkeypatch.setattr(driver, "run", failing_run)
    monkeypatch.setattr("pipeline.validate.validate", lambda config: [])
    monkeypatch.setattr("pipeline.columns.passthrough", lambda *a: None)
    monkeypatch.setattr("pipeline.columns.input_schema", lambda config: None)
    assert generate.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                          "--target", str(tiny_models["target"]), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "(cause: No space left on device: /out/_staging/x.parquet)" in err
