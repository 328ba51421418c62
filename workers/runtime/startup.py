"""One engine actor's start-up timeline, as data: wall-clock instants (``time.time()``, comparable
with the driver's clock on one node, and within clock skew across nodes) and what the first
engine call paid for warming up. The driver turns the first actor's timeline into the run's
``startup_breakdown`` (pipeline/startup.py)."""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

IMPORTED_AT = time.time()  # this module is imported first thing by workers.actor


@dataclass
class StartupTimeline:
    imported_at: float = IMPORTED_AT    # the actor's code began importing (torch and the engine next)
    constructed_at: float | None = None  # the actor's constructor began (imports done)
    loaded_at: float | None = None       # models, tokenizer and device ready
    load: dict = field(default_factory=dict)  # the engine's own load phases (seconds)
    first_call_at: float | None = None   # the first engine call began
    first_call_s: float | None = None    # ... and took this long
    compile_s: float = 0.0               # torch.compile seconds inside the first call
    capture_s: float = 0.0               # CUDA graph capture seconds inside it (compilation included)
    graph_captures: int = 0
    compiled_graphs: int = 0             # torch.compile graphs compiled inside it
    cpus: int = field(default_factory=lambda: len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 0))  # CPUs this process may run on

    def as_dict(self) -> dict:
        return asdict(self)


class FirstCall:
    """Context manager around an engine call: records the first one into ``timeline``."""

    def __init__(self, timeline: StartupTimeline):
        self.timeline = timeline
        self.recorded = False  # True after exiting the first call's context
        self._before: dict | None = None

    def __enter__(self):
        if self.timeline.first_call_at is None:
            from . import warmup

            self.timeline.first_call_at = time.time()
            self._before = warmup.snapshot()
        return self

    def __exit__(self, *exc) -> bool:
        if self._before is not None:
            from . import warmup

            spent = warmup.since(self._before)
            t = self.timeline
            t.first_call_s = time.time() - t.first_call_at
            t.compile_s, t.capture_s = spent["compile_s"], spent["capture_s"]
            t.graph_captures, t.compiled_graphs = spent["graph_captures"], spent["compiled_graphs"]
            self._before, self.recorded = None, True
        return False
