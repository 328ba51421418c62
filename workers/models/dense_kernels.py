"""The Triton kernels of the dense layers on CUDA, loaded on demand (Triton is imported only by a
runner that uses them; CPU hosts never import it).

- ``linear``: the weight-streaming matmul of forwards of a few tokens, with the residual added in
  its epilogue (``skinny_linear.py``); larger forwards fall through to cuBLAS inside the operator.
- ``linear_swiglu``: the gate/up matmul with SwiGLU applied in its epilogue (``swiglu_linear.py``).
- ``store_kv``: a forward's new K/V written to the paged pool in one kernel (``kv_store.py``).
- ``qk_norm_rope``: the per-head RMSNorm and RoPE of queries and keys in one kernel (``qk_norm_rope.py``).

``load()`` imports them; the layer code calls ``linear``/``linear_swiglu``/``qk_norm_rope``/
``write_kv`` with a flag saying whether the runner asked for them (``LayerShape.fast``), so a
forward without the flag is plain PyTorch (``rms_norm`` here too: the RMSNorm every path computes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_OPS: dict = {}


def load() -> bool:
    """Import the kernels; False where Triton is missing."""
    if not _OPS:
        try:
            from .kv_store import store_kv
            from .qk_norm_rope import qk_norm_rope
            from .skinny_linear import linear
            from .swiglu_linear import linear_swiglu
        except ImportError:
            return False
        _OPS.update(linear=linear, store_kv=store_kv, linear_swiglu=linear_swiglu, qk_norm_rope=qk_norm_rope)
    return True


def linear(x: torch.Tensor, w: torch.Tensor, residual: torch.Tensor | None = None, fast: bool = False):
    """``F.linear(x, w) (+ residual)``; with ``fast`` (kernels loaded) the Triton operator."""
    if fast:
        return _OPS["linear"](x, w, residual)
    out = F.linear(x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[0])  # one GEMM, not one per row
    return out if residual is None else residual + out


def linear_swiglu(h, w, fast: bool = False):
    """``silu(gate) * up`` of ``F.linear(h, w)`` split in halves (the MLP's input side)."""
    if fast:
        return _OPS["linear_swiglu"](h, w)
    gate, up = F.linear(h, w).chunk(2, dim=-1)
    return F.silu(gate) * up


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as SDAR's official modeling computes it (flash-attn's fused RMSNorm): statistics,
    normalisation and the weight in float32, rounded to the input dtype once at the end."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * weight.float()).to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE, rotate-half convention: x [..., D] with cos, sin broadcast to it."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def qk_norm_rope(qkv, q_norm, k_norm, cos, sin, num_heads: int, num_kv_heads: int, eps: float, fast: bool = False):
    """Queries [b, H, q, D] and keys [b, Hkv, q, D] of the fused projection qkv [b, q, (H + 2 Hkv) D]:
    per-head RMSNorm, then RoPE (cos, sin [b, 1, q, D]). ``fast`` (set only for a half-precision
    model, ``runner.resolve_layer_kernels``): one kernel, for a power-of-two head dim."""
    b, q, _ = qkv.shape
    D = q_norm.shape[0]
    if fast and D & (D - 1) == 0:
        return _OPS["qk_norm_rope"](qkv, q_norm, k_norm, cos, sin, num_heads, num_kv_heads, eps)
    H, Hkv = num_heads, num_kv_heads
    qs = rms_norm(qkv[..., :H * D].view(b, q, H, D), q_norm, eps).transpose(1, 2)
    ks = rms_norm(qkv[..., H * D:(H + Hkv) * D].view(b, q, Hkv, D), k_norm, eps).transpose(1, 2)
    return apply_rope(qs, cos, sin), apply_rope(ks, cos, sin)


def write_kv(k_pool, v_pool, ks, vs, write_idx, fast: bool = False) -> None:
    """Store new K/V [b, Hkv, q, D] at flat pool indices ``write_idx[b, q]``."""
    if fast:
        _OPS["store_kv"](k_pool, v_pool, ks, vs, write_idx)
        return
    Hkv, D = ks.shape[1], ks.shape[3]
    flat = write_idx.reshape(-1)
    k_pool[:, flat] = ks.transpose(0, 1).reshape(Hkv, -1, D)
    v_pool[:, flat] = vs.transpose(0, 1).reshape(Hkv, -1, D)
