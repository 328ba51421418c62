"""The MoE router's decision in one Triton kernel: softmax, top-k, renormalisation and the cast.

``moe.route`` runs the router as PyTorch ops: the linear layer, a float32 softmax, ``topk``, a sum,
a division and a cast, each its own kernel. At decode sizes (a handful of tokens) those kernels
cost about as much time as a quarter of the experts' weight reads, in every MoE layer. Here the
linear layer stays a cuBLAS matmul and everything after it is one program per token:

- the token's logits are read once, in float32; probabilities = exp(l - max) / sum, as the
  softmax computes them;
- the top k are taken by k rounds of (largest probability, lowest expert index among equals),
  so they come out in descending order like ``torch.topk``;
- with ``norm_topk_prob`` they are divided by their own sum; the weights are cast to the model's
  dtype and the expert ids written as int64.

Same contract and the same float32 formula as ``moe.route``; only the order of the softmax's sum
may differ, so weights can differ in the last bit of float32 before the cast.

Status: checked against ``moe.route`` under Triton's CPU interpreter (the tests) and compiled for
sm_90, but not yet run on a GPU, so ``MoE.forward`` still uses ``moe.route``. The first
``python -m jobs.gpu_checks.moe_check`` on a GPU checks it (same experts, same weights, CUDA graph,
torch.compile) and times it against ``moe.route``; switching it on is then a one-line change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


@triton.jit
def _route_kernel(logits_ptr, w_ptr, ids_ptr, E, s_l, TOP_K: tl.constexpr, NORM: tl.constexpr,
                  BE: tl.constexpr, BJ: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    es = tl.arange(0, BE)
    logits = tl.load(logits_ptr + t * s_l + es, mask=es < E, other=-float("inf")).to(tl.float32)
    num = tl.exp(logits - tl.max(logits, axis=0))
    probs = num / tl.sum(num, axis=0)
    remaining = tl.where(es < E, probs, -1.0)
    js = tl.arange(0, BJ)
    top_p = tl.zeros((BJ,), dtype=tl.float32)
    top_i = tl.zeros((BJ,), dtype=tl.int64)
    for j in tl.static_range(TOP_K):
        best = tl.max(remaining, axis=0)
        idx = tl.min(tl.where(remaining == best, es, BE), axis=0)
        top_p = tl.where(js == j, best, top_p)
        top_i = tl.where(js == j, idx.to(tl.int64), top_i)
        remaining = tl.where(es == idx, -1.0, remaining)
    if NORM:
        top_p = top_p / tl.sum(top_p, axis=0)  # entries past TOP_K are 0
    keep = js < TOP_K
    tl.store(w_ptr + t * TOP_K + js, top_p.to(w_ptr.dtype.element_ty), mask=keep)
    tl.store(ids_ptr + t * TOP_K + js, top_i, mask=keep)


def fused_route(x: torch.Tensor, gate_weight: torch.Tensor, top_k: int, norm_topk_prob: bool):
    """``moe.route`` with one kernel after the linear layer: x [T, H] -> (weights [T, k] in x's
    dtype, expert ids [T, k] int64)."""
    logits = F.linear(x, gate_weight)
    T, E = logits.shape
    weights = torch.empty(T, top_k, dtype=x.dtype, device=x.device)
    ids = torch.empty(T, top_k, dtype=torch.int64, device=x.device)
    _route_kernel[(T,)](logits, weights, ids, E, logits.stride(0), TOP_K=top_k, NORM=norm_topk_prob,
                        BE=triton.next_power_of_2(E), BJ=triton.next_power_of_2(top_k), num_warps=1)
    return weights, ids
