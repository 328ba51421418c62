"""Mixture-of-experts MLP of Qwen3-MoE layers (SDAR-30B-A3B and Qwen3-30B-A3B).

Router: a linear layer to one logit per expert, softmax in float32, the top-k experts, their
probabilities renormalised to sum to 1 when ``norm_topk_prob`` is set, then cast to the hidden
dtype. Each routed expert is a SwiGLU MLP; the token's output is the routing-weighted sum.

Weights are held stacked, one tensor per projection kind for all experts of a layer:
``experts.gate_up_proj`` [E, 2*I, H] (gate rows first, then up) and ``experts.down_proj``
[E, H, I]. The loader fills them from the published per-expert names
(``mlp.experts.N.{gate,up,down}_proj.weight``); the router is ``mlp.gate.weight`` [E, H].

Implementations of the experts, one contract (x [T, H], routing [T, k] -> [T, H]):
- ``experts_reference``: plain PyTorch, one matmul pair per expert that has tokens. The CPU path
  (and ``kernel="torch"``); it reads the expert counts on the host, so it is not graph-capturable.
- ``moe_kernels.fused_experts``: the Triton path, used on CUDA for bf16/fp16 when Triton imports;
  capturable. A few tokens (decode) take ``moe_small.small_experts``: per-expert kernels that read
  each touched expert once, routing folded into their index math. More tokens take
  ``moe_kernels.grouped_experts``: tokens grouped by expert with sync-free tensor ops
  (``moe_grouping.align_by_expert``), then two Triton grouped GEMMs (gate/up fused with SiLU*mul,
  then down scaled by the routing weight).
  (``moe_route.fused_route``, the router's softmax, top-k and renormalisation in one kernel, is
  checked on CPU and timed by ``moe_check``; it is not used here until its GPU check has run.)
- ``experts_blocked``: the same row blocks with batched matmuls (gathers weights per block): the
  sync-free CUDA fallback without Triton.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .moe_grouping import align_by_expert


def route(x: torch.Tensor, gate_weight: torch.Tensor, top_k: int, norm_topk_prob: bool):
    """x [T, H] -> (weights [T, k] in x's dtype, expert ids [T, k] int64)."""
    probs = torch.softmax(F.linear(x, gate_weight), dim=-1, dtype=torch.float32)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(x.dtype), ids


def experts_reference(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
                      gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch experts. x [T, H]; weights, ids [T, k]; gate_up [E, 2I, H]; down [E, H, I]."""
    T, k = ids.shape
    flat = ids.flatten()
    order = torch.argsort(flat, stable=True)          # assignments grouped by expert
    counts = torch.bincount(flat, minlength=gate_up.shape[0]).tolist()
    tokens = order // k
    route_w = weights.flatten()[order]
    out = torch.zeros_like(x)
    start = 0
    for expert, n in enumerate(counts):
        if n == 0:
            continue
        rows = tokens[start:start + n]
        gate, up = F.linear(x[rows], gate_up[expert]).chunk(2, dim=-1)
        y = F.linear(F.silu(gate) * up, down[expert]) * route_w[start:start + n, None]
        out.index_add_(0, rows, y)
        start += n
    return out


def experts_blocked(x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
                    gate_up: torch.Tensor, down: torch.Tensor, block_m: int = 16) -> torch.Tensor:
    """The grouped GEMM of ``moe_kernels`` written with batched matmuls over the same row blocks.

    No host sync (graph-capturable), but it gathers one copy of an expert's weights per row block:
    the GPU fallback when Triton is missing, and the CPU check of the grouping layout.
    """
    T, k = ids.shape
    A, H = T * k, x.shape[1]
    slots, block_expert, used_rows = align_by_expert(ids, gate_up.shape[0], block_m)
    valid = slots < A
    token = torch.where(valid, slots // k, 0).long()
    xs = (x[token] * valid[:, None]).view(-1, block_m, H)             # [blocks, BM, H]
    be = block_expert.long()
    gate, up = torch.bmm(xs, gate_up[be].transpose(1, 2)).chunk(2, dim=-1)
    ys = torch.bmm(F.silu(gate) * up, down[be].transpose(1, 2)).reshape(-1, H)  # [rows, H]
    route_w = torch.cat([weights.reshape(-1), weights.new_zeros(1)])[slots.long()]
    # Rows past used_rows and padding rows carry weight 0 and land on a spare row A.
    keep = valid & (torch.arange(slots.shape[0], device=x.device) < used_rows)
    dest = torch.where(keep, slots.long(), A)
    out = torch.zeros(A + 1, H, dtype=torch.float32, device=x.device)
    out.index_add_(0, dest, (ys * route_w[:, None]).float())
    return out[:A].view(T, k, H).sum(dim=1).to(x.dtype)


def expert_slices(model: nn.Module) -> dict[str, tuple[str, int, int, int]]:
    """Published per-expert weight name -> (stacked parameter name, expert, first row, row count).

    ``mlp.experts.N.gate_proj`` / ``up_proj`` fill rows [0, I) / [I, 2I) of expert N in
    ``mlp.experts.gate_up_proj``; ``mlp.experts.N.down_proj`` is expert N of ``mlp.experts.down_proj``.
    """
    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, MoE):
            continue
        E, two_i, H = module.experts.gate_up_proj.shape
        inter = two_i // 2
        for e in range(E):
            p = f"{name}.experts.{e}."
            out[p + "gate_proj.weight"] = (f"{name}.experts.gate_up_proj", e, 0, inter)
            out[p + "up_proj.weight"] = (f"{name}.experts.gate_up_proj", e, inter, inter)
            out[p + "down_proj.weight"] = (f"{name}.experts.down_proj", e, 0, H)
    return out


_fused_experts = None  # moe_kernels.fused_experts once imported (a plain global: Dynamo reads it)


def kernels_available() -> bool:
    """Whether the Triton kernels can run here (Triton imports; needs a CUDA device).
    The import happens on the first call, which should be eager (the first forward is a prefill)."""
    global _fused_experts
    if _fused_experts is None:
        try:
            from .moe_kernels import fused_experts
        except ImportError:
            _fused_experts = False
        else:
            _fused_experts = fused_experts
    return bool(_fused_experts) and torch.cuda.is_available()


class Experts(nn.Module):
    """The stacked expert weights of one layer (names as transformers 5 holds them in memory)."""

    def __init__(self, num_experts: int, hidden: int, inter: int):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * inter, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, inter))


class MoE(nn.Module):
    """Drop-in for the dense MLP: ``forward(h [b, q, hidden]) -> [b, q, hidden]``.

    ``h`` is the post-attention-normed hidden state; the caller adds the residual.
    ``kernel``: ``"auto"`` (Triton on CUDA for half dtypes when available; else on CUDA the
    sync-free blocked PyTorch path; on CPU the per-expert loop), ``"triton"`` (required: errors if
    unavailable), ``"blocked"`` or ``"torch"`` (the per-expert loop, not graph-capturable).
    """

    KERNELS = ("auto", "triton", "blocked", "torch")

    def __init__(self, cfg: ModelConfig, kernel: str = "auto"):
        super().__init__()
        if cfg.num_experts <= 0:
            raise ValueError("MoE needs num_experts > 0")
        if kernel not in self.KERNELS:
            raise ValueError(f"unknown MoE kernel {kernel!r}; expected one of {self.KERNELS}")
        self.num_experts, self.top_k = cfg.num_experts, cfg.num_experts_per_tok
        self.norm_topk_prob = cfg.norm_topk_prob
        self.gate = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.experts = Experts(cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size)
        self.kernel = kernel

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.reshape(-1, h.shape[-1])
        weights, ids = route(x, self.gate.weight, self.top_k, self.norm_topk_prob)
        args = (x, weights, ids, self.experts.gate_up_proj, self.experts.down_proj)
        impl = self._implementation(x)
        if impl == "triton":
            out = _fused_experts(*args)
        elif impl == "blocked":
            out = experts_blocked(*args)
        else:
            out = experts_reference(*args)
        return out.view(h.shape)

    def _implementation(self, x: torch.Tensor) -> str:
        if self.kernel in ("blocked", "torch"):
            return self.kernel
        usable = x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and kernels_available()
        if self.kernel == "triton" and not usable:
            raise RuntimeError("MoE kernel 'triton' needs CUDA, a bf16/fp16 model and triton installed")
        return "triton" if usable else "blocked" if x.is_cuda else "torch"
