"""The two matmul loops of the Triton expert and dense-layer kernels, as Triton device functions.

The callers (``moe_small``: a few tokens, ``moe_kernels``: the grouped GEMM, ``skinny_linear`` and
``swiglu_linear``: the dense layers' small forwards) differ only in which rows they gather and
which weight a program serves; the tiles themselves are the same:
- ``swiglu_tile``: SiLU(x W_gate^T) * (x W_up^T) for BM gathered rows and BN columns of the FFN,
  gate and up read in the same loop;
- ``matmul_tile``: a [BM, K] row gather times BN rows of a row-major [N, K] weight.
Weights are loaded as [BK, BN] tiles; accumulation is float32.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def swiglu_tile(x_ptr, rows, row_ok, s_xm, w_ptr, cols, col_ok, s_wn, I, K,
                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """rows [BM] of x (row stride s_xm, masked by row_ok); w_ptr: one expert's [2I, K] (gate rows
    first, row stride s_wn); cols [BN] of the FFN -> [BM, BN] float32."""
    ks = tl.arange(0, BK)
    x_ptrs = x_ptr + rows[:, None].to(tl.int64) * s_xm + ks[None, :]
    wg_ptrs = w_ptr + cols[None, :].to(tl.int64) * s_wn + ks[:, None]
    wu_ptrs = wg_ptrs + I * s_wn
    acc_g = tl.zeros((BM, BN), dtype=tl.float32)
    acc_u = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        k_ok = ks + k0 < K
        xt = tl.load(x_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        wg = tl.load(wg_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        wu = tl.load(wu_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc_g = tl.dot(xt, wg, acc_g)
        acc_u = tl.dot(xt, wu, acc_u)
        x_ptrs += BK
        wg_ptrs += BK
        wu_ptrs += BK
    return acc_g * tl.sigmoid(acc_g) * acc_u


@triton.jit
def matmul_tile(a_ptr, rows, row_ok, s_am, w_ptr, cols, col_ok, s_wn, K,
                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """rows [BM] of a (row stride s_am, masked by row_ok) times rows cols [BN] of w ([N, K],
    row stride s_wn), transposed -> [BM, BN] float32."""
    ks = tl.arange(0, BK)
    a_ptrs = a_ptr + rows[:, None].to(tl.int64) * s_am + ks[None, :]
    w_ptrs = w_ptr + cols[None, :].to(tl.int64) * s_wn + ks[:, None]
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        k_ok = ks + k0 < K
        at = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        wt = tl.load(w_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(at, wt, acc)
        a_ptrs += BK
        w_ptrs += BK
    return acc
