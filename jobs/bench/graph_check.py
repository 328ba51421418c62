"""GPU self-check: CUDA-graph decoding equals eager decoding token for token (fp32), for vanilla
and both SimSD verifications with SDAR and AR drafts. Prints one line per case; exit 1 on a mismatch.

Run: python -m jobs.bench.graph_check
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from workers.api import DecodeConfig, Request
from workers.engine import Engine
from workers.testing import build_tokenizer, make_tiny_checkpoint

CASES = [("vanilla", None, "paper", "sequential", "always"), ("vanilla", None, "paper", "dynamic", "never"),
         ("simsd", "draft", "paper", "sequential", "always"), ("simsd", "draft", "exact", "sequential", "never"),
         ("simsd", "ar", "paper", "sequential", "always"), ("simsd", "ar", "exact", "sequential", "always")]


def check(root: Path, device: str = "cuda") -> list[tuple[str, bool]]:
    tok = build_tokenizer()
    paths = {"target": make_tiny_checkpoint(root / "t", seed=0, tokenizer=tok, hidden_size=128),
             "draft": make_tiny_checkpoint(root / "d", seed=1, num_layers=1, tokenizer=tok),
             "ar": make_tiny_checkpoint(root / "a", model_type="qwen3", seed=2, tokenizer=tok)}
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 380, (n,), generator=g).tolist() for n in (3, 17, 40, 9, 130, 1)]
    out = []
    for decoder, draft, verify, rule, folding in CASES:
        runs = []
        for static in (False, True):
            cfg = DecodeConfig(decoder=decoder, verify=verify, remasking=rule, threshold=0.2, batch_size=4,
                               commit_folding=folding)
            eng = Engine(str(paths["target"]), str(paths[draft]) if draft else None, cfg, device, "float32",
                         static_shapes=static)
            eng.tokenizer.stop_ids = ()
            res = eng.generate([Request(i, p, max_new_tokens=37) for i, p in enumerate(prompts)])
            runs.append([(r.token_ids, r.num_accepted_tokens) for r in res])
            eng.close()
        out.append((f"{decoder}/{draft}/{verify}/{rule}/fold-{folding}", runs[0] == runs[1]))
    return out


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        results = check(Path(d))
    for name, ok in results:
        print(f"graph-check {name:<30} {'OK' if ok else 'MISMATCH'}")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
