"""Where decoding time goes: wall time per phase, returned as data."""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch


class PhaseTimer:
    """Accumulates seconds per phase (prefill / draft / verify / denoise / commit) and counters.

    Off by default. When on, phases end with a device synchronisation so GPU time lands in the
    phase that queued it; that costs a little, so only benchmarks turn it on.
    """

    def __init__(self, device: torch.device, enabled: bool = False):
        self.device, self.enabled = device, enabled
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, phase: str):
        if not self.enabled:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[phase] += time.perf_counter() - start

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def reset(self) -> None:
        self.seconds.clear()
        self.counts.clear()

    def snapshot(self) -> dict:
        return {"seconds": dict(self.seconds), "counts": dict(self.counts)}
