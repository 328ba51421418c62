"""`simsd evaluate`: quality and speed of a decoder on held-out data.

arithmetic: exact-match accuracy on held-out word problems (answer after '####').
code: agreement with the target's own sequential greedy output (tokens equal at the same
position) and the target's mean log-likelihood of what was generated.
Without --target the shipped reference family is used. --json prints one JSON object, `accuracy` last.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REFERENCE = Path(__file__).resolve().parent.parent / "models" / "reference"


def parse_args(argv):
    p = argparse.ArgumentParser(allow_abbrev=False, prog="simsd evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=["arithmetic", "code"], default="arithmetic")
    p.add_argument("--target", default=None, help="target checkpoint (default: the shipped reference target)")
    p.add_argument("--draft", default=None, help="draft checkpoint (default for simsd: the reference draft)")
    p.add_argument("--decoder", choices=["vanilla", "simsd"], default="vanilla")
    p.add_argument("--remasking", choices=["sequential", "static", "dynamic"], default="sequential")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--verify", choices=["paper", "exact"], default="paper")
    p.add_argument("--block-length", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 256 arithmetic, 64 code")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=500, help="number of held-out problems / code prompts")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object (accuracy last)")
    return p.parse_args(argv)


def _engine(args, decode):
    from workers.engine import Engine

    target = args.target or str(REFERENCE / "target")
    draft = args.draft or (str(REFERENCE / "draft") if args.decoder == "simsd" else None)
    if not Path(target).exists() and "://" not in target:
        raise SystemExit(f"simsd evaluate: error: target {target} not found (train it with `simsd train-reference`)")
    return Engine(target, draft if args.decoder == "simsd" else None, decode, args.device, args.dtype)


def arithmetic_items(n: int, tok):
    from pipeline.reference_data import heldout_problems

    problems = heldout_problems(n)
    return [tok.encode_prompt(q) for q, _ in problems], [a for _, a in problems]


def code_items(n: int, tok):
    from pipeline.reference_data import code_documents

    docs = code_documents()[::-1][:n]  # the last files of the standard library, by path
    return [tok.encode_prompt(text[:400], use_chat_template=False) for _, text in docs], None


def run(args) -> dict:
    from workers.api import DecodeConfig, Request

    max_new = args.max_new_tokens or (256 if args.suite == "arithmetic" else 64)
    decode = DecodeConfig(decoder=args.decoder, remasking=args.remasking, threshold=args.threshold,
                          verify=args.verify, block_length=args.block_length, max_new_tokens=max_new,
                          batch_size=args.batch_size)
    engine = _engine(args, decode)
    tok = engine.tokenizer
    prompts, answers = (arithmetic_items if args.suite == "arithmetic" else code_items)(args.limit, tok)
    requests = [Request(i, p) for i, p in enumerate(prompts)]
    start = time.perf_counter()
    results = engine.generate(requests)
    wall = time.perf_counter() - start
    tokens = sum(len(r.token_ids) for r in results)
    drafted = sum(r.num_drafted_tokens for r in results)
    report = {"suite": args.suite, "decoder": args.decoder, "verify": args.verify if args.decoder == "simsd" else None,
              "remasking": args.remasking if args.decoder == "vanilla" else None, "n": len(results),
              "device": str(engine.device), "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
              "tokens_per_round": tokens / max(sum(r.num_rounds for r in results), 1),
              "acceptance_rate": sum(r.num_accepted_tokens for r in results) / drafted if drafted else None}
    if args.suite == "arithmetic":
        from pipeline.reference_data import extract_answer

        correct = [extract_answer(tok.decode(r.token_ids)) == a for r, a in zip(results, answers)]
        report["accuracy"] = sum(correct) / len(correct)
    else:
        report.update(_code_quality(engine, decode, requests, results, prompts))
    return report


def _code_quality(engine, decode, requests, results, prompts) -> dict:
    """Agreement with the target's sequential greedy output and the target's log-likelihood."""
    from dataclasses import replace

    from workers.engine import Engine
    from workers.models.likelihood import sequential_log_likelihood

    if decode.decoder == "vanilla" and decode.remasking == "sequential":
        reference = results
    else:
        ref_cfg = replace(decode, decoder="vanilla", remasking="sequential")
        reference = Engine.from_models(engine.target.model, None, engine.tokenizer, ref_cfg).generate(requests)
    agree = total = 0
    for r, ref in zip(results, reference):
        n = max(len(r.token_ids), len(ref.token_ids))
        agree += sum(a == b for a, b in zip(r.token_ids, ref.token_ids))
        total += n
    lls = [sequential_log_likelihood(engine.target.model, p, r.token_ids, engine.block) for p, r in zip(prompts, results)]
    return {"agreement_with_sequential": agree / max(total, 1),
            "target_log_likelihood": sum(lls) / max(len(lls), 1),
            "accuracy": agree / max(total, 1)}


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report = run(args)
    if args.json:
        acc = report.pop("accuracy")
        print(json.dumps({**report, "accuracy": acc}))
    else:
        for k, v in report.items():
            print(f"{k:>28}: {v:.4f}" if isinstance(v, float) else f"{k:>28}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
