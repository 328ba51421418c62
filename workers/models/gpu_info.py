"""Facts about the device that kernels size their launches by."""
from __future__ import annotations

import functools

import torch


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (what kernels size their grids by); 132, an
    H100's, elsewhere (the CPU interpreter runs any grid)."""
    if device.type != "cuda":
        return 132
    return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count
