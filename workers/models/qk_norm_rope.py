"""Per-head RMSNorm and RoPE of the new tokens' queries and keys in one Triton kernel.

Qwen3 normalises every query and key head (``q_norm``, ``k_norm``) and then rotates it. Compiled,
that is two fused kernels a layer (queries, keys), each putting the heads first. Here one kernel
reads each token's q and k heads straight out of the fused q/k/v projection, normalises them in
float32 (rounded to the model dtype, as ``rms_norm`` does), rotates them with the token's cos/sin
in float32, rounds once and writes queries ``[b, H, q, D]`` and keys ``[b, Hkv, q, D]``. One
program handles ``BH`` heads of one token. Values need no work: they stay a view of the projection.

``qk_norm_rope`` is a ``torch.library`` operator (opaque to ``torch.compile``, captured by CUDA
graphs) for half-precision inputs; ``dense_kernels.qk_norm_rope`` keeps the plain PyTorch path for
everything else. Importing this module imports Triton.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

HEADS_PER_PROGRAM = 4


@triton.jit
def _qk_norm_rope_kernel(qkv_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, num_q, H, Hkv, eps,
                         s_xt, s_cb, s_ct, s_qb, s_qh, s_qt, s_kb, s_kh, s_kt,
                         D: tl.constexpr, BH: tl.constexpr):
    t = tl.program_id(0)                      # token (row-major over [b, q])
    b, i = t // num_q, t % num_q
    h = tl.program_id(1) * BH + tl.arange(0, BH)
    h_ok = h < H + Hkv
    d = tl.arange(0, D)
    half: tl.constexpr = D // 2
    dp = (d + half) % D                       # rotate-half partner of each element
    is_q = (h < H)[:, None]
    base = qkv_ptr + t.to(tl.int64) * s_xt + h[:, None] * D
    x = tl.load(base + d[None, :], mask=h_ok[:, None], other=0.0).to(tl.float32)
    xp = tl.load(base + dp[None, :], mask=h_ok[:, None], other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)[:, None]
    w = tl.where(is_q, tl.load(qw_ptr + d)[None, :], tl.load(kw_ptr + d)[None, :]).to(tl.float32)
    wp = tl.where(is_q, tl.load(qw_ptr + dp)[None, :], tl.load(kw_ptr + dp)[None, :]).to(tl.float32)
    dt = q_ptr.dtype.element_ty
    y = (x * rstd * w).to(dt).to(tl.float32)                   # rms_norm's rounding
    yp = (xp * rstd * wp).to(dt).to(tl.float32)
    cos = tl.load(cos_ptr + b * s_cb + i * s_ct + d).to(tl.float32)[None, :]
    sin = tl.load(sin_ptr + b * s_cb + i * s_ct + d).to(tl.float32)[None, :]
    out = (y * cos + tl.where(d[None, :] < half, -yp, yp) * sin).to(dt)
    q_dst = q_ptr + b * s_qb + h[:, None] * s_qh + i * s_qt + d[None, :]
    tl.store(q_dst, out, mask=is_q & h_ok[:, None])
    k_dst = k_ptr + b * s_kb + (h[:, None] - H) * s_kh + i * s_kt + d[None, :]
    tl.store(k_dst, out, mask=(~is_q) & h_ok[:, None])


@torch.library.custom_op("simsd::qk_norm_rope", mutates_args=())
def qk_norm_rope(qkv: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor, num_heads: int, num_kv_heads: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """qkv [b, q, (H + 2 Hkv) D] -> RMSNorm'ed and rotated queries [b, H, q, D] and keys [b, Hkv, q, D];
    cos, sin [b, 1, q, D]."""
    b, q, _ = qkv.shape
    D = q_norm.shape[0]
    x = qkv if qkv.stride(-1) == 1 and qkv.stride(0) == q * qkv.stride(1) else qkv.contiguous()
    cos, sin = (t.expand(b, 1, q, D).contiguous() for t in (cos, sin))
    qs = torch.empty(b, num_heads, q, D, dtype=qkv.dtype, device=qkv.device)
    ks = torch.empty(b, num_kv_heads, q, D, dtype=qkv.dtype, device=qkv.device)
    grid = (b * q, triton.cdiv(num_heads + num_kv_heads, HEADS_PER_PROGRAM))
    _qk_norm_rope_kernel[grid](x, q_norm, k_norm, cos, sin, qs, ks, q, num_heads, num_kv_heads, eps,
                               x.stride(1), cos.stride(0), cos.stride(2), qs.stride(0), qs.stride(1), qs.stride(2),
                               ks.stride(0), ks.stride(1), ks.stride(2), D=D, BH=HEADS_PER_PROGRAM,
                               num_warps=2)
    return qs, ks


@qk_norm_rope.register_fake
def _(qkv, q_norm, k_norm, cos, sin, num_heads, num_kv_heads, eps):
    b, q, _ = qkv.shape
    D = q_norm.shape[0]
    return qkv.new_empty(b, num_heads, q, D), qkv.new_empty(b, num_kv_heads, q, D)
