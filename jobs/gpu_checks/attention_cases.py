"""Attention benchmark cases: shapes, visibility masks, a paged K/V pool and the fp32 reference.

Pure tensor code, CPU or GPU. Conventions (shared by every backend in this package):
- query head h reads K/V head h // (Hq // Hkv) (GQA as in Qwen3/SDAR);
- new-token tensors are [b, n, H, D]; a row's cache is [b, L, Hkv, D] (padded to max L);
- the pool is NHD: K and V are [num_pages, page_size, Hkv, D] (FlashInfer's "NHD" paged layout;
  flex reads the same memory as a [1, Hkv, num_pages * page_size, D] strided view, no copy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

POISON = 64.0  # V value of every pool slot that no row may read: a leak shows as a large error


@dataclass(frozen=True)
class HeadShape:
    """Per-layer attention shape of a model."""
    name: str
    num_q_heads: int
    num_kv_heads: int
    head_dim: int


# SDAR-4B and SDAR-8B (Qwen3-4B/8B bodies) share the per-layer attention shape.
SHAPES = {
    "sdar-4b": HeadShape("sdar-4b", 32, 8, 128),
    "sdar-8b": HeadShape("sdar-8b", 32, 8, 128),
    "tiny": HeadShape("tiny", 4, 2, 16),  # CPU smoke
}


# ---------------------------------------------------------------- visibility among new tokens
def denoise_mask(batch: int, block: int) -> torch.Tensor:
    """Denoising step: the block's B tokens see each other (bidirectional). [b, B, B]."""
    return torch.ones(batch, block, block, dtype=torch.bool)


def simsd_verify_mask(batch: int, block: int, gen: torch.Generator) -> torch.Tensor:
    """SimSD paper verify over [D_1..D_B | M_1..M_B] with a random reveal order per row. [b, 2B, 2B].

    With reveal steps t: D_i sees D_j iff t_j <= t_i and M_j iff t_j > t_i;
    M_i sees D_j iff t_j < t_i and M_j iff t_j >= t_i (leftover = 0).
    """
    t = torch.stack([torch.randperm(block, generator=gen) for _ in range(batch)])  # [b, B]
    ti, tj = t[:, :, None], t[:, None, :]
    top = torch.cat([tj <= ti, tj > ti], dim=2)     # D_i rows
    bottom = torch.cat([tj < ti, tj >= ti], dim=2)  # M_i rows
    return torch.cat([top, bottom], dim=1)


def copies_mask(batch: int, block: int) -> torch.Tensor:
    """Exact per-step copies: B copies of B tokens, each copy sees only itself. [b, B*B, B*B]."""
    copy_id = torch.arange(block * block) // block
    m = copy_id[:, None] == copy_id[None, :]
    return m.expand(batch, -1, -1).clone()


def new_token_mask(layout: str, batch: int, block: int, gen: torch.Generator) -> torch.Tensor:
    """The [b, n, n] visibility among the new tokens of a cached layout."""
    if layout == "denoise":
        return denoise_mask(batch, block)
    if layout == "verify":
        return simsd_verify_mask(batch, block, gen)
    if layout == "copies":
        return copies_mask(batch, block)
    raise ValueError(f"unknown cached layout {layout!r}")


# ---------------------------------------------------------------- cases
@dataclass
class CachedCase:
    """n new tokens per row attending to the row's cache (all of it) and to each other (new_mask)."""
    layout: str
    shape: HeadShape
    block: int                # B
    cache_lens: list[int]     # L per row
    q: torch.Tensor           # [b, n, Hq, D]
    k_new: torch.Tensor       # [b, n, Hkv, D]
    v_new: torch.Tensor
    new_mask: torch.Tensor    # [b, n, n] bool
    k_cache: torch.Tensor     # [b, max L, Hkv, D]
    v_cache: torch.Tensor

    @property
    def batch(self) -> int:
        return self.q.shape[0]

    @property
    def num_new(self) -> int:
        return self.q.shape[1]


