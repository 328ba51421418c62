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


@triton.jit
def prefetch_rows(w_ptr, cols, col_ok, s_wn, K, SPAN: tl.constexpr):
    """Ask L2 for the first ``SPAN`` elements (2-byte) of weight rows ``cols`` of a row-major
    weight, one 128-byte line an address. Read-only data no kernel writes, so a streaming matmul
    may call this before ``pdl_enter``: the first tiles of its weights are on their way while the
    kernel before it finishes."""
    offs = tl.arange(0, SPAN // 64) * 64
    ok = col_ok[:, None] & (offs[None, :] < K)
    ptrs = w_ptr + cols[:, None].to(tl.int64) * s_wn + offs[None, :]
    ptrs = tl.where(ok, ptrs, w_ptr)
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs],
                              dtype=tl.int32, is_pure=False, pack=1)
