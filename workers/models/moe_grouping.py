"""Sync-free grouping of MoE token assignments by expert: the row layout shared by the Triton
grouped GEMM (``moe_kernels``) and its batched-matmul fallback (``moe.experts_blocked``).

Only tensor ops of fixed output shape, so the whole MoE layer runs without a host sync and can be
captured in a CUDA graph (the layout itself is described in ``moe_kernels``' docstring).
"""
from __future__ import annotations

import torch


def block_m_for(num_assign: int, num_experts: int) -> int:
    """Rows per block: small when experts see a few tokens each (decode), larger for prefill."""
    per_expert = num_assign / num_experts
    return 16 if per_expert <= 16 else 32 if per_expert <= 64 else 64


def align_by_expert(ids: torch.Tensor, num_experts: int, block_m: int):
    """Sync-free grouping of assignments by expert (see ``moe_kernels``' docstring).

    ids [T, k] -> slots [R] int32, block_expert [R // block_m] int32, used_rows [1] int64.
    """
    flat = ids.flatten()
    A = flat.numel()
    counts = torch.zeros(num_experts, dtype=torch.int64, device=ids.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))  # bincount would sync on CUDA
    padded = (counts + block_m - 1) // block_m * block_m
    ends = padded.cumsum(0)
    order = torch.argsort(flat, stable=True)
    sorted_e = flat[order]
    rank = torch.arange(A, device=ids.device) - (counts.cumsum(0) - counts)[sorted_e]
    dest = (ends - padded)[sorted_e] + rank
    capacity = A + min(num_experts, A) * (block_m - 1)
    capacity = (capacity + block_m - 1) // block_m * block_m
    slots = torch.full((capacity,), A, dtype=torch.int32, device=ids.device)
    slots[dest] = order.to(torch.int32)
    starts = torch.arange(0, capacity, block_m, device=ids.device)
    block_expert = torch.searchsorted(ends, starts, right=True).clamp_(max=num_experts - 1)
    return slots, block_expert.to(torch.int32), ends[-1:]
