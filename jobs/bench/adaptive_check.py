"""Adaptive SimSD at both ends of acceptance, on the shipped reference family.

For the trained draft (high acceptance) and for the same draft with its weights scrambled (zero
acceptance), it decodes the same held-out problems with vanilla sequential decoding, SimSD exact
with a fixed draft, and SimSD exact with adaptive rounds; checks that all three give the same
tokens (exact mode is lossless) and prints tokens/s and the ratio to sequential. Results go to
--out as adaptive_check.json; the table is printed last.

Run: python -m jobs.bench.adaptive_check [--device cpu|cuda] [--problems 16] [--batch 1]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from pipeline.reference_data import heldout_problems
from workers.api import DecodeConfig, Request
from workers.engine import Engine
from workers.models import load_model

REFERENCE = Path(__file__).resolve().parents[2] / "models" / "reference"
CASES = [("vanilla sequential", dict(decoder="vanilla")),
         ("simsd exact, fixed", dict(decoder="simsd", verify="exact", adaptive="off")),
         ("simsd exact, adaptive", dict(decoder="simsd", verify="exact", adaptive="on"))]


def scrambled(draft):
    """The draft with every weight matrix's rows permuted: same cost, near-zero acceptance."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in draft.parameters():
            if p.dim() == 2:
                p.copy_(p[torch.randperm(p.shape[0], generator=g)])
    return draft


def run_case(target, draft, tokenizer, cfg: DecodeConfig, requests) -> tuple[dict, list]:
    engine = Engine.from_models(target, draft, tokenizer, cfg)
    engine.generate(requests)  # warm-up (graph capture on a GPU; the adaptive rule's first rounds)
    start = time.perf_counter()
    results = engine.generate(requests)
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    tokens = sum(len(r.token_ids) for r in results)
    rounds = sum(r.num_rounds for r in results)
    record = {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
              "tokens_per_round": tokens / max(rounds, 1),
              "undrafted_round_fraction": sum(r.num_undrafted_rounds for r in results) / max(rounds, 1)}
    policy = getattr(engine.decoder, "policy", None)
    if policy is not None:
        record["adaptive"] = policy.report()  # the arm it settled on and the medians behind it
    engine.close()
    return record, [r.token_ids for r in results]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--problems", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--max-new", type=int, default=160)
    p.add_argument("--out", default="adaptive-check")
    args = p.parse_args(argv)
    from workers.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(REFERENCE / "target")
    target = load_model(REFERENCE / "target", torch.device(args.device), "auto")
    drafts = {"trained draft": load_model(REFERENCE / "draft", torch.device(args.device), "auto")}
    drafts["scrambled draft"] = scrambled(load_model(REFERENCE / "draft", torch.device(args.device), "auto"))
    requests = [Request(i, tokenizer.encode_prompt(q), max_new_tokens=args.max_new)
                for i, (q, _) in enumerate(heldout_problems(args.problems))]
    rows, ok = [], True
    for draft_name, draft in drafts.items():
        want = None
        for label, kw in CASES:
            cfg = DecodeConfig(batch_size=args.batch, **kw)
            rec, tokens = run_case(target, draft if kw["decoder"] == "simsd" else None, tokenizer, cfg, requests)
            want = tokens if want is None else want
            rec.update(draft=draft_name, case=label, identical_to_sequential=tokens == want)
            ok &= rec["identical_to_sequential"]
            rows.append(rec)
            print(f"{draft_name:<16} {label:<24} {rec['tokens_per_s']:8.1f} tok/s  "
                  f"{rec['tokens_per_round']:.2f} tok/round  undrafted {rec['undrafted_round_fraction']:.3f}  "
                  f"same tokens: {rec['identical_to_sequential']}"
                  + (f"  chose {rec['adaptive']['adaptive_mode']}" if "adaptive" in rec else ""), flush=True)
    for r in rows:
        base = next(x for x in rows if x["draft"] == r["draft"] and x["case"] == CASES[0][0])
        r["x_sequential"] = r["tokens_per_s"] / base["tokens_per_s"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"device": args.device if args.device == "cpu" else torch.cuda.get_device_name(), "commit": commit,
            "command": " ".join(["python -m jobs.bench.adaptive_check", *(argv or sys.argv[1:])])}
    (out / "adaptive_check.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    print(f"\n{meta['device']} @ {commit}\n| draft | decoder | tok/s | x sequential | undrafted rounds | "
          "adaptive's choice | same tokens |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        choice = r["adaptive"]["adaptive_mode"] if "adaptive" in r else "-"
        print(f"| {r['draft']} | {r['case']} | {r['tokens_per_s']:.1f} | {r['x_sequential']:.2f} | "
              f"{r['undrafted_round_fraction']:.3f} | {choice} | {r['identical_to_sequential']} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
