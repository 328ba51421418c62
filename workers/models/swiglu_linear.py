"""The MLP's input side in one kernel for forwards of a few tokens: ``silu(x W_gate^T) * (x W_up^T)``.

Each program streams the gate rows and the up rows of its block of ``BN`` FFN features in the same
loop (the MoE kernels' ``swiglu_tile``) and applies SwiGLU to the float32 results, so the
[rows, 2I] gate/up tensor is never written and no elementwise kernel follows. Larger forwards
(more than ``MAX_ROWS`` rows) run cuBLAS and one SwiGLU kernel: the kernel count of the compiled
unfused layer.

Numerics: SwiGLU takes the float32 gate and up (the unfused layer rounds them to the model dtype
first); one rounding away from it. Importing this module imports Triton.

(RMSNorm fused into these kernels' input was measured and dropped: scaling the input tile in
registers stalls the loads' pipelining; on an H100 the q/k/v and gate/up matmuls of SDAR-8B
took 8.0 ms a forward with it against 5.1 ms without. docs/engine.md has the figures.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .matmul_tiles import swiglu_tile
from .skinny_linear import launch, rows_2d, takes_kernel


@triton.jit
def _swiglu_kernel(x_ptr, w_ptr, out_ptr, M, I, K, s_xm, s_wn, s_om,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rows = tl.arange(0, BM)
    row_ok = rows < M
    cols = tl.program_id(0) * BN + tl.arange(0, BN)
    col_ok = cols < I
    act = swiglu_tile(x_ptr, rows, row_ok, s_xm, w_ptr, cols, col_ok, s_wn, I, K, BM, BN, BK)
    tl.store(out_ptr + rows[:, None] * s_om + cols[None, :], act.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, N, s_gm, s_om, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < N
    gate = tl.load(gu_ptr + row * s_gm + cols, mask=ok, other=0.0).to(tl.float32)
    up = tl.load(gu_ptr + row * s_gm + N + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * s_om + cols, (gate * tl.sigmoid(gate) * up).to(out_ptr.dtype.element_ty), mask=ok)


def skinny_swiglu(x: torch.Tensor, w: torch.Tensor, config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """``silu(g) * u`` with ``g, u = (x @ w.T).chunk(2, -1)`` for at most MAX_ROWS rows of x."""
    x2 = rows_2d(x)
    m, k = x2.shape
    inter = w.shape[0] // 2
    out = torch.empty(m, inter, dtype=x.dtype, device=x.device)
    args = launch(inter, k, m, x.device, config)
    _swiglu_kernel[args.pop("grid")](x2, w, out, m, inter, k, x2.stride(0), w.stride(0), out.stride(0), **args)
    return out.view(*x.shape[:-1], inter)


@torch.library.custom_op("simsd::linear_swiglu", mutates_args=())
def linear_swiglu(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``silu(g) * u`` where ``g, u = F.linear(x, w).chunk(2, -1)``: one kernel for a few
    half-precision rows, cuBLAS and one SwiGLU kernel otherwise."""
    if takes_kernel(x, w):
        return skinny_swiglu(x, w)
    gu = F.linear(rows_2d(x), w)
    inter = w.shape[0] // 2
    out = torch.empty(gu.shape[0], inter, dtype=gu.dtype, device=gu.device)
    block = 1024
    _silu_mul_kernel[(gu.shape[0], triton.cdiv(inter, block))](gu, out, inter, gu.stride(0), out.stride(0), BLOCK=block)
    return out.view(*x.shape[:-1], inter)


@linear_swiglu.register_fake
def _(x, w):
    return x.new_empty(*x.shape[:-1], w.shape[0] // 2)
