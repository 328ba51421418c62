"""Weight-streaming matmuls for forwards of a few query tokens (batch-1 and small-batch decode steps).

A decode step of one row multiplies 8 to 32 query tokens (a block of 4, in a batch bucket of 2,
sometimes with a folded block) by every weight matrix of the model: the cost is reading the
weights, and nothing else. cuBLAS picks split-K kernels for these shapes that read at about 80%
of the copy bandwidth and add a reduction kernel per matmul. Here one Triton kernel per matmul
streams the weight once: every program holds all the query rows in one tile and a block of
``BN`` output features, walks the whole K dimension (no split, so no reduction and a result that
does not depend on launch order), and can add the residual in its epilogue, so
``x + h W^T`` is rounded to the model dtype once.

``linear`` is the entry point (a ``torch.library`` operator, so ``torch.compile`` treats it as
one opaque call and CUDA graphs capture it): forwards of at most ``MAX_ROWS`` rows take the
kernel, larger ones ``F.linear`` (cuBLAS), decided at run time, so a compiled layer is not
specialised on the batch; there the residual is cuBLAS's own addend (``addmm``), so a larger
forward also adds it without a kernel of its own. Importing this module imports Triton.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .gpu_info import sm_count
from .matmul_tiles import matmul_tile

MAX_ROWS = 32  # query rows (tokens) the kernel takes; larger forwards go to cuBLAS


@triton.jit
def _skinny_kernel(x_ptr, w_ptr, res_ptr, out_ptr, M, N, K, s_xm, s_wn, s_rm, s_om,
                   HAS_RES: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rows = tl.arange(0, BM)
    row_ok = rows < M
    cols = tl.program_id(0) * BN + tl.arange(0, BN)
    col_ok = cols < N
    acc = matmul_tile(x_ptr, rows, row_ok, s_xm, w_ptr, cols, col_ok, s_wn, K, BM, BN, BK)
    ok = row_ok[:, None] & col_ok[None, :]
    if HAS_RES:
        acc += tl.load(res_ptr + rows[:, None] * s_rm + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows[:, None] * s_om + cols[None, :], acc.to(out_ptr.dtype.element_ty), mask=ok)


def tile_config(n: int, k: int, sms: int = 132) -> tuple[int, int, int, int]:
    """(BN, BK, num_warps, num_stages) for n output features over k: blocks of 32 features when
    that still gives two programs per SM, else 16 (a weight's programs must fill the GPU, since
    each one reads its share of the weight once)."""
    bn = 32 if n // 32 >= 2 * sms else 16
    return bn, 256 if k >= 256 else triton.next_power_of_2(max(k, 16)), 4, 4


def takes_kernel(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether the operators run their streaming kernel for x (else cuBLAS): 1 to MAX_ROWS rows,
    half precision (float32 stays on cuBLAS's exact float32 path)."""
    rows = x.numel() // max(x.shape[-1], 1)
    return 0 < rows <= MAX_ROWS and x.dtype in (torch.bfloat16, torch.float16) and w.dtype == x.dtype


def rows_2d(x: torch.Tensor) -> torch.Tensor:
    """x [..., K] as [rows, K] with unit stride along K (a view when it already is)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def launch(n: int, k: int, m: int, device: torch.device, config: tuple[int, int, int, int] | None) -> dict:
    """The grid and tile arguments of a streaming kernel with n output features over k, m rows."""
    bn, bk, warps, stages = config or tile_config(n, k, sm_count(device))
    return {"grid": (triton.cdiv(n, bn),), "BM": 16 if m <= 16 else 32, "BN": bn, "BK": bk,
            "num_warps": warps, "num_stages": stages}


def skinny_linear(x: torch.Tensor, w: torch.Tensor, residual: torch.Tensor | None = None,
                  config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """``x @ w.T (+ residual)`` for x [..., K] with at most MAX_ROWS rows, w [N, K] -> [..., N],
    accumulated in float32 and rounded to x's dtype once."""
    n, k = w.shape
    x2, w = rows_2d(x), rows_2d(w)
    m = x2.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    res = out if residual is None else rows_2d(residual)
    args = launch(n, k, m, x.device, config)
    _skinny_kernel[args.pop("grid")](x2, w, res, out, m, n, k, x2.stride(0), w.stride(0), res.stride(0),
                                     out.stride(0), HAS_RES=residual is not None, **args)
    return out.view(*x.shape[:-1], n)


@torch.library.custom_op("simsd::linear", mutates_args=())
def linear(x: torch.Tensor, w: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, w) (+ residual)``: the weight-streaming kernel for at most MAX_ROWS rows of
    a half-precision x, cuBLAS otherwise (an opaque operator under torch.compile)."""
    if takes_kernel(x, w):
        return skinny_linear(x, w, residual)
    if residual is None:
        # As 2-D rows: a strided 3-D x (a folded forward's slice) would go to cuBLAS as one small
        # GEMM per leading index, each reading the whole weight (the LM head: 16 ms at 64 rows).
        return F.linear(rows_2d(x), w).view(*x.shape[:-1], w.shape[0])
    # cuBLAS adds the residual itself (beta = 1): one kernel, the sum rounded once, as above.
    return torch.addmm(rows_2d(residual), rows_2d(x), w.t()).view(*x.shape[:-1], w.shape[0])


@linear.register_fake
def _(x, w, residual=None):
    return x.new_empty(*x.shape[:-1], w.shape[0])
