"""Checkpoints at published SDAR shapes with random weights, written to local disk in the
published format (config.json with SDAR's fields, one safetensors file, generation config and
the reference tokenizer), for measuring what a real checkpoint costs to start: weight load and
compilation at 1.7B-8B sizes, without downloading one.

``--agree`` makes target and draft predict the same token everywhere (jobs.bench.shapes.make_agree),
so SimSD accepts every drafted token; the text is meaningless either way. The tokenizer is the
reference model's (4,096 tokens inside the shapes' 151,936-row vocabulary).

Run: python -m jobs.gpu_checks.shape_checkpoints --out /tmp/ckpt [--target sdar-8b] [--draft sdar-1.7b] [--agree]
then e.g. simsd generate --target /tmp/ckpt/target --draft /tmp/ckpt/draft ... (the files are in
the page cache right after writing: drop it, where allowed, for a cold-disk figure).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from jobs.bench.shapes import SDAR_SHAPES, make_agree, random_model
from jobs.train_reference.export import save_checkpoint

REFERENCE = Path(__file__).resolve().parents[2] / "models" / "reference" / "target"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
AGREE_TOKEN = 100  # an ordinary token of the reference tokenizer


def published_config(shape: str) -> dict:
    """The reference checkpoint's config.json (SDAR's published fields) at ``shape``'s sizes."""
    hidden, inter, layers, heads, kv = SDAR_SHAPES[shape]
    cfg = json.loads((REFERENCE / "config.json").read_text())
    cfg.update(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
               num_key_value_heads=kv, head_dim=128, vocab_size=151936, max_window_layers=layers)
    return cfg


def write(shape: str, out: Path, device: torch.device, agree: bool, seed: int) -> Path:
    model = random_model(shape, device, seed=seed)
    if agree:
        make_agree(model, token=AGREE_TOKEN)
    vocab = json.loads((REFERENCE / "tokenizer.json").read_text())["added_tokens"]
    special = {t["content"]: t["id"] for t in vocab}
    with tempfile.TemporaryDirectory() as tmp:  # save_checkpoint copies every file of its tokenizer dir
        for name in TOKENIZER_FILES:
            (Path(tmp) / name).write_bytes((REFERENCE / name).read_bytes())
        save_checkpoint(model, published_config(shape), Path(tmp), out, special)
    del model
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--target", default="sdar-8b", choices=sorted(SDAR_SHAPES))
    p.add_argument("--draft", default="sdar-1.7b", choices=sorted(SDAR_SHAPES))
    p.add_argument("--agree", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    out = Path(args.out)
    for role, shape, seed in (("target", args.target, 0), ("draft", args.draft, 1)):
        path = write(shape, out / role, torch.device(args.device), args.agree, seed)
        size = sum(f.stat().st_size for f in path.iterdir())
        print(f"{role}: {shape} -> {path} ({size / 2**30:.1f} GiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
