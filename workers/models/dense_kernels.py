"""The Triton kernels of the dense layers on CUDA, loaded on demand (Triton is imported only by a
runner that uses them; CPU hosts never import it).

- ``linear``: the weight-streaming matmul of forwards of a few tokens, with the residual added in
  its epilogue (``skinny_linear.py``); larger forwards fall through to cuBLAS inside the operator.
- ``norm_linear`` / ``norm_swiglu``: RMSNorm fused into the q/k/v and the gate/up matmuls, SwiGLU
  into the latter (``norm_linear.py``).
- ``store_kv``: a forward's new K/V written to the paged pool in one kernel (``kv_store.py``).

``load()`` imports them; the layer code calls ``linear``/``write_kv`` with a flag saying whether
the runner asked for them (``LayerShape.fast``), so a forward without the flag is plain PyTorch.
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
            from .norm_linear import norm_linear, norm_swiglu
            from .skinny_linear import linear
        except ImportError:
            return False
        _OPS.update(linear=linear, store_kv=store_kv, norm_linear=norm_linear, norm_swiglu=norm_swiglu)
    return True


def linear(x: torch.Tensor, w: torch.Tensor, residual: torch.Tensor | None = None, fast: bool = False):
    """``F.linear(x, w) (+ residual)``; with ``fast`` (kernels loaded) the Triton operator."""
    if fast:
        return _OPS["linear"](x, w, residual)
    out = F.linear(x, w)
    return out if residual is None else residual + out


def norm_linear(x, norm_w, eps: float, w, fast: bool = False):
    """``F.linear(rms_norm(x), w)``."""
    if fast:
        return _OPS["norm_linear"](x, norm_w, eps, w)
    return F.linear(rms_norm(x, norm_w, eps), w)


def norm_swiglu(x, norm_w, eps: float, w, fast: bool = False):
    """``silu(gate) * up`` of ``F.linear(rms_norm(x), w)`` split in halves (the MLP's input side)."""
    if fast:
        return _OPS["norm_swiglu"](x, norm_w, eps, w)
    gate, up = F.linear(rms_norm(x, norm_w, eps), w).chunk(2, dim=-1)
    return F.silu(gate) * up


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as SDAR's official modeling computes it (flash-attn's fused RMSNorm): statistics,
    normalisation and the weight in float32, rounded to the input dtype once at the end."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * weight.float()).to(x.dtype)


def write_kv(k_pool, v_pool, ks, vs, write_idx, fast: bool = False) -> None:
    """Store new K/V [b, Hkv, q, D] at flat pool indices ``write_idx[b, q]``."""
    if fast:
        _OPS["store_kv"](k_pool, v_pool, ks, vs, write_idx)
        return
    Hkv, D = ks.shape[1], ks.shape[3]
    flat = write_idx.reshape(-1)
    k_pool[:, flat] = ks.transpose(0, 1).reshape(Hkv, -1, D)
    v_pool[:, flat] = vs.transpose(0, 1).reshape(Hkv, -1, D)
