"""Baseline: torch SDPA with a dense bool mask over contiguous K/V (heads expanded beforehand).

This is what a non-paged engine does today; the K/V gather and head expansion are set-up, not
timed, so the baseline is if anything flattered.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from jobs.gpu_checks.attention_cases import CachedCase, PrefillCase

Step = Callable[[], torch.Tensor]


def _expand_heads(x: torch.Tensor, group: int) -> torch.Tensor:
    return x.repeat_interleave(group, dim=1).contiguous()


def sdpa_cached(case: CachedCase) -> Step:
    """[b, Hq, n, D] queries vs [b, Hq, Lmax+n, D] keys with a [b, 1, n, Lmax+n] bool mask."""
    b, n, hq, _ = case.q.shape
    group = hq // case.shape.num_kv_heads
    lmax = case.k_cache.shape[1]
    k = _expand_heads(torch.cat([case.k_cache, case.k_new], dim=1).transpose(1, 2), group)
    v = _expand_heads(torch.cat([case.v_cache, case.v_new], dim=1).transpose(1, 2), group)
    dev = case.q.device
    lens = torch.tensor(case.cache_lens, device=dev)
    cached = torch.arange(lmax, device=dev)[None, :] < lens[:, None]          # [b, Lmax]
    mask = torch.cat([cached[:, None, :].expand(b, n, lmax), case.new_mask], dim=2)[:, None]
    q = case.q.transpose(1, 2).contiguous()
    scale = 1.0 / math.sqrt(case.shape.head_dim)

    def step():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).transpose(1, 2)

    return step


def sdpa_prefill(case: PrefillCase) -> Step:
    """Packed prompts as one [1, Hq, T, D] sequence with the dense [T, T] block-causal mask."""
    group = case.shape.num_q_heads // case.shape.num_kv_heads
    q = case.q.transpose(0, 1).unsqueeze(0).contiguous()
    k = _expand_heads(case.k.transpose(0, 1).unsqueeze(0), group)
    v = _expand_heads(case.v.transpose(0, 1).unsqueeze(0), group)
    mask = case.mask()
    scale = 1.0 / math.sqrt(case.shape.head_dim)

    def step():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)[0].transpose(0, 1)

    return step
