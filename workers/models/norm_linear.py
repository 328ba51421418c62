"""RMSNorm fused into the matmul after it, for forwards of a few tokens (with SwiGLU for gate/up).

A layer normalises its input twice, each time for one matmul only (q/k/v, then gate/up). With a
few query rows, each weight-streaming program (``skinny_linear``) already reads every input row
whole, so it can normalise them on the way: it multiplies each input tile by the norm weight,
accumulates the rows' sums of squares in the same loop, and scales its float32 result by
``rsqrt(mean + eps)`` at the end. ``norm_swiglu`` also reads the gate and the up rows of its
output block in that loop and returns ``silu(gate) * up``: the layer's whole MLP input side is one
kernel, and the [rows, 2I] gate/up tensor is never written.

Numerics: the normalised input is rounded to the weight dtype before the product (as the
unfused layer rounds ``rms_norm``'s output), but the scale ``rsqrt(mean + eps)`` is applied to
the float32 product instead of before the rounding, and SwiGLU takes the float32 gate and up.
Each is one rounding away from the unfused layer.

Larger forwards (more than ``MAX_ROWS`` rows) run one RMSNorm kernel, cuBLAS, and for SwiGLU one
elementwise kernel: the kernel count the compiled unfused layer has. Importing this module
imports Triton.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .skinny_linear import CONFIG_OVERRIDE, MAX_ROWS, tile_config


@triton.jit
def _norm_matmul_kernel(x_ptr, nw_ptr, w_ptr, out_ptr, M, N, K, eps, s_xm, s_wn, s_om,
                        SWIGLU: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rows = tl.arange(0, BM)
    row_ok = rows < M
    cols = tl.program_id(0) * BN + tl.arange(0, BN)
    col_ok = cols < N
    ks = tl.arange(0, BK)
    x_ptrs = x_ptr + rows[:, None] * s_xm + ks[None, :]
    w_ptrs = w_ptr + cols[None, :].to(tl.int64) * s_wn + ks[:, None]
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    acc_up = tl.zeros((BM, BN), dtype=tl.float32)
    sq = tl.zeros((BM,), dtype=tl.float32)
    for k0 in range(0, K, BK):
        k_ok = ks + k0 < K
        xt = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)
        sq += tl.sum(xt * xt, axis=1)
        nw = tl.load(nw_ptr + k0 + ks, mask=k_ok, other=0.0).to(tl.float32)
        xn = (xt * nw[None, :]).to(w_ptr.dtype.element_ty)
        w_ok = k_ok[:, None] & col_ok[None, :]
        acc = tl.dot(xn, tl.load(w_ptrs, mask=w_ok, other=0.0), acc)
        if SWIGLU:  # the up rows sit N rows below the gate rows
            acc_up = tl.dot(xn, tl.load(w_ptrs + N * s_wn, mask=w_ok, other=0.0), acc_up)
        x_ptrs += BK
        w_ptrs += BK
    rstd = tl.math.rsqrt(sq / K + eps)[:, None]
    acc = acc * rstd
    if SWIGLU:
        acc = acc * tl.sigmoid(acc) * (acc_up * rstd)
    tl.store(out_ptr + rows[:, None] * s_om + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _rms_norm_kernel(x_ptr, nw_ptr, out_ptr, K, eps, s_xm, s_om, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    ks = tl.arange(0, BLOCK)
    ok = ks < K
    x = tl.load(x_ptr + row * s_xm + ks, mask=ok, other=0.0).to(tl.float32)
    h = x * tl.math.rsqrt(tl.sum(x * x, axis=0) / K + eps)
    h = h * tl.load(nw_ptr + ks, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * s_om + ks, h.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, N, s_gm, s_om, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < N
    gate = tl.load(gu_ptr + row * s_gm + cols, mask=ok, other=0.0).to(tl.float32)
    up = tl.load(gu_ptr + row * s_gm + N + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * s_om + cols, (gate * tl.sigmoid(gate) * up).to(out_ptr.dtype.element_ty), mask=ok)


def _rows(x: torch.Tensor) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def rms_norm_rows(x2: torch.Tensor, norm_w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of x2 [M, K] in one kernel (statistics in float32, rounded once), as ``rms_norm``."""
    m, k = x2.shape
    out = torch.empty_like(x2)
    _rms_norm_kernel[(m,)](x2, norm_w, out, k, eps, x2.stride(0), out.stride(0), BLOCK=triton.next_power_of_2(k))
    return out


def fused_norm_matmul(x: torch.Tensor, norm_w: torch.Tensor, eps: float, w: torch.Tensor, swiglu: bool,
                      config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """``rms_norm(x) @ w.T`` (swiglu: ``silu(g) * u`` of its two halves) for at most MAX_ROWS rows."""
    x2 = _rows(x)
    m, k = x2.shape
    n = w.shape[0] // 2 if swiglu else w.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 132
    bn, bk, warps, stages = config or CONFIG_OVERRIDE.get((w.shape[0], k)) or tile_config(w.shape[0], k, sms)
    _norm_matmul_kernel[(triton.cdiv(n, bn),)](
        x2, norm_w, w, out, m, n, k, eps, x2.stride(0), w.stride(0), out.stride(0),
        SWIGLU=swiglu, BM=16 if m <= 16 else 32, BN=bn, BK=bk, num_warps=warps, num_stages=stages)
    return out.view(*x.shape[:-1], n)


def _fits(x: torch.Tensor, w: torch.Tensor) -> bool:
    rows = x.numel() // max(x.shape[-1], 1)
    return 0 < rows <= MAX_ROWS and x.dtype in (torch.bfloat16, torch.float16) and w.dtype == x.dtype


@torch.library.custom_op("simsd::norm_linear", mutates_args=())
def norm_linear(x: torch.Tensor, norm_w: torch.Tensor, eps: float, w: torch.Tensor) -> torch.Tensor:
    """``F.linear(rms_norm(x, norm_w, eps), w)``: fused for a few half-precision rows."""
    if _fits(x, w):
        return fused_norm_matmul(x, norm_w, eps, w, False)
    return F.linear(rms_norm_rows(_rows(x), norm_w, eps), w).view(*x.shape[:-1], w.shape[0])


@norm_linear.register_fake
def _(x, norm_w, eps, w):
    return x.new_empty(*x.shape[:-1], w.shape[0])


@torch.library.custom_op("simsd::norm_swiglu", mutates_args=())
def norm_swiglu(x: torch.Tensor, norm_w: torch.Tensor, eps: float, w: torch.Tensor) -> torch.Tensor:
    """``silu(g) * u`` where ``g, u = F.linear(rms_norm(x, norm_w, eps), w).chunk(2, -1)``."""
    n = w.shape[0] // 2
    if _fits(x, w):
        return fused_norm_matmul(x, norm_w, eps, w, True)
    gu = F.linear(rms_norm_rows(_rows(x), norm_w, eps), w)
    out = torch.empty(gu.shape[0], n, dtype=gu.dtype, device=gu.device)
    block = 1024
    _silu_mul_kernel[(gu.shape[0], triton.cdiv(n, block))](gu, out, n, gu.stride(0), out.stride(0), BLOCK=block)
    return out.view(*x.shape[:-1], n)


@norm_swiglu.register_fake
def _(x, norm_w, eps, w):
    return x.new_empty(*x.shape[:-1], w.shape[0] // 2)
