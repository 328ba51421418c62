"""Decode attention over the paged KV pool in one Triton kernel (the ``triton`` backend).

One program handles one row, one KV head and a tile of that head's query rows (the ``g`` query
heads sharing the KV head times the ``q`` new tokens, so each cached K/V tile is read once for
all of them). It streams the row's cached prefix straight out of the pool through the page
table (no gather copy, no scores over the whole span in memory), then the row's new tokens
under the layout's mask, with one online softmax in float32 over both, as FlashAttention does.

With few rows (batch 1) and long prefixes, the prefix is split over several programs (flash
decoding): each writes a partial output and its log-sum-exp, and a second small kernel merges
them.

On CPU the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the
tests check it against the plain PyTorch path. Importing this module imports Triton.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _attend_tile(q, k, v, visible, m_i, l_i, acc, qk_scale, IEEE: tl.constexpr):
    """One online-softmax step over a key tile: scores in base 2, running max ``m_i``, running
    sum ``l_i`` and output ``acc`` rescaled; ``visible`` masks scores (rows that see nothing yet
    keep a -inf max and add nothing)."""
    if IEEE:
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    s = tl.where(visible, s * qk_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(s - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    if IEEE:
        acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


# Cached tokens a split holds at least (a shorter prefix uses fewer splits). Measured on an H100
# at SDAR-8B batch 1 (300-token prefixes): 256 left too few programs (attention 11.0 us a layer,
# merge 2.0 us); every split used, as before, read empty partials (6.5 + 5.9 us).
MIN_SPLIT = tl.constexpr(64)


@triton.jit
def _split_len(length, num_splits, BLOCK_N: tl.constexpr):
    """Cached tokens per split of a row of ``length``: the row uses ceil(length / split_len)
    splits (at least one), so a short prefix is not spread over programs that read nothing and
    a merge that reads their empty partials."""
    even = tl.cdiv(tl.cdiv(length, num_splits), BLOCK_N) * BLOCK_N
    return tl.maximum(even, MIN_SPLIT)


@triton.jit
def _paged_attention_kernel(
        q_ptr, kp_ptr, vp_ptr, table_ptr, lens_ptr, kn_ptr, vn_ptr, mask_ptr, out_ptr, lse_ptr,
        sm_scale, num_q, page_size, table_w, num_splits,
        s_qb, s_qh, s_qt, s_ph, s_pt, s_nb, s_nh, s_nt, s_vb, s_vh, s_vt, s_mb, s_mq, s_ob, s_os, s_ot, s_oh, s_lb, s_ls, s_lh,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_Q: tl.constexpr, IEEE: tl.constexpr):
    row = tl.program_id(0)
    kvh = tl.program_id(1)
    pid_m = tl.program_id(2)
    num_m = tl.cdiv(GROUP * num_q, BLOCK_M)
    split = pid_m // num_m
    pid_m = pid_m % num_m
    length = tl.load(lens_ptr + row).to(tl.int32)
    split_len = _split_len(length, num_splits, BLOCK_N)
    if (split > 0) & (split * split_len >= length):  # this row needs fewer splits: nothing to read
        return
    r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)          # query rows of this KV head
    r_ok = r < GROUP * num_q
    head = kvh * GROUP + r // num_q
    qi = r % num_q
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + row * s_qb + head[:, None] * s_qh + qi[:, None] * s_qt + d[None, :],
                mask=r_ok[:, None], other=0.0)
    qk_scale = sm_scale * 1.4426950408889634
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    start = split * split_len
    stop = tl.minimum(length, start + split_len)
    kp_base = kp_ptr + kvh.to(tl.int64) * s_ph
    vp_base = vp_ptr + kvh.to(tl.int64) * s_ph
    n = tl.arange(0, BLOCK_N)
    for t0 in range(start, stop, BLOCK_N):
        tok = t0 + n
        t_ok = tok < stop
        phys = tl.load(table_ptr + row * table_w + tok // page_size, mask=t_ok, other=0)
        flat = (phys.to(tl.int64) * page_size + tok % page_size) * s_pt
        k = tl.load(kp_base + flat[:, None] + d[None, :], mask=t_ok[:, None], other=0.0)
        v = tl.load(vp_base + flat[:, None] + d[None, :], mask=t_ok[:, None], other=0.0)
        m_i, l_i, acc = _attend_tile(q, k, v, t_ok[None, :], m_i, l_i, acc, qk_scale, IEEE)
    if split == 0:
        # The new tokens, under the layout's mask (only the first split sees them).
        j = tl.arange(0, BLOCK_Q)
        j_ok = j < num_q
        kn = tl.load(kn_ptr + row * s_nb + kvh * s_nh + j[:, None] * s_nt + d[None, :], mask=j_ok[:, None], other=0.0)
        vn = tl.load(vn_ptr + row * s_vb + kvh * s_vh + j[:, None] * s_vt + d[None, :], mask=j_ok[:, None], other=0.0)
        vis = tl.load(mask_ptr + row * s_mb + qi[:, None] * s_mq + j[None, :],
                      mask=r_ok[:, None] & j_ok[None, :], other=0)
        m_i, l_i, acc = _attend_tile(q, kn, vn, vis != 0, m_i, l_i, acc, qk_scale, IEEE)
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    o_ptrs = out_ptr + row * s_ob + split * s_os + qi[:, None] * s_ot + head[:, None] * s_oh + d[None, :]
    tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=r_ok[:, None])
    # log-sum-exp in base 2 of the scaled scores (-inf for a split that saw nothing)
    lse = tl.where(l_i > 0, m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0)), float("-inf"))
    tl.store(lse_ptr + row * s_lb + split * s_ls + qi * s_lh + head, lse, mask=r_ok)


@triton.jit
def _merge_splits_kernel(part_ptr, lse_ptr, out_ptr, lens_ptr, num_splits, s_pb, s_ps, s_lb, s_ls, s_ob,
                         ROW_DIM: tl.constexpr, BLOCK: tl.constexpr, BLOCK_N: tl.constexpr):
    """out[row, i] = sum_s w_s part[row, s, i] with w_s = 2^(lse_s - max) / sum (per query and
    head), over the splits the row used."""
    row = tl.program_id(0)
    qh = tl.program_id(1)                        # one (query, head) pair: HEAD_DIM outputs
    length = tl.load(lens_ptr + row).to(tl.int32)
    num_splits = tl.maximum(1, tl.cdiv(length, _split_len(length, num_splits, BLOCK_N)))
    d = tl.arange(0, BLOCK)
    d_ok = d < ROW_DIM
    m = tl.full((), float("-inf"), tl.float32)
    for s in range(0, num_splits):
        m = tl.maximum(m, tl.load(lse_ptr + row * s_lb + s * s_ls + qh))
    m = tl.where(m == float("-inf"), 0.0, m)
    total = tl.zeros((), tl.float32)
    acc = tl.zeros((BLOCK,), tl.float32)
    for s in range(0, num_splits):
        w = tl.math.exp2(tl.load(lse_ptr + row * s_lb + s * s_ls + qh) - m)
        part = tl.load(part_ptr + row * s_pb + s * s_ps + qh * ROW_DIM + d, mask=d_ok, other=0.0)
        acc += w * part.to(tl.float32)
        total += w
    out = acc / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + row * s_ob + qh * ROW_DIM + d, out.to(out_ptr.dtype.element_ty), mask=d_ok)


def _pow2(n: int, least: int) -> int:
    return max(least, 1 << max(0, (n - 1).bit_length()))


def query_tiles(group: int, q: int) -> tuple[int, int]:
    """(BLOCK_M, number of tiles) of the ``group * q`` query rows one KV head's programs hold."""
    block_m = min(_pow2(group * q, 16), 64)
    return block_m, -(-group * q // block_m)


def paged_attention(qs: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor,
                    page_rows: torch.Tensor, lens: torch.Tensor, new_mask: torch.Tensor, page_size: int,
                    splits: int = 1) -> torch.Tensor:
    """qs [b, H, q, D]; ks, vs [b, Hkv, q, D]; pools [Hkv, N + 1, D]; page_rows [b, W] int32;
    lens [b]; new_mask [b, q, q] bool. Returns [b, q, H, D] (contiguous: heads already interleaved
    the way the output projection reads them)."""
    b, H, q, D = qs.shape
    Hkv = ks.shape[1]
    g = H // Hkv
    if k_pool.stride(2) != 1 or qs.stride(3) != 1 or ks.stride(3) != 1 or vs.stride(3) != 1:
        raise ValueError("paged_attention needs the head dimension contiguous")
    block_m, num_m = query_tiles(g, q)
    ieee = qs.dtype == torch.float32
    block_n = 32 if ieee else 64
    out = torch.empty(b, splits, q, H, D, device=qs.device, dtype=qs.dtype if splits == 1 else torch.float32)
    lse = torch.empty(b, splits, q * H, device=qs.device, dtype=torch.float32)
    width = page_rows.shape[1]
    mask = new_mask.reshape(b, q, q)
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8) if mask.is_contiguous() else mask.to(torch.uint8)
    _paged_attention_kernel[(b, Hkv, num_m * splits)](
        qs, k_pool, v_pool, page_rows, lens, ks, vs, mask, out, lse,
        D ** -0.5, q, page_size, width, splits,
        qs.stride(0), qs.stride(1), qs.stride(2), k_pool.stride(0), k_pool.stride(1),
        ks.stride(0), ks.stride(1), ks.stride(2), vs.stride(0), vs.stride(1), vs.stride(2), mask.stride(0), mask.stride(1),
        out.stride(0), out.stride(1), out.stride(2), out.stride(3), lse.stride(0), lse.stride(1), H,
        GROUP=g, HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_Q=_pow2(q, 16), IEEE=ieee)
    if splits == 1:
        return out[:, 0]
    merged = torch.empty(b, q, H, D, device=qs.device, dtype=qs.dtype)
    _merge_splits_kernel[(b, q * H)](out, lse, merged, lens, splits, out.stride(0), out.stride(1),
                                     lse.stride(0), lse.stride(1), merged.stride(0),
                                     ROW_DIM=D, BLOCK=_pow2(D, 16), BLOCK_N=block_n)
    return merged



