"""Attention over the paged KV pool: the new tokens of a forward attend to their row's cached
prefix (always fully visible) and to each other under the layout's mask.

Two backends with one interface (``decode_meta`` builds the per-forward metadata from the page
table, ``attend`` computes one layer):

- ``torch``: plain PyTorch. Gathers each row's cached K/V through the page table and runs one
  softmax over ``[cache | new]``. Runs everywhere; it is the CPU path and the oracle the GPU
  path is checked against.
- ``triton``: one Triton kernel per layer reads each row's pages in place and the new tokens
  under their mask, with one online softmax (``paged_attention.py``).

(The FlexAttention backends ``flex`` and ``flex-main`` were removed: slower than ``torch`` in
every case measured, and compiled they changed tokens; docs/engine.md.)

Shapes: qs [b, H, q, D]; ks, vs [b, Hkv, q, D]; pool K/V per layer [Hkv, N + 1, D].
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

class GatherMeta(NamedTuple):
    token_idx: torch.Tensor   # [b, span] flat pool index of each row's cached positions
    cache_mask: torch.Tensor  # [b, 1, 1, span] bool, position < the row's length
    new_mask: torch.Tensor    # [b, 1, q, q] bool, the layout among the new tokens


class NewOnlyMeta(NamedTuple):
    """Prefill: nothing cached yet, one SDPA call over the new tokens under their mask."""
    new_mask: torch.Tensor    # [b, 1, q, q] bool
    repeat_kv: bool = False   # K/V repeated to the query heads first: SDPA's memory-efficient kernel
                              # takes a mask but not grouped-query heads, so with enable_gqa and a
                              # mask a CUDA call falls to the math kernel ([H, q, q] scores in memory)


class PagedMeta(NamedTuple):
    """The ``triton`` backend: one kernel reads the pool in place (paged_attention.py)."""
    page_rows: torch.Tensor   # [b, W] int32 physical pages of each row
    lens: torch.Tensor        # [b] cached length of each row
    new_mask: torch.Tensor    # [b, 1, q, q] bool, the layout among the new tokens
    page_size: int
    splits: int = 1           # programs each row's prefix is split over (flash decoding)


def gather_meta(cache, page_rows: torch.Tensor, lens: torch.Tensor, span: int, new_mask: torch.Tensor):
    """Metadata for the torch backend; ``span`` bounds every row's length (a host-side value)."""
    if span <= 0:
        return NewOnlyMeta(new_mask)
    b = lens.shape[0]
    pos = torch.arange(span, device=lens.device)[None].expand(b, span)
    valid = pos < lens[:, None]
    token_idx = torch.where(valid, cache.flat_index(page_rows, pos), cache.scratch)
    return GatherMeta(token_idx, valid[:, None, None, :], new_mask)


_PAGED_OP: list = []  # the Triton operator, once load_triton_backend() has imported it


def load_triton_backend() -> None:
    """Import the Triton kernel (and Triton itself) for the ``triton`` backend."""
    if not _PAGED_OP:
        from .paged_attention import paged_attention_op

        _PAGED_OP.append(paged_attention_op)


def attend(qs, ks, vs, k_pool, v_pool, meta):
    """One layer's attention for any metadata kind (the dispatch is on the meta's type)."""
    if isinstance(meta, NewOnlyMeta):
        if meta.repeat_kv:
            g = qs.shape[1] // ks.shape[1]
            ks, vs = ks.repeat_interleave(g, 1), vs.repeat_interleave(g, 1)
            return F.scaled_dot_product_attention(qs, ks, vs, attn_mask=meta.new_mask)
        return F.scaled_dot_product_attention(qs, ks, vs, attn_mask=meta.new_mask, enable_gqa=True)
    if isinstance(meta, PagedMeta):
        out = _PAGED_OP[0](qs, ks, vs, k_pool, v_pool, meta.page_rows, meta.lens, meta.new_mask,
                           meta.page_size, meta.splits)
        return out.transpose(1, 2)
    if isinstance(meta, GatherMeta):
        ck = k_pool[:, meta.token_idx].transpose(0, 1)  # [b, Hkv, span, D]
        cv = v_pool[:, meta.token_idx].transpose(0, 1)
        return cached_attention(qs, ks, vs, ck, cv, meta.cache_mask, meta.new_mask)
    raise TypeError(f"no attention backend takes {type(meta).__name__}")


def cached_attention(qs, ks, vs, cache_k, cache_v, cache_mask, new_mask):
    """Attention of new queries over [cache | new keys] without concatenating or repeating K/V.

    cache_k, cache_v [b, Hkv, L, D]; cache_mask [b, 1, 1, L], new_mask [b, 1, q, q] (bool).
    Query heads are grouped under their KV head ([b, Hkv, g*q, D]) so each cached K/V is read once.
    """
    b, H, q, D = qs.shape
    Hkv = ks.shape[1]
    g = H // Hkv
    qg = qs.reshape(b, Hkv, g * q, D) * (D ** -0.5)
    s_cache = (qg @ cache_k.transpose(-1, -2)).view(b, Hkv, g, q, -1)
    s_new = (qg @ ks.transpose(-1, -2)).view(b, Hkv, g, q, q)
    scores = torch.cat([s_cache.masked_fill(~cache_mask[:, :, None], float("-inf")),
                        s_new.masked_fill(~new_mask[:, :, None], float("-inf"))], dim=-1)
    probs = torch.softmax(scores.float(), dim=-1).to(qs.dtype).view(b, Hkv, g * q, -1)
    L = cache_k.shape[2]
    out = probs[..., :L] @ cache_v + probs[..., L:] @ vs
    return out.view(b, H, q, D)
