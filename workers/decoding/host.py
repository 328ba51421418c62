"""Host -> device transfers that do not stall the GPU queue."""
from __future__ import annotations

import torch


def to_device(values, device) -> torch.Tensor:
    """``torch.tensor(values)`` on ``device``, copied asynchronously on CUDA.

    A plain ``torch.tensor(..., device="cuda")`` synchronises with the stream, so the host waits
    for every queued kernel before it can queue the next step; through pinned memory the copy is
    queued like a kernel and the host runs ahead.
    """
    t = torch.tensor(values)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


class HostCopy:
    """A device tensor's values on their way to the host. On CUDA the copy is queued like a
    kernel (pinned memory, an event after it), so ``tolist()`` waits for the work queued before
    the copy, not for what the host queued after it."""

    def __init__(self, t: torch.Tensor):
        self.event = None
        if t.device.type == "cuda":
            self.values = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            self.values.copy_(t, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.values = t.clone()

    def tolist(self) -> list:
        if self.event is not None:
            self.event.synchronize()
        return self.values.tolist()
