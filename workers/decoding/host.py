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
