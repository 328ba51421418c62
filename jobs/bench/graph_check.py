"""GPU self-check: CUDA-graph decoding equals eager decoding token for token (fp32), for vanilla
and both SimSD verifications with SDAR and AR drafts, also with fewer denoising steps than the
block length (the graphed draft loop computes the quota on the device); and SimSD exact with
such drafts equals vanilla sequential decoding. Prints one line per check; exit 1 on a mismatch.

Run: python -m jobs.bench.graph_check
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from workers.api import DecodeConfig, Request
from workers.engine import Engine
from workers.models.tiny import build_tokenizer, make_tiny_checkpoint

# (decoder, draft, verify, rule: vanilla remasking or draft remasking, folding, denoising steps)
CASES = [("vanilla", None, "paper", "sequential", "always", None), ("vanilla", None, "paper", "dynamic", "never", None),
         ("simsd", "draft", "paper", "static", "always", None), ("simsd", "draft", "exact", "static", "never", None),
         ("simsd", "ar", "paper", "static", "always", None), ("simsd", "ar", "exact", "static", "always", None),
         ("vanilla", None, "paper", "static", "always", 2), ("vanilla", None, "paper", "sequential", "never", 3),
         ("vanilla", None, "paper", "dynamic", "always", 2),
         ("simsd", "draft", "paper", "static", "always", 2), ("simsd", "draft", "paper", "sequential", "never", 3),
         ("simsd", "draft", "exact", "static", "never", 2), ("simsd", "draft", "exact", "dynamic", "always", 2)]


def _decode(paths, device, prompts, static, decoder, draft, verify, rule, folding, steps):
    # adaptive off: its timing-driven choice of rounds would make the accepted counts differ run to run
    kw = dict(remasking=rule) if decoder == "vanilla" else dict(draft_remasking=rule, verify=verify, adaptive="off")
    cfg = DecodeConfig(decoder=decoder, threshold=0.2, batch_size=4, commit_folding=folding,
                       denoising_steps=steps, **kw)
    eng = Engine(str(paths["target"]), str(paths[draft]) if draft else None, cfg, device, "float32",
                 static_shapes=static)
    eng.tokenizer.stop_ids = ()
    res = eng.generate([Request(i, p, max_new_tokens=37) for i, p in enumerate(prompts)])
    eng.close()
    return [(r.token_ids, r.num_accepted_tokens) for r in res]


def check(root: Path, device: str = "cuda") -> list[tuple[str, bool]]:
    tok = build_tokenizer()
    paths = {"target": make_tiny_checkpoint(root / "t", seed=0, tokenizer=tok, hidden_size=128),
             "draft": make_tiny_checkpoint(root / "d", seed=1, num_layers=1, tokenizer=tok),
             "ar": make_tiny_checkpoint(root / "a", model_type="qwen3", seed=2, tokenizer=tok)}
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 380, (n,), generator=g).tolist() for n in (3, 17, 40, 9, 130, 1)]
    sequential = [t for t, _ in _decode(paths, device, prompts, True, *CASES[0])]
    out = []
    for case in CASES:
        eager, graphed = (_decode(paths, device, prompts, static, *case) for static in (False, True))
        name = "/".join(str(x) for x in case)
        out.append((f"graphs-equal-eager {name}", eager == graphed))
        if case[2] == "exact" and case[5] is not None:
            out.append((f"exact-equals-sequential {name}", [t for t, _ in graphed] == sequential))
    return out


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        results = check(Path(d))
    for name, ok in results:
        print(f"graph-check {name:<52} {'OK' if ok else 'MISMATCH'}")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
