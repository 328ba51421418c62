"""What a process has spent on warming up so far: CUDA graph captures and torch.compile time,
as data (benchmarks take the difference around a call to see what that call paid for)."""
from __future__ import annotations

from ..graphs import CAPTURES


def compile_seconds() -> float:
    """Seconds torch.compile (dynamo + inductor) has spent in this process."""
    try:
        from torch._dynamo.utils import compile_times

        names, values = compile_times(repr="csv", aggregate=True)
    except Exception:  # noqa: BLE001 - a private API: its absence means "unknown", not an error
        return 0.0
    table = dict(zip(names, values))
    return float(table.get("_compile.compile_inner", 0.0))


def snapshot() -> dict:
    return {"graph_captures": CAPTURES.count, "capture_s": CAPTURES.seconds, "compile_s": compile_seconds()}


def since(before: dict) -> dict:
    """What was spent after ``before`` (a snapshot())."""
    return {k: v - before[k] for k, v in snapshot().items()}
