"""Attention over the paged KV pool: the new tokens of a forward attend to their row's cached
prefix (always fully visible) and to each other under the layout's mask.

Three backends with one interface (``decode_meta`` builds the per-forward metadata from the page
table, ``attend`` computes one layer):

- ``torch``: plain PyTorch. Gathers each row's cached K/V through the page table and runs one
  softmax over ``[cache | new]``. Runs everywhere; it is the CPU path and the oracle the GPU
  path is checked against.
- ``triton``: one Triton kernel per layer reads each row's pages in place and the new tokens
  under their mask, with one online softmax (``paged_attention.py``).
- ``flex``: PyTorch FlexAttention (compiled Triton kernels) reads the pool in place through a
  block mask built from the page table (one sparse block per page, so the page size must be a
  multiple of the kernel's block, 128). The few new tokens are attended densely, and the two
  partial results are merged by their log-sum-exp, as FlashInfer's cascade attention does. No
  per-layer copy of the cache, no fp32 scores over the whole span.

Shapes: qs [b, H, q, D]; ks, vs [b, Hkv, q, D]; pool K/V per layer [Hkv, N + 1, D].
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

FLEX_BLOCK = 128


class GatherMeta(NamedTuple):
    token_idx: torch.Tensor   # [b, span] flat pool index of each row's cached positions
    cache_mask: torch.Tensor  # [b, 1, 1, span] bool, position < the row's length
    new_mask: torch.Tensor    # [b, 1, q, q] bool, the layout among the new tokens


class NewOnlyMeta(NamedTuple):
    new_mask: torch.Tensor    # [b, 1, q, q] bool (prefill: nothing cached yet)


class PagedMeta(NamedTuple):
    """The ``triton`` backend: one kernel reads the pool in place (paged_attention.py)."""
    page_rows: torch.Tensor   # [b, W] int32 physical pages of each row
    lens: torch.Tensor        # [b] cached length of each row
    new_mask: torch.Tensor    # [b, 1, q, q] bool, the layout among the new tokens
    page_size: int
    splits: int = 1           # programs each row's prefix is split over (flash decoding)


class FlexNewMeta(NamedTuple):
    """Prefill with FlexAttention: packed prompts, padded to ``padded`` tokens for the kernel."""
    block_mask: object
    fn: object                # the compiled flex_attention
    length: int               # real tokens
    padded: int


class FlexMeta(NamedTuple):
    block_mask: object        # torch BlockMask over the pool, built from the page table
    new_mask: torch.Tensor    # [b, 1, q, q] bool
    kernel_options: dict | None = None  # e.g. {"FORCE_USE_FLEX_ATTENTION": True}: the prefill-style
                                        # kernel instead of flex decoding


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
        return F.scaled_dot_product_attention(qs, ks, vs, attn_mask=meta.new_mask, enable_gqa=True)
    if isinstance(meta, FlexNewMeta):
        pad = meta.padded - meta.length
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (qs, ks, vs))
        return meta.fn(q, k, v, meta.block_mask)[:, :, :meta.length]
    if isinstance(meta, PagedMeta):
        out = _PAGED_OP[0](qs, ks, vs, k_pool, v_pool, meta.page_rows, meta.lens, meta.new_mask,
                           meta.page_size, meta.splits)
        return out.transpose(1, 2)
    if isinstance(meta, GatherMeta):
        ck = k_pool[:, meta.token_idx].transpose(0, 1)  # [b, Hkv, span, D]
        cv = v_pool[:, meta.token_idx].transpose(0, 1)
        return cached_attention(qs, ks, vs, ck, cv, meta.cache_mask, meta.new_mask)
    return flex_attend(qs, ks, vs, k_pool, v_pool, meta)


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


# ----------------------------------------------------------------------------------------------
# FlexAttention backend


class FlexMaskBuffers:
    """Fixed-address tensors of one decode shape ``(b, q)`` and the BlockMask that reads them.

    ``update`` rewrites them in place from the page table and lengths, so a CUDA graph captured
    over ``update`` + the forward replays with new lengths and pages, and the compiled attention
    sees the same BlockMask object every call (no recompilation).
    """

    def __init__(self, b: int, q: int, num_pages: int, page_size: int, device):
        from torch.nn.attention.flex_attention import BlockMask

        if page_size % FLEX_BLOCK:
            raise ValueError(f"the flex backend needs a page size that is a multiple of {FLEX_BLOCK}")
        self.page_size, self.num_pages = page_size, num_pages
        nqb = -(-q // FLEX_BLOCK)
        i32 = dict(dtype=torch.int32, device=device)
        self.full_num = torch.zeros(b, 1, nqb, **i32)
        self.full_idx = torch.zeros(b, 1, nqb, num_pages, **i32)
        self.part_num = torch.zeros(b, 1, nqb, **i32)
        self.part_idx = torch.zeros(b, 1, nqb, num_pages, **i32)
        # Physical page -> its logical index in the row (-1: not the row's); one spare column
        # absorbs the table's unused entries.
        self.logical = torch.full((b, num_pages + 1), -1, **i32)
        self.lens = torch.zeros(b, **i32)
        logical, lens, P = self.logical, self.lens, page_size

        def mask_mod(bi, h, qi, ki):
            # Correct everywhere: the kernel applies it to partial blocks only, the unfused (CPU)
            # path to every position.
            page = logical[bi, ki // P]
            return (page >= 0) & (page * P + ki % P < lens[bi])

        self.block_mask = BlockMask.from_kv_blocks(
            self.part_num, self.part_idx, self.full_num, self.full_idx, BLOCK_SIZE=(FLEX_BLOCK, page_size),
            mask_mod=mask_mod, seq_lengths=(q, num_pages * page_size), compute_q_blocks=False)

    def update(self, page_rows: torch.Tensor, lens: torch.Tensor) -> None:
        """page_rows [b, W] int32 physical pages, lens [b] cached lengths."""
        P, W = self.page_size, page_rows.shape[1]
        n_full = lens // P
        tail = lens - n_full * P
        last = page_rows.gather(1, n_full.clamp(max=W - 1)[:, None].long())[:, 0]
        self.full_num.copy_(n_full[:, None, None].expand_as(self.full_num))
        self.full_idx[..., :W].copy_(page_rows[:, None, None, :].expand(-1, 1, self.full_idx.shape[2], -1))
        self.part_num.copy_((tail > 0)[:, None, None].expand_as(self.part_num))
        self.part_idx[..., 0].copy_(last[:, None, None].expand(-1, 1, self.part_idx.shape[2]))
        used = (lens + P - 1) // P
        col = torch.arange(W, device=lens.device)[None]
        target = torch.where(col < used[:, None], page_rows.long(), self.num_pages)
        self.logical.fill_(-1)
        self.logical.scatter_(1, target, col.expand_as(target).to(torch.int32))
        self.lens.copy_(lens)


def _flex(q, k, v, block_mask, kernel_options=None):
    """FlexAttention with the log-sum-exp, on old and new torch alike."""
    from torch.nn.attention import flex_attention as fa

    if hasattr(fa, "AuxRequest"):
        out, aux = fa.flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True,
                                     return_aux=fa.AuxRequest(lse=True), kernel_options=kernel_options)
        return out, aux.lse
    return fa.flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True, return_lse=True,
                             kernel_options=kernel_options)


def flex_attend(qs, ks, vs, k_pool, v_pool, meta: FlexMeta):
    """Cache part with FlexAttention over the pool, new part dense; merged by log-sum-exp."""
    b, H, q, D = qs.shape
    Hkv = ks.shape[1]
    N = k_pool.shape[1] - 1
    out_c, lse_c = _flex(qs, k_pool[None, :, :N], v_pool[None, :, :N], meta.block_mask, meta.kernel_options)
    g = H // Hkv
    qg = qs.reshape(b, Hkv, g * q, D).float() * (D ** -0.5)
    s = (qg @ ks.float().transpose(-1, -2)).view(b, Hkv, g, q, q)
    s = s.masked_fill(~meta.new_mask[:, :, None], float("-inf")).view(b, H, q, q)
    lse_n = torch.logsumexp(s, dim=-1)
    out_n = torch.softmax(s, dim=-1).view(b, Hkv, g * q, q) @ vs.float()
    lse_c = lse_c.float()
    m = torch.maximum(lse_c, lse_n)
    w_c = torch.exp(lse_c - m)[..., None]
    w_n = torch.exp(lse_n - m)[..., None]
    out_c = torch.nan_to_num(out_c.float())
    out = (out_c * w_c + out_n.view(b, H, q, D) * w_n) / (w_c + w_n)
    return out.to(qs.dtype)
