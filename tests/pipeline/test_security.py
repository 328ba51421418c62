"""Untrusted checkpoints and secrets: weights only through safetensors, no checkpoint code runs,
shard paths stay inside the checkpoint, credentials never reach logs or written files."""
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from pipeline.config import ConfigError, GenerateConfig
from pipeline.validate import validate
from tests.pipeline.helpers import write_prompts
from workers.api import DecodeConfig
from workers.models.config import ModelLoadError


class _Exploit:
    """Unpickling this creates the marker file (what a malicious pytorch_model.bin would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _copy(src, dst) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


def _engine(path):
    from workers.engine import Engine

    return Engine(str(path), None, DecodeConfig(max_new_tokens=2, batch_size=1), device="cpu")


def _validate(tmp_path, target):
    write_prompts(tmp_path / "in", 2)
    validate(GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), target=str(target),
                            device="cpu"))


def test_pickle_only_checkpoint_is_refused(tmp_path, tiny_models):
    marker = tmp_path / "pwned"
    ckpt = _copy(tiny_models["target"], tmp_path / "ckpt")
    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ModelLoadError, match="only safetensors"):
        _engine(ckpt)
    with pytest.raises(ConfigError, match="only safetensors"):
        _validate(tmp_path, ckpt)
    assert not marker.exists()


def test_pickle_files_beside_safetensors_are_never_opened(tmp_path, tiny_models):
    marker = tmp_path / "pwned"
    ckpt = _copy(tiny_models["target"], tmp_path / "ckpt")
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt", "rng_state.pth"):
        (ckpt / name).write_bytes(pickle.dumps(_Exploit(marker)))
    _validate(tmp_path, ckpt)
    engine = _engine(ckpt)
    assert engine.generate([__import__("workers.api", fromlist=["Request"]).Request(id=0, prompt_ids=[5, 6])])
    assert not marker.exists()


def test_checkpoint_code_is_never_run(tmp_path, tiny_models):
    marker = tmp_path / "pwned"
    ckpt = _copy(tiny_models["target"], tmp_path / "ckpt")
    code = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    for module in ("modeling_sdar", "configuration_sdar", "tokenization_sdar"):
        (ckpt / f"{module}.py").write_text(code + "class X: pass\nSDARForCausalLM = SDARConfig = SDARTokenizer = X\n")
    raw = json.loads((ckpt / "config.json").read_text())
    raw["auto_map"] = {"AutoConfig": "configuration_sdar.SDARConfig",
                       "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM",
                       "AutoTokenizer": ["tokenization_sdar.SDARTokenizer", None]}
    (ckpt / "config.json").write_text(json.dumps(raw))
    tok_cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    tok_cfg["auto_map"] = {"AutoTokenizer": ["tokenization_sdar.SDARTokenizer", None]}
    (ckpt / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    _validate(tmp_path, ckpt)
    _engine(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("shard", ["../outside.safetensors", "sub/../../outside.safetensors", "/tmp/x.safetensors"])
def test_shard_paths_cannot_escape_the_checkpoint(tmp_path, tiny_models, shard):
    ckpt = _copy(tiny_models["target"], tmp_path / "ckpt")
    shutil.copy(ckpt / "model.safetensors", tmp_path / "outside.safetensors")
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: shard for n in names}}))
    with pytest.raises(ModelLoadError, match="escapes the checkpoint directory"):
        _engine(ckpt)
    with pytest.raises(ConfigError, match="escapes the checkpoint directory"):
        _validate(tmp_path, ckpt)


SECRETS = {"key": "AKIAFAKEKEY7777", "secret": "s3cr3t-DO-NOT-LEAK-4242"}
ENV_SECRET = "env-secret-DO-NOT-LEAK-9191"


def _grep_tree(root: Path, needles) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {n}" for n in needles if n.encode() in data]
    return hits


def test_credentials_never_written_or_logged(ray_local, tmp_path, tiny_models, capfd, monkeypatch):
    from jobs.cli import main

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVKEY8888")
    needles = [*SECRETS.values(), ENV_SECRET, "AKIAENVKEY8888"]
    write_prompts(tmp_path / "in", 4)
    argv = ["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--target", str(tiny_models["target"]), "--max-new-tokens", "3", "--device", "cpu",
            "--storage-options", json.dumps(SECRETS)]
    assert main(argv) == 0
    # A failing run prints its error (redacted) too.
    assert main(argv[:2] + [str(tmp_path / f"missing-{SECRETS['secret']}")] + argv[3:]) == 2
    captured = capfd.readouterr()
    assert "simsd run summary" in captured.out and "simsd generate: error" in captured.err
    for needle in needles:
        assert needle not in captured.out and needle not in captured.err, needle
    assert (tmp_path / "out" / "_job.json").exists() and (tmp_path / "out" / "summary.parquet").exists()
    assert _grep_tree(tmp_path / "out", needles) == []
    # Ray's own logs for this session (driver, workers, actors).
    logs = Path(ray_local._private.worker._global_node.get_session_dir_path()) / "logs"
    assert _grep_tree(logs, needles) == []


def test_redact():
    from pipeline.storage import redact

    os.environ.pop("AWS_SESSION_TOKEN", None)
    assert redact("endpoint failed with key=abcd1234 x", {"key": "abcd1234", "n": 3}) == "endpoint failed with key=*** x"
