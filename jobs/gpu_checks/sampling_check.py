"""GPU check of sampling (docs/sampling.md). Prints PASS/FAIL lines (INFO lines are measurements);
exit 1 on any FAIL.

- The per-row Philox stream gives bit-identical uniforms on CUDA and CPU.
- The same sampled job run twice on the GPU gives identical text (temperature 0.8).
- Batch 1 vs batch 16 at temperature 0.8, per dtype. In float32 every row must match (FAIL
  otherwise). In bfloat16 the line is INFO with the fraction of identical rows, because GEMM
  kernels of different batch shapes round differently.
- The mask token is never emitted (vanilla and SimSD exact + MRS with a sequential SDAR draft).

Run from the repository root: python -m jobs.gpu_checks.sampling_check [--target DIR --draft DIR]
(default: the shipped reference family in models/reference/).
"""
from __future__ import annotations

import argparse
import sys

import torch

from workers.api import DecodeConfig, Request, SamplingParams
from workers.decoding.rng import row_key, uniforms
from workers.engine import Engine

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILED.append(name)


def requests(engine: Engine, n: int, temperature: float) -> list[Request]:
    prompts = ["Tom has 12 apples and buys 7 more. How many apples does he have?",
               "Mia has 40 pens. Mia loses 15 pens. How many pens does Mia have now?",
               "Write a short poem about the sea."]
    ids = [engine.tokenizer.encode_prompt(prompt=p) for p in prompts]
    return [Request(i, ids[i % len(ids)], row_id=f"r{i}",
                    params=SamplingParams(temperature=temperature, top_p=0.95, max_tokens=96, seed=3))
            for i in range(n)]


def texts(results) -> list[tuple]:
    return [tuple(r.token_ids) for r in results]


def check_rng() -> None:
    keys = torch.tensor([row_key(s, f"id{s}", s % 3) for s in range(64)])
    counters = torch.arange(64) * 7
    cpu = uniforms(keys, counters, 5, 33)
    gpu = uniforms(keys.cuda(), counters.cuda(), 5, 33).cpu()
    check("Philox uniforms identical on CUDA and CPU", torch.equal(cpu, gpu))


def check_batches(target: str, dtype: str) -> None:
    big = Engine(target, None, DecodeConfig(batch_size=16), "cuda", dtype)
    reqs = requests(big, 16, 0.8)
    first, again = texts(big.generate(reqs)), texts(big.generate(reqs))
    check(f"{dtype}: the same sampled batch twice gives identical text", first == again)
    one = Engine(target, None, DecodeConfig(batch_size=1), "cuda", dtype)
    alone = [texts(one.generate([r]))[0] for r in reqs]
    same = sum(a == b for a, b in zip(first, alone))
    line = f"{dtype}: batch 1 vs batch 16 at temperature 0.8, identical rows"
    if dtype == "float32":
        check(line, same == len(reqs), f"{same}/{len(reqs)}")
    else:
        print(f"INFO {line}: {same}/{len(reqs)}", flush=True)


def check_mask(target: str, draft: str) -> None:
    for name, eng in (("vanilla", Engine(target, None, DecodeConfig(batch_size=16), "cuda")),
                      ("simsd exact+MRS", Engine(target, draft, DecodeConfig(
                          decoder="simsd", verify="exact", draft_remasking="sequential", batch_size=16), "cuda"))):
        mask = eng.target.config.mask_token_id
        out = eng.generate(requests(eng, 32, 1.2))
        errors = [r.error for r in out if r.finish_reason == "error"]
        check(f"{name}: no error rows at temperature 1.2", not errors, "; ".join(map(str, errors[:2])))
        check(f"{name}: the mask token is never emitted", all(mask not in r.token_ids for r in out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="models/reference/target")
    parser.add_argument("--draft", default="models/reference/draft")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("FAIL CUDA is not available", flush=True)
        return 1
    check_rng()
    for dtype in ("float32", "bfloat16"):
        check_batches(args.target, dtype)
    check_mask(args.target, args.draft)
    print("ALL PASS" if not FAILED else f"{len(FAILED)} FAILED: {', '.join(FAILED)}", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
