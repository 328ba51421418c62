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
    p = argparse.ArgumentParser(prog="simsd pipeline-bench", description=__doc__)
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

    from jobs.reference_data import heldout_problems

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
            "tokens_per_s_e2e": stats["generated_tokens_this_run"] / wall}


def main(argv=None) -> int:
    from pipeline.config import from_mapping

    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.parquet"
        write_prompts(prompts, args.prompts)
        config = from_mapping({
            "input": str(prompts), "output": str(Path(tmp) / "out"), "target": str(REFERENCE / "target"),
            "draft": str(REFERENCE / "draft") if args.decoder == "simsd" else None, "decoder": args.decoder,
            "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "device": args.device,
            "workers": 1})
        bare = bare_engine(config, prompts)
        piped = pipeline_run(config)
    report = {"prompts": args.prompts, "decoder": args.decoder, "batch_size": args.batch_size, "bare": bare,
              "pipeline": piped,
              "loss_vs_bare_e2e": 1 - piped["tokens_per_s_e2e"] / bare["tokens_per_s_e2e"],
              "loss_vs_bare_generate_only": 1 - piped["tokens_per_s_e2e"] / bare["tokens_per_s"]}
    (out / "pipeline_bench.json").write_text(json.dumps(report, indent=1))
    print(f"bare engine: {bare['tokens_per_s']:.0f} tok/s generating, {bare['tokens_per_s_e2e']:.0f} tok/s with load "
          f"({bare['load_s']:.1f} s)")
    print(f"pipeline   : {piped['tokens_per_s_e2e']:.0f} tok/s end to end (Ray start, actor load, read, write)")
    print(f"loss vs bare (both end to end): {100 * report['loss_vs_bare_e2e']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
