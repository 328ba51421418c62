"""How many tokens the paged KV pool holds. Pure arithmetic on numbers the engine measures."""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class PoolPlan:
    page_size: int
    total_tokens: int | None  # None: sized to each generate call (CPU default)
    source: str               # how it was decided, for the log and the summary


def activation_reserve(batch_size: int, query_tokens: int, hidden: int, intermediate: int, vocab: int,
                       dtype_bytes: int) -> int:
    """Bytes kept free for one forward's activations and its logits, plus graph pools.

    query_tokens: the most tokens one sequence puts in a forward (e.g. B*B + B for exact verify
    with a folded commit). Logits are float32 and softmax makes two more copies of them.
    """
    tokens = batch_size * query_tokens
    per_token = dtype_bytes * (6 * hidden + 3 * intermediate) + 3 * 4 * vocab
    return tokens * per_token + GIB


def plan_pool(page_size: int, bytes_per_token: int, *, max_total_tokens: int | None = None,
              free_bytes: int | None = None, total_bytes: int | None = None,
              utilization: float = 0.9, reserve_bytes: int = 0) -> PoolPlan:
    """Tokens of K/V that fit: ``utilization`` of the device's memory, minus what is already
    used (weights) and ``reserve_bytes`` (activations, graphs), capped by ``max_total_tokens``.
    Without device numbers and without a cap, the pool is sized per call."""
    if free_bytes is None:
        if max_total_tokens is None:
            return PoolPlan(page_size, None, "sized to each call")
        return PoolPlan(page_size, _whole_pages(max_total_tokens, page_size), "--max-total-tokens")
    used = total_bytes - free_bytes
    budget = int(total_bytes * utilization) - used - reserve_bytes
    tokens = max(0, budget // bytes_per_token)
    source = f"{utilization:.2f} of {total_bytes / GIB:.1f} GiB"
    if max_total_tokens is not None and max_total_tokens < tokens:
        tokens, source = max_total_tokens, "--max-total-tokens"
    if tokens < page_size:
        raise MemoryError(f"no room for a KV pool: {budget / GIB:.2f} GiB left after weights "
                          f"({used / GIB:.1f} GiB used) and activations ({reserve_bytes / GIB:.1f} GiB) "
                          f"at gpu_memory_utilization {utilization}")
    return PoolPlan(page_size, _whole_pages(tokens, page_size), source)


def _whole_pages(tokens: int, page_size: int) -> int:
    return max(page_size, tokens // page_size * page_size)
