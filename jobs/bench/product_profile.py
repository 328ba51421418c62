"""The product path without Ray: the shipped reference pair on held-out problems, requests handed
to the engine in the chunks one actor receives (batch x 4), each decoder timed, its rows compared
with vanilla sequential's, and where the time goes (phase split, host profile, GPU busy time).

Run: python -m jobs.bench.product_profile [--problems 1024] [--batch 64] [--cases seq,dyn,paper,exact,auto]
Writes product_profile.json (+ host profiles) under --out; prints a table last.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import subprocess
import sys
import time
from pathlib import Path

import torch

from pipeline.reference_data import heldout_problems
from workers.api import DecodeConfig, Request
from workers.engine import Engine
from workers.models import load_model
from workers.runtime import warmup
from workers.text.tokenizer import load_tokenizer

REFERENCE = Path(__file__).resolve().parents[2] / "models" / "reference"
CASES = {
    "seq": dict(decoder="vanilla", remasking="sequential"),
    "dyn": dict(decoder="vanilla", remasking="dynamic"),
    "paper": dict(decoder="simsd", verify="paper", adaptive="off"),
    "exact": dict(decoder="simsd", verify="exact", adaptive="off"),
    "auto": dict(decoder="simsd", verify="exact", adaptive="on"),
    "exact-dyndraft": dict(decoder="simsd", verify="exact", adaptive="off", draft_remasking="dynamic"),
    "exact-1step": dict(decoder="simsd", verify="exact", adaptive="off", denoising_steps=1,
                        draft_remasking="sequential"),
}


def generate_chunks(engine: Engine, requests: list[Request], chunk: int) -> list:
    results = []
    for i in range(0, len(requests), chunk):
        results += engine.generate(requests[i:i + chunk])
    return results


def gpu_busy(engine: Engine, requests: list[Request], chunk: int) -> dict:
    """Device kernel time vs wall time over one chunk (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if engine.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        start = time.perf_counter()
        generate_chunks(engine, requests[:chunk], chunk)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    device_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    table = events.table(sort_by="self_device_time_total" if engine.device.type == "cuda" else "self_cpu_time_total",
                         row_limit=25)
    return {"wall_s": wall, "device_busy_s": device_us / 1e6, "busy_fraction": device_us / 1e6 / wall,
            "table": table}


def host_profile(engine: Engine, requests: list[Request], chunk: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    generate_chunks(engine, requests[:chunk], chunk)
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
    return s.getvalue()


def run_case(name, target, draft, tok, requests, args, out: Path) -> tuple[dict, list]:
    kw = CASES[name]
    cfg = DecodeConfig(batch_size=args.batch, max_new_tokens=args.max_new, attention=args.attention,
                       compile=args.compile, **kw)
    engine = Engine.from_models(target, draft if kw["decoder"] == "simsd" else None, tok, cfg)
    chunk = args.batch * 4
    sync = torch.cuda.synchronize if engine.device.type == "cuda" else (lambda: None)
    before, start = warmup.snapshot(), time.perf_counter()
    generate_chunks(engine, requests[:chunk], chunk)  # warm-up: graph capture, compile
    sync()
    warm = {"wall_s": time.perf_counter() - start, **warmup.since(before)}
    before, start = warmup.snapshot(), time.perf_counter()
    results = generate_chunks(engine, requests, chunk)
    sync()
    wall = time.perf_counter() - start
    later = warmup.since(before)  # captures or compiles the timed chunks still paid for
    tokens = sum(len(r.token_ids) for r in results)
    rounds = sum(r.num_rounds for r in results)
    rec = {"case": name, **kw, "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
           "tokens_per_round": tokens / max(rounds, 1),
           "target_forwards_per_row": sum(r.num_target_forwards for r in results) / len(results),
           "draft_forwards_per_row": sum(r.num_draft_forwards for r in results) / len(results),
           "undrafted_round_fraction": sum(r.num_undrafted_rounds for r in results) / max(rounds, 1),
           "first_chunk": warm, "timed_chunks_warmup": later}
    engine.timer.enabled = True
    engine.timer.reset()
    start = time.perf_counter()
    generate_chunks(engine, requests[:chunk], chunk)
    split = engine.timer.snapshot()
    split_wall = time.perf_counter() - start
    rec["split_s"] = {**split["seconds"], "host_other": split_wall - sum(split["seconds"].values())}
    rec["split_steps"] = split["counts"].get("steps", 0)
    engine.timer.enabled = False
    if name in args.profile:
        busy = gpu_busy(engine, requests, chunk)
        (out / f"kernels-{name}.txt").write_text(busy.pop("table"))
        rec["gpu"] = busy
        (out / f"host-{name}.txt").write_text(host_profile(engine, requests, chunk))
    engine.close()
    return rec, [r.token_ids for r in results]


def _warm(w: dict) -> str:
    return f"{w['wall_s']:.1f} ({w['graph_captures']}/{w['capture_s']:.1f}, {w['compile_s']:.1f})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--problems", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-new", type=int, default=256)
    p.add_argument("--attention", default="auto")
    p.add_argument("--compile", default="auto", help="torch.compile of the layers: auto, on, off")
    p.add_argument("--cases", default="seq,dyn,paper,exact,auto")
    p.add_argument("--profile", default="seq,exact", help="cases to profile (host and GPU)")
    p.add_argument("--out", default="product-profile")
    args = p.parse_args(argv)
    args.profile = set(args.profile.split(",")) if args.profile else set()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    tok = load_tokenizer(REFERENCE / "target")
    target = load_model(REFERENCE / "target", dev, "auto")
    draft = load_model(REFERENCE / "draft", dev, "auto")
    requests = [Request(i, tok.encode_prompt(q)) for i, (q, _) in enumerate(heldout_problems(args.problems))]
    rows, base = [], None
    for name in args.cases.split(","):
        rec, tokens = run_case(name, target, draft, tok, requests, args, out)
        base = tokens if base is None else base
        rec["identical_rows"] = sum(a == b for a, b in zip(tokens, base))
        rows.append(rec)
        print(json.dumps({k: v for k, v in rec.items() if k != "gpu"}), flush=True)
    for r in rows:
        r["x_first"] = r["tokens_per_s"] / rows[0]["tokens_per_s"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    (out / "product_profile.json").write_text(json.dumps({"device": name, "commit": commit, "args": vars(args)
                                                          | {"profile": sorted(args.profile)}, "rows": rows},
                                                         indent=1, default=str))
    print(f"\n{name} @ {commit}, batch {args.batch}, {args.problems} problems, attention {args.attention}, compile {args.compile}")
    print("| case | tok/s | x first | tok/round | tgt fwd/row | draft fwd/row | undrafted | identical | "
          "split (s, one chunk) | GPU busy | first chunk s (captures/s, compile s) | timed: captures/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        split = " ".join(f"{k}={v:.2f}" for k, v in r["split_s"].items())
        busy = f"{r['gpu']['busy_fraction']:.2f}" if "gpu" in r else "-"
        print(f"| {r['case']} | {r['tokens_per_s']:.0f} | {r['x_first']:.2f} | {r['tokens_per_round']:.2f} | "
              f"{r['target_forwards_per_row']:.1f} | {r['draft_forwards_per_row']:.1f} | "
              f"{r['undrafted_round_fraction']:.3f} | {r['identical_rows']}/{len(requests)} | {split} | {busy} | "
              f"{_warm(r['first_chunk'])} | {r['timed_chunks_warmup']['graph_captures']}/"
              f"{r['timed_chunks_warmup']['capture_s']:.1f} |")
    return 0


if __name__ == "__main__":
    from jobs.cli import exit_now, run_main

    exit_now(run_main(main))  # no interpreter teardown: it can hang after CUDA graphs and compile workers
