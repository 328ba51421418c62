"""Paged KV pool of one model, owned by the runner that runs it.

K/V live in fixed-size pages. Per layer the pool is ``[num_kv_heads, num_pages * page_size + 1,
head_dim]`` (heads first, so one layer is directly a ``[1, Hkv, N, D]`` key tensor for attention
kernels). A sequence's token at logical position ``p`` lives at flat index
``page_table[slot, p // page_size] * page_size + p % page_size``. The last flat index
(``scratch``) absorbs writes that are masked off, so writes never need data-dependent shapes.

Which pages a slot owns is decided on the host by the block manager
(``workers/engine_core/block_manager.py``); this class only holds the tensors: the pool, the
device page table ``[num_slots, pages_per_slot]`` and the per-slot ``lengths`` (how many leading
positions are valid; positions at or past the length are scratch, which is how speculative K/V is
discarded).
"""
from __future__ import annotations

import torch

from .config import ModelConfig


def kv_bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
    """Bytes of K and V one token takes over all layers."""
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * elem


class KVCache:
    def __init__(self, config: ModelConfig, num_slots: int, num_pages: int, page_size: int,
                 pages_per_slot: int, device: torch.device, dtype: torch.dtype):
        self.page_size, self.num_pages = page_size, num_pages
        self.num_tokens = num_pages * page_size
        self.scratch = self.num_tokens  # flat index of the write sink
        shape = (config.num_key_value_heads, self.num_tokens + 1, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.page_table = torch.zeros(num_slots, pages_per_slot, dtype=torch.int32, device=device)
        self.lengths = torch.zeros(num_slots, dtype=torch.long, device=device)
        self.device = device

    @property
    def num_slots(self) -> int:
        return self.lengths.shape[0]

    @property
    def max_len(self) -> int:
        """The longest sequence one slot can hold."""
        return min(self.page_table.shape[1] * self.page_size, self.num_tokens)

    def set_pages(self, slots: list[int], tables: list[list[int]]) -> None:
        """Write the page lists of ``slots`` (host lists from the block manager) to the device."""
        width = self.page_table.shape[1]
        rows = torch.zeros(len(slots), width, dtype=torch.int32)
        for i, pages in enumerate(tables):
            rows[i, :len(pages)] = torch.tensor(pages, dtype=torch.int32)
        index = torch.tensor(slots, dtype=torch.long)
        if self.device.type == "cuda":
            rows, index = rows.pin_memory().to(self.device, non_blocking=True), index.pin_memory().to(self.device, non_blocking=True)
        self.page_table[index] = rows

    def flat_index(self, page_rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Flat pool index of logical ``positions[b, q]`` for rows with page tables ``page_rows[b, W]``."""
        P = self.page_size
        page = positions // P
        phys = page_rows.gather(1, page.clamp(0, page_rows.shape[1] - 1).long())
        return phys.long() * P + positions % P

    def write_index(self, page_rows: torch.Tensor, positions: torch.Tensor, write: torch.Tensor) -> torch.Tensor:
        """[b, q] flat index where each new token's K/V goes: its position, or scratch when not written."""
        return torch.where(write, self.flat_index(page_rows, positions), self.scratch)

    def reset(self, slots: torch.Tensor) -> None:
        self.lengths[slots] = 0

    def close(self) -> None:
        self.k.clear()
        self.v.clear()
