"""Scale-out: the same prompts through `simsd generate` with 1, 2, 4 ... actors (one per GPU).

Reports steady-state tokens/s per actor count (start-up excluded, see the summary's
`tokens_per_s`), end-to-end tokens/s, and scaling efficiency against N x the 1-GPU figure.
usage: python -m jobs.scale_bench [--prompts N] [--gpus 1,2] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from jobs.pipeline_bench import REFERENCE, write_prompts


def parse_args(argv):
    p = argparse.ArgumentParser(allow_abbrev=False, prog="simsd scale-bench", description=__doc__)
    p.add_argument("--prompts", type=int, default=16384)
    p.add_argument("--gpus", default=None, help="comma-separated actor counts (default: 1, 2, 4 ... up to the GPUs)")
    p.add_argument("--decoder", default="simsd", choices=["vanilla", "simsd"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--out", default="scale-bench")
    return p.parse_args(argv)


def counts(arg: str | None) -> list[int]:
    if arg:
        return [int(x) for x in arg.split(",")]
    import torch

    n, out = torch.cuda.device_count(), []
    k = 1
    while k <= n:
        out.append(k)
        k *= 2
    return out or [1]


def main(argv=None) -> int:
    from pipeline.config import from_mapping
    from pipeline.driver import run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.parquet"
        write_prompts(prompts, args.prompts)
        for n in counts(args.gpus):
            config = from_mapping({
                "input": str(prompts), "output": str(Path(tmp) / f"out-{n}"), "target": str(REFERENCE / "target"),
                "draft": str(REFERENCE / "draft") if args.decoder == "simsd" else None, "decoder": args.decoder,
                "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "workers": n})
            start = time.perf_counter()
            stats = run(config)
            rows.append({"gpus": n, "wall_s": time.perf_counter() - start, "tokens": stats["generated_tokens_this_run"],
                         "tokens_per_s_e2e": stats["tokens_per_s_e2e"], "steady_tokens_per_s": stats["tokens_per_s"],
                         "device": stats["device"]})
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["steady_tokens_per_s"] / rows[0]["gpus"] if rows[0]["steady_tokens_per_s"] else None
    for r in rows:
        r["efficiency"] = r["steady_tokens_per_s"] / (r["gpus"] * base) if base and r["steady_tokens_per_s"] else None
    (out / "scale.json").write_text(json.dumps({"prompts": args.prompts, "decoder": args.decoder,
                                                 "batch_size": args.batch_size, "runs": rows}, indent=1))
    print("| GPUs | steady tok/s | efficiency | end-to-end tok/s | wall s |\n|---|---|---|---|---|")
    for r in rows:
        eff = f"{100 * r['efficiency']:.0f}%" if r["efficiency"] else ""
        print(f"| {r['gpus']} | {r['steady_tokens_per_s'] or 0:.0f} | {eff} | {r['tokens_per_s_e2e']:.0f} | {r['wall_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
