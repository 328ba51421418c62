"""Facts about the device that kernels size their launches by."""
from __future__ import annotations

import functools
import os

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


def pdl(device: torch.device) -> bool:
    """Whether the project's Triton kernels launch with programmatic dependent launch (Hopper and
    later): a kernel's programs are scheduled while its predecessor finishes and wait for it
    (``griddepcontrol.wait``) before touching memory. ``SIMSD_PDL=0`` turns it off."""
    if device.type != "cuda" or os.environ.get("SIMSD_PDL", "1") == "0":
        return False
    return _cuda_capability(device.index if device.index is not None else torch.cuda.current_device()) >= 9


@functools.cache
def _cuda_capability(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]
