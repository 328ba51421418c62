"""FlashInfer formulations over the same paged pool (GPU only; flashinfer is imported lazily).

Every wrapper is created in CUDA-graph mode (fixed index buffers) and planned once, so its run()
can be captured. FlashInfer's LSE is base 2; it is converted before the natural-log merge.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from jobs.gpu_checks.attention_cases import CachedCase, PrefillCase, RowPages
from jobs.gpu_checks.attention_flex import dense_new_part, merge_lse

Step = Callable[[], torch.Tensor]
WORKSPACE_BYTES = 256 << 20
LN2 = math.log(2.0)


class FlashInferKit:
    """Owns the flashinfer module and one float workspace buffer shared by all wrappers."""

    def __init__(self, device: torch.device):
        import flashinfer  # noqa: PLC0415 - optional dependency, GPU machine only

        self.fi = flashinfer
        self.device = device
        self.workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)

    @property
    def version(self) -> str:
        return getattr(self.fi, "__version__", "?")


def _page_lists(rows: RowPages, kv_lens: torch.Tensor):
    """(indptr [b+1], indices [sum pages], last_page_len [b]) int32 for per-row kv lengths."""
    ps = rows.pool.page_size
    num = torch.div(kv_lens + ps - 1, ps, rounding_mode="floor")
    indptr = torch.zeros(len(num) + 1, dtype=torch.int32, device=num.device)
    indptr[1:] = torch.cumsum(num, 0)
    col = torch.arange(rows.page_table.shape[1], device=num.device)[None, :]
    indices = rows.page_table[col < num[:, None]].to(torch.int32)  # row-major: row by row
    last = (kv_lens - (num - 1) * ps).to(torch.int32)
    return indptr, indices, last


def _paged_prefill(kit: FlashInferKit, rows: RowPages, q_per_row: int, kv_lens, mask_flat,
                   case: CachedCase, backend: str):
    """A BatchPrefillWithPagedKVCacheWrapper in graph mode, planned for this case."""
    fi, dev = kit.fi, kit.device
    b = rows.page_table.shape[0]
    qo_indptr = torch.arange(b + 1, dtype=torch.int32, device=dev) * q_per_row
    indptr, indices, last = _page_lists(rows, kv_lens)
    mask_buf = mask_indptr_buf = None
    if mask_flat is not None:  # flashinfer packs it (segment_packbits) into these buffers in plan()
        packed_bytes = int(((q_per_row * kv_lens + 7) // 8).sum())
        mask_buf = torch.empty(packed_bytes, dtype=torch.uint8, device=dev)
        mask_indptr_buf = torch.empty(b + 1, dtype=torch.int32, device=dev)
    wrapper = fi.BatchPrefillWithPagedKVCacheWrapper(
        kit.workspace, "NHD", use_cuda_graph=True, qo_indptr_buf=qo_indptr.clone(),
        paged_kv_indptr_buf=indptr.clone(), paged_kv_indices_buf=indices.clone(),
        paged_kv_last_page_len_buf=last.clone(), custom_mask_buf=mask_buf,
        mask_indptr_buf=mask_indptr_buf, backend=backend)
    sh = case.shape
    wrapper.plan(qo_indptr, indptr, indices, last, sh.num_q_heads, sh.num_kv_heads, sh.head_dim,
                 rows.pool.page_size, custom_mask=mask_flat, causal=False,
                 q_data_type=case.q.dtype, kv_data_type=case.q.dtype)
    return wrapper


def _one_call_mask(case: CachedCase) -> torch.Tensor:
    """Flattened per-row [n, L+n] masks: the whole cache, then the new-token mask."""
    parts = []
    for r, length in enumerate(case.cache_lens):
        ones = torch.ones(case.num_new, length, dtype=torch.bool, device=case.q.device)
        parts.append(torch.cat([ones, case.new_mask[r]], dim=1).flatten())
    return torch.cat(parts)


def fi_paged_one_call(kit: FlashInferKit, case: CachedCase, rows: RowPages, backend: str = "auto") -> Step:
    """New K/V written to the scratch slots, then one paged prefill over [cache | new]
    (custom mask; none needed when the new tokens see each other fully, as in denoising)."""
    b, n = case.batch, case.num_new
    needs_mask = not bool(case.new_mask.all())
    mask = _one_call_mask(case) if needs_mask else None
    wrapper = _paged_prefill(kit, rows, n, rows.cache_lens + n, mask, case, backend)
    flat_k, flat_v = rows.pool.flat()
    slots = rows.scratch_slots()
    k_new, v_new = case.k_new.flatten(0, 1), case.v_new.flatten(0, 1)
    q = case.q.flatten(0, 1)

    def step():
        flat_k.index_copy_(0, slots, k_new)
        flat_v.index_copy_(0, slots, v_new)
        return wrapper.run(q, (rows.pool.k, rows.pool.v)).view(b, n, *q.shape[1:])

    return step


def _merge_with_new(case: CachedCase, o1, lse2_base):
    """Merge a FlashInfer cache part (o [b*n, Hq, D], base-2 lse [b*n, Hq]) with the dense part."""
    b, n = case.batch, case.num_new
    scale = 1.0 / math.sqrt(case.shape.head_dim)
    o2, l2 = dense_new_part(case.q, case.k_new, case.v_new, case.new_mask, scale)
    o1 = o1.view(b, n, *o1.shape[1:]).float()
    l1 = lse2_base.view(b, n, -1).float() * LN2
    return merge_lse(o1, l1, o2, l2).to(case.q.dtype)


def fi_paged_two_part(kit: FlashInferKit, case: CachedCase, rows: RowPages, backend: str = "auto") -> Step:
    """Paged prefill over the cache only (no mask) with LSE, dense new-token part, merge."""
    wrapper = _paged_prefill(kit, rows, case.num_new, rows.cache_lens, None, case, backend)
    q = case.q.flatten(0, 1)

    def step():
        o1, lse = wrapper.run(q, (rows.pool.k, rows.pool.v), return_lse=True)
        return _merge_with_new(case, o1, lse)

    return step


def fi_decode_two_part(kit: FlashInferKit, case: CachedCase, rows: RowPages, backend: str = "fa2") -> Step:
    """BatchDecode (tensor cores) with one request per new query token over its row's cache."""
    fi, sh = kit.fi, case.shape
    n = case.num_new
    indptr, indices, last = _page_lists(rows, rows.cache_lens)
    per_row = (indptr[1:] - indptr[:-1]).repeat_interleave(n)
    rep_indptr = torch.zeros(len(per_row) + 1, dtype=torch.int32, device=kit.device)
    rep_indptr[1:] = torch.cumsum(per_row, 0)
    rep_indices = torch.cat([indices[indptr[r]: indptr[r + 1]].repeat(n) for r in range(case.batch)])
    rep_last = last.repeat_interleave(n)
    wrapper = fi.BatchDecodeWithPagedKVCacheWrapper(
        kit.workspace, "NHD", use_cuda_graph=True, use_tensor_cores=True,
        paged_kv_indptr_buffer=rep_indptr.clone(), paged_kv_indices_buffer=rep_indices.clone(),
        paged_kv_last_page_len_buffer=rep_last.clone(), backend=backend)
    wrapper.plan(rep_indptr, rep_indices, rep_last, sh.num_q_heads, sh.num_kv_heads, sh.head_dim,
                 rows.pool.page_size, q_data_type=case.q.dtype, kv_data_type=case.q.dtype)
    q = case.q.flatten(0, 1)

    def step():
        o1, lse = wrapper.run(q, (rows.pool.k, rows.pool.v), return_lse=True)
        return _merge_with_new(case, o1, lse)

    return step


