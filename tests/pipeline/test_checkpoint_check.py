"""Bad configs, corrupt weights and escaping symlinks exit 2 before Ray starts."""
import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from pipeline.config import ConfigError, GenerateConfig
from pipeline.validate import validate
from tests.pipeline.helpers import write_prompts
from workers.models.config import ModelLoadError


def _copy(src, dst) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


def _edit_config(ckpt: Path, **changes) -> None:
    raw = json.loads((ckpt / "config.json").read_text())
    raw.update(changes)
    (ckpt / "config.json").write_text(json.dumps(raw))


def _validate(tmp_path, target, draft=None):
    write_prompts(tmp_path / "in", 2)
    kw = {"draft": str(draft), "decoder": "simsd"} if draft else {}
    validate(GenerateConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"), target=str(target),
                            device="cpu", **kw))


@pytest.mark.parametrize("changes,fragment", [
    ({"num_hidden_layers": -1}, "num_hidden_layers is -1; it must be in [1, 1024]"),
    ({"num_hidden_layers": 0}, "num_hidden_layers is 0"),
    ({"num_hidden_layers": 3}, "num_hidden_layers is 3 but the weights hold 2 layers"),
    ({"num_hidden_layers": 1}, "num_hidden_layers is 1 but the weights hold 2 layers"),
    ({"hidden_size": 10**12}, "hidden_size is 1000000000000"),
    ({"intermediate_size": 96}, "mlp.gate_proj.weight has shape [128, 64] in the weights, config.json implies [96, 64]"),
    ({"vocab_size": 0}, "outside the vocabulary"),
    ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads"),
    ({"tie_word_embeddings": False}, None),  # the tiny target is untied already: fine
])
def test_config_against_headers(tmp_path, tiny_models, changes, fragment):
    ckpt = _copy(tiny_models["target"], tmp_path / "ckpt")
    _edit_config(ckpt, **changes)
    if fragment is None:
        _validate(tmp_path, ckpt)
        return
    with pytest.raises(ConfigError, match=f"--target: .*{_re(fragment)}"):
        _validate(tmp_path, ckpt)


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_untied_config_without_lm_head(tmp_path):
    from workers.models.tiny import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "tied", "qwen3", tie_word_embeddings=True)
    _validate(tmp_path, ckpt)  # tied: no lm_head needed
    _edit_config(ckpt, tie_word_embeddings=False)
    with pytest.raises(ConfigError, match="untied .* no lm_head.weight"):
        _validate(tmp_path, ckpt)


@pytest.mark.parametrize("damage,fragment", [
    ("truncate", "truncated or damaged"),
    ("header_length", "corrupt safetensors file"),
    ("garbage_header", "corrupt safetensors header"),
    ("empty", "shorter than its 8-byte header length"),
    ("overlap", "overlapping"),
    ("gap", "belong to no tensor"),
])
def test_corrupt_weights(tmp_path, tiny_models, damage, fragment):
    ckpt = _copy(tiny_models["target"], tmp_path / "ckpt")
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    damaged = {"truncate": data[: len(data) - 100],
               "header_length": struct.pack("<Q", 10**15) + data[8:],
               "garbage_header": data[:8] + b"\xff" * length + data[8 + length:],
               "empty": b"",
               "overlap": _relaid(data, length, overlap=True),
               "gap": _relaid(data, length, overlap=False)}.get(damage)
    weights.write_bytes(damaged)
    with pytest.raises(ConfigError, match=_re(fragment)):
        _validate(tmp_path, ckpt)


def _relaid(data: bytes, length: int, overlap: bool) -> bytes:
    """The file with its tensors re-laid: a tensor reading the bytes of another of the same size
    (overlap), or 16 bytes of nothing before the last tensor (gap)."""
    header = json.loads(data[8:8 + length])
    tensors = sorted((v["data_offsets"], k) for k, v in header.items() if k != "__metadata__")
    body = data[8 + length:]
    if overlap:
        first, second = next((x, y) for x, y in zip(tensors, tensors[1:])
                             if x[0][1] - x[0][0] == y[0][1] - y[0][0] > 0)
        header[second[1]]["data_offsets"] = list(first[0])
    else:
        (start, end), last = tensors[-1]
        header[last]["data_offsets"] = [start + 16, end + 16]
        body = body[:start] + bytes(16) + body[start:]
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def test_symlinked_weight_file_outside_the_checkpoint(tmp_path, tiny_models):
    ckpt = _copy(tiny_models["target"], tmp_path / "ckpt")
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(ckpt / "model.safetensors", outside)
    os.symlink(outside, ckpt / "model.safetensors")
    with pytest.raises(ConfigError, match="escapes the checkpoint directory"):
        _validate(tmp_path, ckpt)
    from workers.models.loader import load_model

    with pytest.raises(ModelLoadError, match="escapes the checkpoint directory"):
        load_model(ckpt)
    # A link that stays inside the directory is fine.
    (ckpt / "model.safetensors").unlink()
    (ckpt / "blobs").mkdir()
    shutil.move(outside, ckpt / "blobs" / "w.safetensors")
    os.symlink(ckpt / "blobs" / "w.safetensors", ckpt / "model.safetensors")
    _validate(tmp_path, ckpt)


def test_hub_snapshot_links_into_blobs_are_allowed(tmp_path, tiny_models):
    repo = tmp_path / "models--org--name"
    snap = _copy(tiny_models["target"], repo / "snapshots" / "abc123")
    (repo / "blobs").mkdir()
    shutil.move(snap / "model.safetensors", repo / "blobs" / "sha")
    os.symlink(Path("..") / ".." / "blobs" / "sha", snap / "model.safetensors")
    _validate(tmp_path, snap)


def test_draft_is_checked_too_and_tokenizers_must_match(tmp_path, tiny_models):
    draft = _copy(tiny_models["draft"], tmp_path / "draft")
    _edit_config(draft, num_hidden_layers=-1)
    with pytest.raises(ConfigError, match="--draft: .*num_hidden_layers is -1"):
        _validate(tmp_path, tiny_models["target"], draft)


def test_tokenizer_larger_than_the_vocabulary(tmp_path, tiny_models):
    from tests.pipeline.fakes import make_model_dir

    ckpt = make_model_dir(tmp_path / "m")
    raw = json.loads((ckpt / "config.json").read_text())
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    tok["model"]["vocab"]["extra-token"] = raw["vocab_size"]  # one id past the embedding
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ConfigError, match="more than config.json vocab_size"):
        _validate(tmp_path, ckpt)


def test_bad_checkpoint_exits_2_before_ray_starts(tmp_path, tiny_models, monkeypatch, capsys):
    from jobs.cli import main
    from pipeline import driver

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for a bad checkpoint")
    monkeypatch.setattr(driver, "_init_ray", no_ray)
    ckpt = _copy(tiny_models["target"], tmp_path / "ckpt")
    _edit_config(ckpt, num_hidden_layers=-1)
    write_prompts(tmp_path / "in", 2)
    argv = ["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--target", str(ckpt),
            "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "num_hidden_layers is -1" in err and "\x1b[" not in err
