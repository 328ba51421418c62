"""SimSD through `simsd generate` itself (Ray, one actor, the shipped reference pair): held-out
problems, one job per decoder, rows compared with vanilla sequential's. Prints a table last and
writes pipeline_pays.json under --out.

Run: python -m jobs.gpu_checks.pipeline_pays [--problems 4096] [--batch 64] [--cases seq,dyn,draft]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.reference_data import heldout_problems
from pipeline.startup import describe

REFERENCE = Path(__file__).resolve().parents[2] / "models" / "reference"
CASES = {
    "seq": ["--decoder", "vanilla", "--remasking", "sequential"],
    "dyn": ["--decoder", "vanilla", "--remasking", "dynamic"],
    "draft": ["--draft", str(REFERENCE / "draft")],
    "paper": ["--draft", str(REFERENCE / "draft"), "--decoder", "simsd", "--verify", "paper"],
}


def run_case(name: str, prompts: Path, out: Path, args) -> dict:
    dest = out / f"out-{name}"
    cmd = [sys.executable, "-m", "jobs.cli", "generate", "--input", str(prompts), "--output", str(dest),
           "--target", str(REFERENCE / "target"), "--batch-size", str(args.batch),
           "--max-new-tokens", str(args.max_new), "--overwrite", *CASES[name]]
    if args.compile_cache_dir:
        cmd += ["--compile-cache-dir", args.compile_cache_dir]
    cmd += args.extra.split()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / f"log-{name}.txt").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
    if proc.returncode != 0:
        return {"case": name, "rc": proc.returncode, "wall_s": wall}
    summary = pq.read_table(dest / "summary.parquet").to_pylist()[0]
    rows = pq.read_table(dest / "data", columns=["id", "generated_token_ids"]).to_pylist()
    return {"case": name, "rc": 0, "wall_s": wall, "summary": summary,
            "tokens": {r["id"]: r["generated_token_ids"] for r in rows}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=4096)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-new", type=int, default=256)
    p.add_argument("--cases", default="seq,dyn,draft")
    p.add_argument("--out", default="pipeline-pays")
    p.add_argument("--compile-cache-dir", default=None, help="passed to every job (default: the product's)")
    p.add_argument("--extra", default="", help="more flags for every job, e.g. '--compile off'")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = out / "prompts.parquet"
    qs = [q for q, _ in heldout_problems(args.problems)]
    pq.write_table(pa.table({"id": list(range(len(qs))), "prompt": qs}), prompts)
    recs = []
    for name in args.cases.split(","):
        recs.append(run_case(name, prompts, out, args))
        s = recs[-1].get("summary", {})
        print(json.dumps({"case": name, "rc": recs[-1]["rc"], "wall_s": recs[-1]["wall_s"],
                          "tokens_per_s": s.get("tokens_per_s")}), flush=True)
    base = recs[0].get("tokens", {})
    table = []
    for r in recs:
        s = r.get("summary", {})
        same = sum(base.get(i) == t for i, t in r.pop("tokens", {}).items())
        table.append({"case": r["case"], "rc": r["rc"], "steady_tok_s": s.get("tokens_per_s"),
                      "e2e_tok_s": s.get("tokens_per_s_e2e"), "first_row_s": s.get("time_to_first_row_s"),
                      "undrafted": s.get("undrafted_round_fraction_this_run"), "identical": same,
                      "wall_s": r["wall_s"], "summary": s})
    (out / "pipeline_pays.json").write_text(json.dumps(table, indent=1, default=str))
    first = table[0]["steady_tok_s"] or 1
    print(f"\n{args.problems} problems, batch {args.batch}, {args.max_new} new tokens")
    print("| case | steady tok/s | x first | e2e tok/s | first row s | undrafted | identical | rc |")
    print("|---|---|---|---|---|---|---|---|")
    for t in table:
        f = lambda v, d=0: "-" if v is None else f"{v:,.{d}f}"  # noqa: E731
        print(f"| {t['case']} | {f(t['steady_tok_s'])} | {f((t['steady_tok_s'] or 0) / first, 2)} | "
              f"{f(t['e2e_tok_s'])} | {f(t['first_row_s'], 1)} | {f(t['undrafted'], 3)} | "
              f"{t['identical']}/{args.problems} | {t['rc']} |")
    for t in table:  # where each job's time to its first row went
        print(f"{t['case']} start-up: {describe(t['summary'].get('startup_breakdown'))}")
    return 0


if __name__ == "__main__":
    from jobs.cli import exit_now, run_main

    exit_now(run_main(main))  # no interpreter teardown: it can hang after CUDA graphs and compile workers