@dataclass
class PrefillCase:
    """Packed varlen prompts (no padding), block-causal inside each prompt."""
    shape: HeadShape
    block: int
    lens: list[int]
    q: torch.Tensor           # [T, Hq, D]
    k: torch.Tensor           # [T, Hkv, D]
    v: torch.Tensor
    doc: torch.Tensor         # [T] prompt index
    pos: torch.Tensor         # [T] position inside the prompt

    def mask(self) -> torch.Tensor:
        """Dense [T, T] bool: same prompt and key block <= query block."""
        same = self.doc[:, None] == self.doc[None, :]
        return same & (self.pos[:, None] // self.block >= self.pos[None, :] // self.block)


def _randn(shape, gen, dtype, device):
    """Random normals made on `device` (fast for the large GPU cases), deterministic per seed."""
    return torch.randn(shape, generator=gen, device=device).to(dtype)


def _generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(CPU generator for masks, device generator for tensors)."""
    return torch.Generator().manual_seed(seed), torch.Generator(device=device).manual_seed(seed)


def make_cached_case(layout: str, shape: HeadShape, block: int, cache_lens: list[int],
                     dtype: torch.dtype, device: torch.device, seed: int = 0) -> CachedCase:
    mask_gen, gen = _generators(seed, device)
    b = len(cache_lens)
    mask = new_token_mask(layout, b, block, mask_gen)
    n = mask.shape[1]
    hq, hkv, d = shape.num_q_heads, shape.num_kv_heads, shape.head_dim
    return CachedCase(
        layout=layout, shape=shape, block=block, cache_lens=list(cache_lens),
        q=_randn((b, n, hq, d), gen, dtype, device),
        k_new=_randn((b, n, hkv, d), gen, dtype, device),
        v_new=_randn((b, n, hkv, d), gen, dtype, device),
        new_mask=mask.to(device),
        k_cache=_randn((b, max(cache_lens), hkv, d), gen, dtype, device),
        v_cache=_randn((b, max(cache_lens), hkv, d), gen, dtype, device))


def make_prefill_case(shape: HeadShape, block: int, lens: list[int], dtype: torch.dtype,
                      device: torch.device, seed: int = 0) -> PrefillCase:
    gen = _generators(seed, device)[1]
    total = sum(lens)
    doc = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)])
    pos = torch.cat([torch.arange(n) for n in lens])
    hq, hkv, d = shape.num_q_heads, shape.num_kv_heads, shape.head_dim
    return PrefillCase(shape=shape, block=block, lens=list(lens),
                       q=_randn((total, hq, d), gen, dtype, device),
                       k=_randn((total, hkv, d), gen, dtype, device),
                       v=_randn((total, hkv, d), gen, dtype, device),
                       doc=doc.to(device), pos=pos.to(device))


# ---------------------------------------------------------------- paged pool
@dataclass
class PagedPool:
    """A K/V page pool shared by all rows (and reused across cases)."""
    k: torch.Tensor  # [num_pages, page_size, Hkv, D]
    v: torch.Tensor

    @classmethod
    def allocate(cls, num_pages: int, page_size: int, shape: HeadShape, dtype, device) -> "PagedPool":
        size = (num_pages, page_size, shape.num_kv_heads, shape.head_dim)
        return cls(torch.randn(size, dtype=dtype, device=device), torch.randn(size, dtype=dtype, device=device))

    @property
    def num_pages(self) -> int:
        return self.k.shape[0]

    @property
    def page_size(self) -> int:
        return self.k.shape[1]

    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[num_slots, Hkv, D] views; slot = page * page_size + offset."""
        return self.k.flatten(0, 1), self.v.flatten(0, 1)

    def flex_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[1, Hkv, num_slots, D] strided views for flex (no copy)."""
        k, v = self.flat()
        return k.unsqueeze(0).transpose(1, 2), v.unsqueeze(0).transpose(1, 2)


@dataclass
class RowPages:
    """One case's rows placed in a pool: random physical pages, room for the n new tokens."""
    pool: PagedPool
    page_table: torch.Tensor   # [b, pages_per_row] int32 physical page ids
    cache_lens: torch.Tensor   # [b] int32
    num_new: int
    page_owner: torch.Tensor   # [num_pages] int32 row id, -1 for pages of no row of this case
    page_logical: torch.Tensor  # [num_pages] int32 page index inside its row (0 where unowned)

    def slots(self, positions: torch.Tensor) -> torch.Tensor:
        """Physical slot ids for logical positions [b, m] (positions must lie in the row's pages)."""
        ps = self.pool.page_size
        page = torch.gather(self.page_table.long(), 1, positions // ps)
        return page * ps + positions % ps

    def row_slots(self, row: int, positions: torch.Tensor) -> torch.Tensor:
        """Physical slot ids of row `row` for logical positions [m]."""
        ps = self.pool.page_size
        return self.page_table[row].long()[positions // ps] * ps + positions % ps

    def scratch_slots(self) -> torch.Tensor:
        """[b * n] slots of logical positions L .. L+n-1 of each row (where new tokens go)."""
        dev = self.page_table.device
        pos = self.cache_lens.long()[:, None] + torch.arange(self.num_new, device=dev)[None, :]
        return self.slots(pos).flatten()


def place_rows(case: CachedCase, pool: PagedPool, seed: int = 0) -> RowPages:
    """Write the case's cache into random pages of `pool`; poison every V slot no row may read."""
    ps, dev = pool.page_size, pool.k.device
    b, n = case.batch, case.num_new
    per_row = math.ceil((max(case.cache_lens) + n) / ps)
    if b * per_row > pool.num_pages:
        raise ValueError(f"pool of {pool.num_pages} pages is too small for {b} rows x {per_row} pages")
    gen = torch.Generator().manual_seed(seed)
    table = torch.randperm(pool.num_pages, generator=gen)[: b * per_row].view(b, per_row)
    owner = torch.full((pool.num_pages,), -1, dtype=torch.int32)
    logical = torch.zeros(pool.num_pages, dtype=torch.int32)
    owner[table.flatten()] = torch.arange(b, dtype=torch.int32).repeat_interleave(per_row)
    logical[table.flatten()] = torch.arange(per_row, dtype=torch.int32).repeat(b)
    rows = RowPages(pool, table.to(dev, torch.int32), torch.tensor(case.cache_lens, dtype=torch.int32, device=dev),
                    n, owner.to(dev), logical.to(dev))
    pool.v.fill_(POISON)
    flat_k, flat_v = pool.flat()
    for r, length in enumerate(case.cache_lens):
        slots = rows.row_slots(r, torch.arange(length, device=dev))
        flat_k.index_copy_(0, slots, case.k_cache[r, :length])
        flat_v.index_copy_(0, slots, case.v_cache[r, :length])
    return rows


# ---------------------------------------------------------------- fp32 references
def _attend_fp32(q, k, v, mask, scale):
    """q [Hq, m, D], k/v [Hkv, s, D], mask [m, s] -> [m, Hq, D] float32."""
    group = q.shape[0] // k.shape[0]
    k = k.float().repeat_interleave(group, 0)
    v = v.float().repeat_interleave(group, 0)
    s = torch.einsum("hmd,hsd->hms", q.float(), k) * scale
    s = s.masked_fill(~mask[None], float("-inf"))
    return torch.einsum("hms,hsd->mhd", torch.softmax(s, dim=-1), v)


def reference_cached(case: CachedCase) -> torch.Tensor:
    """Dense fp32 attention of each row over [its cache | new tokens]. [b, n, Hq, D]."""
    scale = 1.0 / math.sqrt(case.shape.head_dim)
    out = []
    for r, length in enumerate(case.cache_lens):
        k = torch.cat([case.k_cache[r, :length], case.k_new[r]]).transpose(0, 1)
        v = torch.cat([case.v_cache[r, :length], case.v_new[r]]).transpose(0, 1)
        ones = torch.ones(case.num_new, length, dtype=torch.bool, device=k.device)
        mask = torch.cat([ones, case.new_mask[r]], dim=1)
        out.append(_attend_fp32(case.q[r].transpose(0, 1), k, v, mask, scale))
    return torch.stack(out)


def reference_prefill(case: PrefillCase) -> torch.Tensor:
    """Dense fp32 block-causal attention, one prompt at a time. [T, Hq, D]."""
    scale = 1.0 / math.sqrt(case.shape.head_dim)
    out, start = [], 0
    for n in case.lens:
        sl = slice(start, start + n)
        pos = case.pos[sl]
        mask = pos[:, None] // case.block >= pos[None, :] // case.block
        out.append(_attend_fp32(case.q[sl].transpose(0, 1), case.k[sl].transpose(0, 1),
                                case.v[sl].transpose(0, 1), mask, scale))
        start += n
    return torch.cat(out)


def max_abs_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return (out.float() - ref.float()).abs().max().item()
