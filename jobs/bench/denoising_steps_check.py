"""GPU self-check for --denoising-steps below the block length (fp32, tiny random models).

* CUDA-graph decoding (fixed shapes, the graphed draft loop computing the quota on the device)
  equals eager decoding token for token, for vanilla and for SimSD with multi-token SDAR drafts;
* SimSD exact with such drafts equals vanilla sequential decoding of the target.

Prints one PASS/FAIL line per case; exit 1 on any FAIL. Run: python -m jobs.bench.denoising_steps_check
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from workers.api import DecodeConfig, Request
from workers.engine import Engine
from workers.testing import build_tokenizer, make_tiny_checkpoint

# (decoder, verify, rule: vanilla remasking or draft remasking, denoising steps, commit folding)
CASES = [("vanilla", "paper", "static", 2, "always"), ("vanilla", "paper", "sequential", 3, "never"),
         ("vanilla", "paper", "dynamic", 2, "always"),
         ("simsd", "paper", "static", 2, "always"), ("simsd", "paper", "sequential", 3, "never"),
         ("simsd", "exact", "static", 2, "never"), ("simsd", "exact", "dynamic", 2, "always")]


def _decode(paths, device, decoder, verify, rule, steps, folding, static, prompts):
    kw = dict(remasking=rule) if decoder == "vanilla" else dict(draft_remasking=rule, verify=verify,
                                                                   adaptive="off")
    cfg = DecodeConfig(decoder=decoder, threshold=0.2, batch_size=4, commit_folding=folding,
                       denoising_steps=steps, **kw)
    eng = Engine(str(paths["target"]), str(paths["draft"]) if decoder == "simsd" else None, cfg, device,
                 "float32", static_shapes=static)
    eng.tokenizer.stop_ids = ()
    res = eng.generate([Request(i, p, max_new_tokens=37) for i, p in enumerate(prompts)])
    eng.close()
    return [(r.token_ids, r.num_accepted_tokens) for r in res]


def check(root: Path, device: str = "cuda") -> list[tuple[str, bool]]:
    tok = build_tokenizer()
    paths = {"target": make_tiny_checkpoint(root / "t", seed=0, tokenizer=tok, hidden_size=128),
             "draft": make_tiny_checkpoint(root / "d", seed=1, num_layers=1, tokenizer=tok)}
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 380, (n,), generator=g).tolist() for n in (3, 17, 40, 9, 130, 1)]
    sequential = _decode(paths, device, "vanilla", "paper", "sequential", None, "always", True, prompts)
    out = []
    for case in CASES:
        eager, graphed = (_decode(paths, device, *case, static, prompts) for static in (False, True))
        name = "/".join(str(x) for x in case)
        out.append((f"graphs-equal-eager {name}", eager == graphed))
        if case[1] == "exact":
            out.append((f"exact-equals-sequential {name}",
                        [t for t, _ in graphed] == [t for t, _ in sequential]))
    return out


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        results = check(Path(d))
    for name, ok in results:
        print(f"{'PASS' if ok else 'FAIL'} {name}")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
