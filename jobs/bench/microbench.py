"""Micro-benchmark of one decoding forward: eager vs the fixed-shape path vs bare graph replay.

Run: python -m jobs.bench.microbench [shape] (shape: reference or sdar-1.7b / sdar-4b / sdar-8b)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from workers.decoding.layouts import full_block
from workers.models import load_model
from workers.runner import ModelRunner
from .shapes import random_model


def timeit(fn, n=50) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / n


def main(shape: str = "sdar-1.7b") -> None:
    dev = torch.device("cuda")
    if shape == "reference":
        model = load_model(Path(__file__).resolve().parents[2] / "models/reference/target", dev)
    else:
        model = random_model(shape, dev)
    B, P = 4, 256
    ids = torch.randint(0, 1000, (1, B), device=dev)
    pos = (P + torch.arange(B, device=dev))[None]
    vis = full_block(1, B, dev)
    slots = torch.zeros(1, dtype=torch.long, device=dev)
    rows = {}
    for static in (False, True):
        runner = ModelRunner(model, dev, static_shapes=static, cuda_graphs=static)
        runner.allocate(1, num_pages=4, page_size=128, pages_per_slot=4)
        runner.set_pages([0], [[0, 1, 2, 3]])
        with torch.inference_mode():
            runner.prefill(slots, [list(range(P))], B)
            rows[f"runner.hidden static={static}"] = timeit(lambda: runner.hidden(ids, pos, vis, slots))
            rows[f"hidden+logits static={static}"] = timeit(lambda: runner.logits(runner.hidden(ids, pos, vis, slots)))
            if static:
                fwd = next(iter(runner.static.forwards.values()))
                rows["graph.replay only"] = timeit(lambda: fwd.graph.replay())
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                        torch.profiler.ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        runner.logits(runner.hidden(ids, pos, vis, slots))
                    torch.cuda.synchronize()
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))
                print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
        runner.close()
    for k, v in rows.items():
        print(f"{shape:>12} {k:<32} {v:8.3f} ms")


if __name__ == "__main__":
    main(*sys.argv[1:])
