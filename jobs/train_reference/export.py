"""Writing the trained models as published-format checkpoints (safetensors, config, generation
config, tokenizer files), and as one tar in parts for copying off a machine.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import torch

from workers.models import Qwen3Model

from .model import TRANSFORMERS_VERSION


def save_checkpoint(model: Qwen3Model, cfg: dict, tok_dir: Path, out: Path, special: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, t in model.published_state_dict().items():
        if cfg["tie_word_embeddings"] and name == "lm_head.weight":
            continue
        state[name] = t.detach().to("cpu", torch.bfloat16).contiguous().clone()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = {"bos_token_id": special["<|endoftext|>"], "do_sample": False,
           "eos_token_id": [special["<|im_end|>"], special["<|endoftext|>"]],
           "pad_token_id": special["<|endoftext|>"], "transformers_version": TRANSFORMERS_VERSION}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    for f in tok_dir.iterdir():
        (out / f.name).write_bytes(f.read_bytes())


def export_parts(root: Path, names: list[str], export: Path, part_bytes: int = 15 * 2**20) -> None:
    """The checkpoints as one tar split into parts (for copying off a machine file by file)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            tar.add(str(root / name), arcname=name)
    data = buf.getvalue()
    export.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(data), part_bytes):
        (export / f"reference.tar.part{i // part_bytes:02d}").write_bytes(data[i:i + part_bytes])
