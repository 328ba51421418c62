"""CUDA-event timing of a zero-argument step, inside a CUDA graph where capture works."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Timing:
    ms: float | None      # median milliseconds per step (None on CPU: not timed)
    out: torch.Tensor     # the step's output (from the graph's last replay when graphed)
    graphed: bool
    note: str = ""


def _capture(step: Callable[[], torch.Tensor], warmup: int):
    """Warm up on a side stream (compiles, autotunes, JIT), then capture one step."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return graph, out


def _median_ms(fn: Callable[[], object], iters: int) -> float:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def measure(step: Callable[[], torch.Tensor], device: torch.device, iters: int = 50, warmup: int = 10,
            use_graph: bool = True) -> Timing:
    """Median of `iters` CUDA-event timings after `warmup` calls; graph replay when capturable."""
    if device.type != "cuda":
        return Timing(None, step(), graphed=False)
    note = ""
    if use_graph:
        try:
            graph, out = _capture(step, warmup)
            ms = _median_ms(graph.replay, iters)
            return Timing(ms, out, graphed=True)
        except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager timing
            note = f"graph capture failed ({type(exc).__name__}: {str(exc)[:120]}); eager timing"
            torch.cuda.synchronize()
    for _ in range(warmup):
        step()
    ms = _median_ms(step, iters)
    return Timing(ms, step(), graphed=False, note=note)
