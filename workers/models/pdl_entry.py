"""The first statement of every project Triton kernel on the decode path: programmatic dependent
launch (PDL, Hopper and later; ``gpu_info.pdl`` decides, the launch passes ``launch_pdl``).

A kernel launched with PDL may be scheduled while the kernel before it still runs; it must not
touch memory until that kernel has finished. ``pdl_enter`` waits for that (``griddepcontrol.wait``)
and then lets the kernel after this one be scheduled in turn, so the launch and ramp-up of each
kernel overlap the tail of the one before instead of following it. Without PDL (CPU interpreter,
older GPUs, ``SIMSD_PDL=0``) it compiles to nothing. Importing this module imports Triton.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def pdl_enter(PDL: tl.constexpr):
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


def pdl_args(on: bool) -> dict:
    """The launch keywords of a kernel that starts with ``pdl_enter``."""
    return {"PDL": on, "launch_pdl": on}