def fi_ragged_prefill(kit: FlashInferKit, case: PrefillCase, backend: str = "auto", causal_only: bool = False) -> Step:
    """Ragged (packed) prefill with the block-causal custom mask per prompt.
    causal_only=True plans plain causal instead (a speed reference for the custom-mask cost)."""
    fi, sh, dev = kit.fi, case.shape, kit.device
    lens = torch.tensor(case.lens, dtype=torch.int32, device=dev)
    indptr = torch.zeros(len(case.lens) + 1, dtype=torch.int32, device=dev)
    indptr[1:] = torch.cumsum(lens, 0)
    mask = None
    if not causal_only:
        mask = torch.cat([_block_causal(n, case.block, dev).flatten() for n in case.lens])
    wrapper = fi.BatchPrefillWithRaggedKVCacheWrapper(kit.workspace, "NHD", backend=backend)
    wrapper.plan(indptr, indptr, sh.num_q_heads, sh.num_kv_heads, sh.head_dim, custom_mask=mask,
                 causal=causal_only, q_data_type=case.q.dtype, kv_data_type=case.q.dtype)

    def step():
        return wrapper.run(case.q, case.k, case.v)

    return step


def _block_causal(n: int, block: int, device) -> torch.Tensor:
    blk = torch.arange(n, device=device) // block
    return blk[:, None] >= blk[None, :]
