"""Storing a forward's new K/V in the paged pool with one Triton kernel per layer.

In PyTorch the store is an advanced-index assignment per tensor, each after a copy that puts the
heads first: four kernels per layer. Here one program per new token copies its K and V rows of
every KV head to the token's flat pool index (the pool's scratch index for tokens not stored, as
``KVCache.write_index`` gives). Importing this module imports Triton.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, kp_ptr, vp_ptr, idx_ptr, q, num_heads, D,
                     s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_kph, s_kpt, s_vph, s_vpt,
                     BH: tl.constexpr, BD: tl.constexpr):
    t = tl.program_id(0)
    b, i = t // q, t % q
    dst = tl.load(idx_ptr + t).to(tl.int64)
    h = tl.arange(0, BH)[:, None]
    d = tl.arange(0, BD)[None, :]
    ok = (h < num_heads) & (d < D)
    k = tl.load(k_ptr + b * s_kb + h * s_kh + i * s_kt + d, mask=ok)
    v = tl.load(v_ptr + b * s_vb + h * s_vh + i * s_vt + d, mask=ok)
    tl.store(kp_ptr + h * s_kph + dst * s_kpt + d, k, mask=ok)
    tl.store(vp_ptr + h * s_vph + dst * s_vpt + d, v, mask=ok)


def store_kv(k_pool: torch.Tensor, v_pool: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor,
             write_idx: torch.Tensor) -> None:
    """Store ks, vs [b, Hkv, q, D] at flat pool indices ``write_idx[b, q]`` of one layer's pool
    [Hkv, N + 1, D] (the same contract as ``qwen3.write_kv``)."""
    b, hkv, q, d = ks.shape
    if ks.stride(3) != 1 or vs.stride(3) != 1:
        ks, vs = ks.contiguous(), vs.contiguous()
    idx = write_idx.reshape(-1)
    if not idx.is_contiguous():
        idx = idx.contiguous()
    _store_kv_kernel[(b * q,)](ks, vs, k_pool, v_pool, idx, q, hkv, d,
                               ks.stride(0), ks.stride(1), ks.stride(2), vs.stride(0), vs.stride(1), vs.stride(2),
                               k_pool.stride(0), k_pool.stride(1), v_pool.stride(0), v_pool.stride(1),
                               BH=triton.next_power_of_2(hkv), BD=triton.next_power_of_2(d), num_warps=4)
