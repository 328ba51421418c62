"""Preallocated per-slot KV cache. One instance per model, owned by the engine that runs it.

Layout per layer: ``[num_slots, num_kv_heads, max_len, head_dim]``. Each slot holds one sequence;
``lengths[slot]`` is how many leading positions are valid. Positions at or past the length are
scratch: writing there and not advancing the length is how speculative K/V is discarded. One
extra position at the end (``scratch``) absorbs writes that are masked off.
"""
from __future__ import annotations

import torch

from .config import ModelConfig


class KVCache:
    def __init__(self, config: ModelConfig, num_slots: int, max_len: int,
                 device: torch.device, dtype: torch.dtype):
        shape = (num_slots, config.num_key_value_heads, max_len + 1, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.lengths = torch.zeros(num_slots, dtype=torch.long, device=device)
        self.max_len = max_len
        self.scratch = max_len  # index of the write sink

    @property
    def num_slots(self) -> int:
        return self.lengths.shape[0]

    def reset(self, slots: torch.Tensor) -> None:
        self.lengths[slots] = 0

    def close(self) -> None:
        self.k.clear()
        self.v.clear()
