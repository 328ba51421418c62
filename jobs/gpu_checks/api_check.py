"""GPU check of the Python API (simsd.LLM, simsd.build_processor). Prints PASS/FAIL lines; exit 1
on any FAIL.

- ``LLM`` on CUDA generates every prompt (no error outputs), SimSD drafts and accepts tokens.
- Leaving ``with LLM(...)`` gives the GPU memory back (allocated bytes return to the baseline),
  twice in a row (no growth per LLM).
- ``LLM.chat`` and ``build_processor`` (one Ray actor on the GPU) give the same tokens.

Run from the repository root: python -m jobs.gpu_checks.api_check [--target DIR --draft DIR]
(default: the shipped reference family in models/reference/).
"""
from __future__ import annotations

import argparse
import sys

import torch

import simsd

QUESTIONS = ["Tom has 12 apples. Ann gives Tom 7 more apples. How many apples does Tom have now?",
             "Mia has 40 pens. Mia loses 15 pens. How many pens does Mia have now?",
             "Sam has 9 boxes with 8 cards in each. How many cards does Sam have now?"] * 4
SLACK_BYTES = 1 << 20
FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILED.append(name)


def chat_once(options: dict) -> list[list[int]]:
    baseline = torch.cuda.memory_allocated()
    with simsd.LLM(**options) as llm:
        outs = llm.chat([[{"role": "user", "content": q}] for q in QUESTIONS], simsd.SamplingParams(max_tokens=64))
        held = torch.cuda.memory_allocated()
    errors = [o.outputs[0].error for o in outs if o.outputs[0].finish_reason == "error"]
    check("LLM.chat on cuda: no error outputs", not errors, "; ".join(map(str, errors[:3])))
    accepted = sum(o.outputs[0].stats.accepted_tokens for o in outs)
    check("SimSD accepted draft tokens", accepted > 0, f"{accepted} accepted")
    freed = torch.cuda.memory_allocated()
    check("GPU memory back to the baseline after the with block", freed - baseline <= SLACK_BYTES,
          f"baseline {baseline} B, while open {held} B, after {freed} B")
    return [o.outputs[0].token_ids for o in outs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="models/reference/target")
    parser.add_argument("--draft", default="models/reference/draft")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("FAIL CUDA is not available: run this on a GPU machine")
        return 1
    options = {"target": args.target, "draft": args.draft, "device": "cuda", "batch_size": 16, "max_new_tokens": 64}
    first = chat_once(options)
    second = chat_once(options)
    check("two LLMs in a row give the same greedy tokens", first == second)

    import ray

    ray.init(num_gpus=1, log_to_driver=False)
    processor = simsd.build_processor({**options, "messages_column": "messages", "workers": 1})
    ds = ray.data.from_items([{"id": i, "messages": [{"role": "user", "content": q}]}
                              for i, q in enumerate(QUESTIONS)])
    rows = {r["id"]: list(r["generated_token_ids"]) for r in processor(ds).take_all()}
    same = sum(rows[i] == first[i] for i in range(len(QUESTIONS)))
    check("build_processor on a GPU actor gives LLM.chat's tokens", same == len(QUESTIONS),
          f"{same}/{len(QUESTIONS)} rows identical")
    ray.shutdown()
    print("ALL PASS" if not FAILED else f"{len(FAILED)} FAILED: {', '.join(FAILED)}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