@torch.library.custom_op("simsd::paged_attention", mutates_args=())
def paged_attention_op(qs: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor, k_pool: torch.Tensor,
                       v_pool: torch.Tensor, page_rows: torch.Tensor, lens: torch.Tensor, new_mask: torch.Tensor,
                       page_size: int, splits: int) -> torch.Tensor:
    """``paged_attention`` as an opaque operator, so ``torch.compile`` fuses around it."""
    return paged_attention(qs, ks, vs, k_pool, v_pool, page_rows, lens, new_mask, page_size, splits)


@paged_attention_op.register_fake
def _(qs, ks, vs, k_pool, v_pool, page_rows, lens, new_mask, page_size, splits):
    b, H, q, D = qs.shape
    return qs.new_empty(b, q, H, D)


def num_splits(rows: int, kv_heads: int, group: int, q: int, max_len: int, sms: int = 132) -> int:
    """Prefix splits so that a forward of ``rows`` x ``q`` new tokens (``group`` query heads per
    KV head) launches about two programs per SM, and no split holds less than MIN_SPLIT cached
    tokens. The kernel then uses, per row, only the splits its own length needs."""
    programs = rows * kv_heads * query_tiles(group, q)[1]
    want = -(-2 * sms // programs)
    return max(1, min(want, max_len // MIN_SPLIT.value, 64))
