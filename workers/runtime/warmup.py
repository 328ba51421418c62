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


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process (from its cache or not)."""
    try:
        from torch._dynamo.utils import counters
    except Exception:  # noqa: BLE001 - as above
        return 0
    return int(counters["stats"]["unique_graphs"])


def snapshot() -> dict:
    return {"graph_captures": CAPTURES.count, "capture_s": CAPTURES.seconds, "compile_s": compile_seconds(),
            "compiled_graphs": compiled_graphs()}


def since(before: dict) -> dict:
    """What was spent after ``before`` (a snapshot())."""
    return {k: v - before[k] for k, v in snapshot().items()}
