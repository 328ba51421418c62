"""Pipeline overhead: the same prompts through the bare engine and through `simsd generate`
(Ray Data, one actor on one GPU). Prints both throughputs and the loss, writes JSON.

usage: python -m jobs.pipeline_bench [--prompts N] [--decoder simsd] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = Path(__file__).resolve().parent.parent / "models" / "reference"


def parse_args(argv):
    p = argparse.ArgumentParser(allow_abbrev=False, prog="simsd pipeline-bench", description=__doc__)
    p.add_argument("--prompts", type=int, default=2048)
    p.add_argument("--decoder", default="simsd", choices=["vanilla", "simsd"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="pipeline-bench")
    return p.parse_args(argv)


def write_prompts(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.reference_data import heldout_problems

    problems = heldout_problems(n)
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(n)], "prompt": [q for q, _ in problems]}), path)


def bare_engine(config, prompts_path: Path) -> dict:
    import pyarrow.parquet as pq

    from workers.api import Request
    from workers.engine import Engine

    start = time.perf_counter()
    engine = Engine(config.target, config.draft, config.decode, config.device, config.dtype)
    loaded = time.perf_counter()
    rows = pq.read_table(prompts_path).to_pylist()
    requests = [Request(r["id"], engine.tokenizer.encode_prompt(r["prompt"])) for r in rows]
    results = []
    chunk = config.batch_size * 4  # what one actor receives per call in the pipeline
    for i in range(0, len(requests), chunk):
        results += engine.generate(requests[i:i + chunk])
    done = time.perf_counter()
    tokens = sum(len(r.token_ids) for r in results)
    return {"tokens": tokens, "load_s": loaded - start, "generate_s": done - loaded, "wall_s": done - start,
            "tokens_per_s": tokens / (done - loaded), "tokens_per_s_e2e": tokens / (done - start)}


def pipeline_run(config) -> dict:
    from pipeline.driver import run

    start = time.perf_counter()
    stats = run(config)
    wall = time.perf_counter() - start
    return {"tokens": stats["generated_tokens_this_run"], "wall_s": wall,
            "tokens_per_s_e2e": stats["generated_tokens_this_run"] / wall,
            "startup_s": stats.get("startup_s"), "time_to_first_row_s": stats.get("time_to_first_row_s"),
            "startup_breakdown": json.loads(stats.get("startup_breakdown") or "{}")}


def main(argv=None) -> int:
    from pipeline.config import from_mapping

    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.prompts // 4, args.prompts):
            prompts = Path(tmp) / f"prompts-{n}.parquet"
            write_prompts(prompts, n)
            config = from_mapping({
                "input": str(prompts), "output": str(Path(tmp) / f"out-{n}"), "target": str(REFERENCE / "target"),
                "draft": str(REFERENCE / "draft") if args.decoder == "simsd" else None, "decoder": args.decoder,
                "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "device": args.device,
                "workers": 1})
            runs[n] = pipeline_run(config)
        bare = bare_engine(config, prompts)
    small, large = runs[args.prompts // 4], runs[args.prompts]
    # The difference of two runs cancels the fixed start-up (Ray, actor scheduling, model load).
    if large["wall_s"] <= small["wall_s"]:
        print("simsd pipeline-bench: error: the larger run was not slower; use more --prompts", file=sys.stderr)
        return 1
    steady = (large["tokens"] - small["tokens"]) / (large["wall_s"] - small["wall_s"])
    report = {"prompts": args.prompts, "decoder": args.decoder, "batch_size": args.batch_size, "bare": bare,
              "pipeline": runs, "pipeline_steady_tokens_per_s": steady,
              "pipeline_startup_s": small["wall_s"] - small["tokens"] / steady,
              "loss_vs_bare_steady": 1 - steady / bare["tokens_per_s"],
              "loss_vs_bare_e2e": 1 - large["tokens_per_s_e2e"] / bare["tokens_per_s_e2e"]}
    (out / "pipeline_bench.json").write_text(json.dumps(report, indent=1))
    print(f"bare engine : {bare['tokens_per_s']:.0f} tok/s generating; {bare['tokens_per_s_e2e']:.0f} tok/s "
          f"counting its {bare['load_s']:.1f} s model load")
    print(f"pipeline    : {steady:.0f} tok/s steady state (difference of {args.prompts // 4} and {args.prompts} "
          f"prompts); {large['tokens_per_s_e2e']:.0f} tok/s end to end; start-up {report['pipeline_startup_s']:.1f} s")
    print(f"loss vs bare: {100 * report['loss_vs_bare_steady']:.1f}% steady state, "
          f"{100 * report['loss_vs_bare_e2e']:.1f}% end to end")
    from pipeline.startup import describe

    for n, run in runs.items():
        print(f"start-up ({n} prompts): first row {run['time_to_first_row_s'] or 0:.1f} s; "
              f"{describe(run['startup_breakdown'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
