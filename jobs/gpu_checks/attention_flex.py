"""FlexAttention formulations over the paged pool, plus the dense new-token part and the LSE merge.

Each builder does its set-up (block masks, slot ids) once and returns a zero-argument step that
returns the output [b, n, Hq, D] (or [T, Hq, D] for prefill), so the caller can time it or capture
it in a CUDA graph. `flex` is either `flex_attention` itself (eager; CPU oracle) or a compiled one.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from jobs.gpu_checks.attention_cases import CachedCase, PrefillCase, RowPages

try:  # torch >= 2.9: return_aux=AuxRequest(lse=True); older: return_lse=True
    from torch.nn.attention.flex_attention import AuxRequest
except ImportError:  # pragma: no cover - depends on the torch version
    AuxRequest = None

Step = Callable[[], torch.Tensor]
Q_BLOCK = 128  # flex's query block; the KV block is the page size


def make_flex(device: torch.device) -> Callable:
    """Compiled flex on CUDA (the fast path); plain eager flex elsewhere (reference semantics)."""
    if device.type == "cuda":
        return torch.compile(flex_attention, dynamic=False)
    return flex_attention


def flex_with_lse(flex, q, k, v, block_mask, scale):
    """flex_attention returning (out [b, Hq, m, D], lse [b, Hq, m]) with a natural-log LSE."""
    if AuxRequest is not None:
        out, aux = flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True,
                        return_aux=AuxRequest(lse=True))
        return out, aux.lse
    return flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True, return_lse=True)


# ---------------------------------------------------------------- dense new-token part + merge
def dense_new_part(q, k, v, mask, scale):
    """Queries vs the few new tokens with their [b, n, n] mask, in fp32.

    q [b, n, Hq, D], k/v [b, n, Hkv, D] -> (out [b, n, Hq, D] fp32, lse [b, n, Hq] natural log).
    """
    b, n, hq, d = q.shape
    hkv = k.shape[2]
    qg = q.float().view(b, n, hkv, hq // hkv, d)
    s = torch.einsum("bqhgd,bkhd->bhgqk", qg, k.float()) * scale
    s = s.masked_fill(~mask[:, None, None], float("-inf"))
    lse = torch.logsumexp(s, dim=-1)                              # [b, Hkv, g, n]
    p = torch.exp(s - lse[..., None])
    out = torch.einsum("bhgqk,bkhd->bqhgd", p, v.float()).reshape(b, n, hq, d)
    return out, lse.permute(0, 3, 1, 2).reshape(b, n, hq)


def merge_lse(o1, l1, o2, l2):
    """Merge two partial attentions over disjoint key sets. o [..., D] fp32, l [...] natural log."""
    m = torch.maximum(l1, l2)
    w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
    return (o1 * w1[..., None] + o2 * w2[..., None]) / (w1 + w2)[..., None]


# ---------------------------------------------------------------- paged block masks
def paged_block_mask(rows: RowPages, num_q: int, full_lens: torch.Tensor, visible_lens: torch.Tensor,
                     mask_mod) -> BlockMask:
    """BlockMask over the pool for each row: complete pages below full_lens are full blocks,
    pages from there up to visible_lens are partial blocks (mask_mod decides per element).

    kv_indices are [b, 1, n_q_blocks, num_physical_pages] wide, as from_kv_blocks expects.
    """
    ps, num_pages = rows.pool.page_size, rows.pool.num_pages
    b, dev = rows.page_table.shape[0], rows.page_table.device
    n_qb = math.ceil(num_q / Q_BLOCK)
    n_full = (full_lens // ps).long()                              # [b]
    n_all = torch.div(visible_lens + ps - 1, ps, rounding_mode="floor").long()
    table = rows.page_table                                        # [b, pages_per_row]
    col = torch.arange(table.shape[1], device=dev)[None, :]
    full_idx = torch.zeros(b, num_pages, dtype=torch.int32, device=dev)
    part_idx = torch.zeros(b, num_pages, dtype=torch.int32, device=dev)
    # full blocks: logical pages [0, n_full); partial blocks: [n_full, n_all); unused entries 0
    full_idx[:, : table.shape[1]] = torch.where(col < n_full[:, None], table, 0)
    shifted = torch.gather(table, 1, torch.clamp(col + n_full[:, None], max=table.shape[1] - 1))
    part_idx[:, : table.shape[1]] = torch.where(col < (n_all - n_full)[:, None], shifted, 0)

    def widen(x):  # [b, P] -> [b, 1, n_qb, P]
        return x[:, None, None, :].expand(b, 1, n_qb, num_pages).contiguous()

    def count(x):  # [b] -> [b, 1, n_qb]
        return x.to(torch.int32)[:, None, None].expand(b, 1, n_qb).contiguous()

    return BlockMask.from_kv_blocks(
        count(n_all - n_full), widen(part_idx), count(n_full), widen(full_idx),
        BLOCK_SIZE=(Q_BLOCK, ps), mask_mod=mask_mod, seq_lengths=(num_q, num_pages * ps))


def paged_mask_mod(rows: RowPages, new_mask: torch.Tensor | None):
    """mask_mod over pool slots that is right EVERYWHERE (the eager path applies it to full
    blocks too): a slot is visible iff its page belongs to row b and its logical position is
    in the cache, or (with new_mask) it is new token j with new_mask[b, q, j]."""
    ps = rows.pool.page_size
    owner, logical, lens = rows.page_owner, rows.page_logical, rows.cache_lens
    n = rows.num_new

    def mask_mod(b, h, q_idx, kv_idx):
        page = kv_idx // ps
        pos = logical[page] * ps + kv_idx % ps
        mine = owner[page] == b
        cached = pos < lens[b]
        if new_mask is None:
            return mine & cached
        j = pos - lens[b]
        fresh = (j >= 0) & (j < n) & new_mask[b, q_idx.clamp(max=n - 1), j.clamp(0, n - 1)]
        return mine & (cached | fresh)

    return mask_mod


# ---------------------------------------------------------------- steps
def flex_two_part(case: CachedCase, rows: RowPages, flex) -> Step:
    """(a) queries vs the paged cache (flex + LSE), (b) vs the new tokens (dense), merged by LSE."""
    scale = 1.0 / math.sqrt(case.shape.head_dim)
    k_pool, v_pool = rows.pool.flex_views()
    bm = paged_block_mask(rows, case.num_new, rows.cache_lens, rows.cache_lens, paged_mask_mod(rows, None))
    q = case.q.transpose(1, 2)  # [b, Hq, n, D] view

    def step():
        o1, l1 = flex_with_lse(flex, q, k_pool, v_pool, bm, scale)
        o2, l2 = dense_new_part(case.q, case.k_new, case.v_new, case.new_mask, scale)
        return merge_lse(o1.transpose(1, 2).float(), l1.transpose(1, 2).float(), o2, l2).to(case.q.dtype)

    return step


def flex_one_call(case: CachedCase, rows: RowPages, flex) -> Step:
    """Write the new K/V into the rows' scratch slots, then one flex call over [cache | new]."""
    scale = 1.0 / math.sqrt(case.shape.head_dim)
    k_pool, v_pool = rows.pool.flex_views()
    flat_k, flat_v = rows.pool.flat()
    slots = rows.scratch_slots()
    visible = rows.cache_lens + case.num_new
    bm = paged_block_mask(rows, case.num_new, rows.cache_lens, visible, paged_mask_mod(rows, case.new_mask))
    q = case.q.transpose(1, 2)
    k_new, v_new = case.k_new.flatten(0, 1), case.v_new.flatten(0, 1)

    def step():
        flat_k.index_copy_(0, slots, k_new)
        flat_v.index_copy_(0, slots, v_new)
        return flex(q, k_pool, v_pool, block_mask=bm, scale=scale, enable_gqa=True).transpose(1, 2)

    return step


def flex_prefill(case: PrefillCase, flex) -> Step:
    """Packed prompts as one sequence; block-causal mask over (prompt id, position in prompt)."""
    doc, pos, blk = case.doc, case.pos, case.block

    def mask_mod(b, h, q_idx, kv_idx):
        return (doc[q_idx] == doc[kv_idx]) & (pos[q_idx] // blk >= pos[kv_idx] // blk)

    total = case.q.shape[0]
    bm = create_block_mask(mask_mod, None, None, total, total, device=case.q.device)
    q, k, v = (x.transpose(0, 1).unsqueeze(0) for x in (case.q, case.k, case.v))
    scale = 1.0 / math.sqrt(case.shape.head_dim)

    def step():
        return flex(q, k, v, block_mask=bm, scale=scale, enable_gqa=True)[0].transpose(0, 1)

    return step
