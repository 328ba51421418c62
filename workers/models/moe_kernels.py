"""Fused MoE on the GPU: tokens grouped by expert, then two Triton grouped GEMMs (``fused_experts``
sends a few tokens to the per-expert kernels of ``moe_small`` instead).

Importing this module imports Triton (present on the GPU machines, not on CPU-only hosts); the
model imports it lazily through ``moe.kernels_available``.

Grouping (``moe_grouping.align_by_expert``) uses only tensor ops of fixed output shape, so the whole MoE layer
runs without a host sync and can be captured in a CUDA graph:
- the T*k (token, expert) assignments are sorted by expert; each expert's run is padded to a
  multiple of ``block_m`` rows, so a block of rows belongs to one expert;
- ``slots[r]`` is the assignment held by padded row r (``T*k`` marks a padding row);
- ``block_expert[b]`` is the expert of row block b; ``used_rows`` [1] the padded row count.
The row capacity is the worst case ``T*k + min(E, T*k) * (block_m - 1)``; blocks past
``used_rows`` exit at once.

Kernel 1 computes ``silu(x W_gate^T) * (x W_up^T)`` per padded row ([rows, I], x gathered by
token); kernel 2 computes ``weight * (h W_down^T)`` and writes it at the assignment's row
([T*k, H], float32). The k rows of a token are then summed, in float32. Each expert's weights are
read once per row block: at decode sizes (a few tokens per expert) that is once per step.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .moe_grouping import align_by_expert, block_m_for
from .moe_small import SMALL_MAX_TOKENS, small_experts
from .matmul_tiles import matmul_tile, swiglu_tile


@triton.jit
def _gate_up_silu_kernel(x_ptr, w_ptr, out_ptr, slots_ptr, block_expert_ptr, used_rows_ptr,
                         num_assign, top_k, H, I, s_xm, s_we, s_wn, s_om,
                         BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if pid_m * BM >= tl.load(used_rows_ptr):
        return
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    rows = pid_m * BM + tl.arange(0, BM)
    assign = tl.load(slots_ptr + rows)
    valid = assign < num_assign
    cols = pid_n * BN + tl.arange(0, BN)
    col_ok = cols < I
    act = swiglu_tile(x_ptr, assign // top_k, valid, s_xm, w_ptr + expert * s_we, cols, col_ok, s_wn,
                      I, H, BM, BN, BK)
    out_ptrs = out_ptr + rows[:, None].to(tl.int64) * s_om + cols[None, :]
    tl.store(out_ptrs, act.to(out_ptr.dtype.element_ty), mask=col_ok[None, :])


@triton.jit
def _down_kernel(h_ptr, w_ptr, out_ptr, slots_ptr, block_expert_ptr, used_rows_ptr, route_w_ptr,
                 num_assign, H, I, s_hm, s_we, s_wn, s_om,
                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if pid_m * BM >= tl.load(used_rows_ptr):
        return
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    rows = pid_m * BM + tl.arange(0, BM)
    assign = tl.load(slots_ptr + rows)
    valid = assign < num_assign
    cols = pid_n * BN + tl.arange(0, BN)
    col_ok = cols < H
    acc = matmul_tile(h_ptr, rows, valid, s_hm, w_ptr + expert * s_we, cols, col_ok, s_wn, I, BM, BN, BK)
    rw = tl.load(route_w_ptr + assign, mask=valid, other=0.0).to(tl.float32)
    acc = acc * rw[:, None]
    out_ptrs = out_ptr + assign[:, None].to(tl.int64) * s_om + cols[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=valid[:, None] & col_ok[None, :])


# Tile sizes (BN, BK, num_warps, num_stages) of the two grouped kernels; chosen by the sweep of
# ``jobs.gpu_checks.moe_check --parts sweep`` on an H100 at the SDAR-30B-A3B shape.
GATE_UP_CONFIG = (64, 128, 4, 3)
DOWN_CONFIG = (64, 64, 4, 3)


def fused_experts(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
                  gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """The MoE experts on the GPU (contract of ``moe.experts_reference``): a few tokens take the
    per-expert kernels of ``moe_small`` (no grouping), more take the grouped GEMM."""
    if ids.shape[0] <= SMALL_MAX_TOKENS:
        return small_experts(x, weights, ids, gate_up, down)
    return grouped_experts(x, weights, ids, gate_up, down)


def grouped_experts(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
                    gate_up: torch.Tensor, down: torch.Tensor, block_m: int | None = None,
                    gate_up_config: tuple = GATE_UP_CONFIG, down_config: tuple = DOWN_CONFIG) -> torch.Tensor:
    """Same contract as ``moe.experts_reference``: x [T, H]; weights, ids [T, k];
    gate_up [E, 2I, H]; down [E, H, I] (all contiguous, on CUDA) -> [T, H] in x's dtype."""
    T, k = ids.shape
    E, two_i, H = gate_up.shape
    inter = two_i // 2
    A = T * k
    x, gate_up, down = x.contiguous(), gate_up.contiguous(), down.contiguous()
    bm = block_m or block_m_for(A, E)
    slots, block_expert, used_rows = align_by_expert(ids, E, bm)
    rows = slots.shape[0]
    act = torch.empty(rows, inter, dtype=x.dtype, device=x.device)
    bn, bk, warps, stages = gate_up_config
    grid = (rows // bm, triton.cdiv(inter, bn))
    _gate_up_silu_kernel[grid](x, gate_up, act, slots, block_expert, used_rows, A, k, H, inter,
                               x.stride(0), gate_up.stride(0), gate_up.stride(1), act.stride(0),
                               BM=bm, BN=bn, BK=bk, num_warps=warps, num_stages=stages)
    out = torch.empty(A, H, dtype=torch.float32, device=x.device)
    route_w = weights.reshape(-1).contiguous()
    bn, bk, warps, stages = down_config
    grid = (rows // bm, triton.cdiv(H, bn))
    _down_kernel[grid](act, down, out, slots, block_expert, used_rows, route_w, A, H, inter,
                       act.stride(0), down.stride(0), down.stride(1), out.stride(0),
                       BM=bm, BN=bn, BK=bk, num_warps=warps, num_stages=stages)
    return out.view(T, k, H).sum(dim=1).to(x.dtype)
