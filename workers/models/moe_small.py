"""MoE experts for a few tokens (decode steps): each touched expert's weights read once, no grouping.

With a handful of tokens (a batch-1 block is 4 tokens, 8 experts each) almost every assignment
goes to a different expert, so the grouped GEMM's sort, scatter and padding cost more than the
arithmetic. Here routing is folded into the kernels' index math instead:

- one program row per (token, expert) assignment ``a``; the program that holds the *first*
  assignment of an expert owns it, later assignments of the same expert exit at once;
- the owner finds every token routed to its expert (and the top-k slot it holds it in) from the
  ``ids`` tensor itself, so an expert shared by several tokens is still read once;
- kernel 1: ``silu(x W_gate^T) * (x W_up^T)`` for those tokens, one column block of the expert
  FFN per program, gate and up read in the same loop, the activation in registers; the result
  is stored at the assignment's row of ``act`` [T*k, I];
- kernel 2: ``weight * (act W_down^T)`` for those tokens, one column block of the hidden size
  per program, stored at the assignment's row of a float32 [T*k, H] buffer; the k rows of each
  token are then summed in float32, in slot order, so the result is deterministic (no atomics).

Both kernels are plain launches with fixed grids: capturable in a CUDA graph, traceable by
torch.compile. Every program holds all T tokens in one tile; ``moe_kernels.fused_experts`` sends
more than ``SMALL_MAX_TOKENS`` tokens to the grouped GEMM instead (the crossover measured by
``jobs.gpu_checks.moe_check --parts sweep``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .matmul_tiles import matmul_tile, swiglu_tile

SMALL_MAX_TOKENS = 32  # the crossover with the grouped GEMM: between 32 and 64 tokens on an H100


@triton.jit
def _expert_tokens(ids_ptr, a, T, TOP_K: tl.constexpr, BT: tl.constexpr, BJ: tl.constexpr,
                   BA: tl.constexpr):
    """For assignment ``a``: (its expert, how many earlier assignments hold the same expert (0: this
    program owns it), for each token row t < BT whether t is routed to the expert, and the flat
    assignment index t*k + j)."""
    A = T * TOP_K
    flat = tl.arange(0, BA)
    all_ids = tl.load(ids_ptr + flat, mask=flat < A, other=-1)
    expert = tl.load(ids_ptr + a)
    earlier = tl.sum(((all_ids == expert) & (flat < a)).to(tl.int32), axis=0)
    toks = tl.arange(0, BT)
    js = tl.arange(0, BJ)
    tid = tl.load(ids_ptr + toks[:, None] * TOP_K + js[None, :],
                  mask=(toks[:, None] < T) & (js[None, :] < TOP_K), other=-1)
    match = tid == expert
    uses = tl.sum(match.to(tl.int32), axis=1) > 0
    slot = toks * TOP_K + tl.sum(tl.where(match, js[None, :], 0), axis=1)
    return expert.to(tl.int64), earlier, uses, slot


@triton.jit
def _small_gate_up_kernel(x_ptr, ids_ptr, w_ptr, act_ptr, T, H, I, s_xm, s_we, s_wn, s_am,
                          TOP_K: tl.constexpr, BT: tl.constexpr, BJ: tl.constexpr, BA: tl.constexpr,
                          BN: tl.constexpr, BK: tl.constexpr):
    expert, earlier, uses, slot = _expert_tokens(ids_ptr, tl.program_id(0), T, TOP_K, BT, BJ, BA)
    if earlier > 0:  # another program owns this expert
        return
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    col_ok = cols < I
    act = swiglu_tile(x_ptr, tl.arange(0, BT), uses, s_xm, w_ptr + expert * s_we, cols, col_ok, s_wn,
                      I, H, BT, BN, BK)
    out_ptrs = act_ptr + slot[:, None].to(tl.int64) * s_am + cols[None, :]
    tl.store(out_ptrs, act.to(act_ptr.dtype.element_ty), mask=uses[:, None] & col_ok[None, :])


@triton.jit
def _small_down_kernel(act_ptr, ids_ptr, w_ptr, route_w_ptr, out_ptr, T, H, I, s_am, s_we, s_wn, s_om,
                       TOP_K: tl.constexpr, BT: tl.constexpr, BJ: tl.constexpr, BA: tl.constexpr,
                       BN: tl.constexpr, BK: tl.constexpr):
    expert, earlier, uses, slot = _expert_tokens(ids_ptr, tl.program_id(0), T, TOP_K, BT, BJ, BA)
    if earlier > 0:  # another program owns this expert
        return
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    col_ok = cols < H
    acc = matmul_tile(act_ptr, slot, uses, s_am, w_ptr + expert * s_we, cols, col_ok, s_wn, I, BT, BN, BK)
    rw = tl.load(route_w_ptr + slot, mask=uses, other=0.0).to(tl.float32)
    out_ptrs = out_ptr + slot[:, None].to(tl.int64) * s_om + cols[None, :]
    tl.store(out_ptrs, acc * rw[:, None], mask=uses[:, None] & col_ok[None, :])


# Tile sizes (BN, BK, num_warps, num_stages) of the two kernels; chosen by the sweep of
# ``jobs.gpu_checks.moe_check --parts sweep`` on an H100 at the SDAR-30B-A3B shape.
GATE_UP_CONFIG = (32, 256, 4, 3)
DOWN_CONFIG = (32, 128, 4, 4)


def _pow2(n: int) -> int:
    return triton.next_power_of_2(n)


def small_experts(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
                  gate_up: torch.Tensor, down: torch.Tensor,
                  gate_up_config: tuple = GATE_UP_CONFIG, down_config: tuple = DOWN_CONFIG) -> torch.Tensor:
    """Same contract as ``moe.experts_reference``: x [T, H]; weights, ids [T, k];
    gate_up [E, 2I, H]; down [E, H, I] -> [T, H] in x's dtype. Every program holds all T tokens
    in one tile, so this is meant for ``SMALL_MAX_TOKENS`` or fewer (``moe_kernels.fused_experts``
    routes larger batches to the grouped GEMM)."""
    T, k = ids.shape
    E, two_i, H = gate_up.shape
    inter = two_i // 2
    A = T * k
    x, ids = x.contiguous(), ids.contiguous()
    gate_up, down = gate_up.contiguous(), down.contiguous()
    # Tile sizes depend on T only through T <= 16 / T <= 32 (guards, not specialisations, when
    # torch.compile traces this with a dynamic batch): one compiled graph serves many batch sizes.
    bt = 16 if T <= 16 else 32 if T <= 32 else triton.next_power_of_2(T)
    shared = dict(TOP_K=k, BT=bt, BJ=_pow2(k), BA=_pow2(bt * k))
    act = torch.empty(A, inter, dtype=x.dtype, device=x.device)
    bn, bk, warps, stages = gate_up_config
    _small_gate_up_kernel[(A, triton.cdiv(inter, bn))](
        x, ids, gate_up, act, T, H, inter, x.stride(0), gate_up.stride(0), gate_up.stride(1),
        act.stride(0), BN=bn, BK=bk, num_warps=warps, num_stages=stages, **shared)
    out = torch.empty(A, H, dtype=torch.float32, device=x.device)
    route_w = weights.reshape(-1).contiguous()
    bn, bk, warps, stages = down_config
    _small_down_kernel[(A, triton.cdiv(H, bn))](
        act, ids, down, route_w, out, T, H, inter, act.stride(0), down.stride(0), down.stride(1),
        out.stride(0), BN=bn, BK=bk, num_warps=warps, num_stages=stages, **shared)
    return out.view(T, k, H).sum(dim=1).to(x.dtype)
