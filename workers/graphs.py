"""Fixed-shape decoding forwards over the active rows, replayed as CUDA graphs on the GPU.

Decoding forwards are tiny (a few tokens per sequence), so on a GPU their cost is dominated by
kernel launches unless the whole forward is one CUDA graph. A graph needs fixed shapes and fixed
addresses, so each :class:`StaticForward` owns input buffers for a batch-size bucket (2, 4, 8,
16, 32, 64, 128, 256, ...) and a query length ``q``: the active rows are copied into the
first rows, the padding rows read nothing (length 0) and write nothing. Graphs are captured
lazily, only for the buckets and layouts a run uses. On CPU the same code runs eagerly, which is
how the fixed-shape path is tested without a GPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from .models import ForwardBatch
from .models.attention import PagedMeta, gather_meta
from .models.gpu_info import sm_count

SPAN_BUCKET = 128  # torch backend: cache spans are rounded up to this, so few graphs cover all lengths


@dataclass
class CaptureStats:
    """CUDA graphs captured in this process and the seconds their capture took (warm-up runs
    included): what a first batch pays besides compilation (product_profile reports it)."""
    count: int = 0
    seconds: float = 0.0


CAPTURES = CaptureStats()


def capture(body: Callable, args: tuple = (), pool=None, warmups: int = 2):
    """Record ``body(*args)`` as a CUDA graph after ``warmups`` runs on a side stream (allocator
    and kernel selection). Returns (graph, the captured call's output)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmups):
            body(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = body(*args)
    torch.cuda.synchronize()
    CAPTURES.count += 1
    CAPTURES.seconds += time.perf_counter() - start
    return graph, out


MIN_BUCKET = 2  # see batch_bucket


def batch_bucket(b: int) -> int:
    """The smallest power of two >= max(b, MIN_BUCKET): the batch size a fixed-shape forward is
    captured at. A single row runs in a bucket of 2 (the padding row reads and writes nothing):
    torch.compile specializes a dimension of size 1, so a bucket of 1 cost every compiled model a
    second compilation (CPU probe, tiny model, batches 1-8: 2 graphs, now 1), paid by the first
    call that reached one row, while a GEMM of two rows reads the same weights as one of one."""
    return 1 << max(MIN_BUCKET.bit_length() - 1, (b - 1).bit_length())


def span_bucket(max_len: int, limit: int) -> int:
    return min(limit, -(-max(max_len, 1) // SPAN_BUCKET) * SPAN_BUCKET)


class StaticForward:
    """One fixed shape of a runner's model: ``nb`` rows of ``q`` new tokens (and, for the torch
    backend, a cache span), run against the runner's pool with its layer function and kernels."""

    def __init__(self, runner, nb: int, q: int, span: int):
        """runner: the ``ModelRunner`` whose model, pool, layer function and kernels this runs."""
        model, cache, attention = runner.model, runner.cache, runner.attention
        dev = cache.lengths.device
        self.model, self.cache, self.nb, self.span = model, cache, nb, span
        self.layer_fn, self.fast = runner.layer_fn, runner.fast_layers
        self.ids = torch.zeros(nb, q, dtype=torch.long, device=dev)
        self.positions = torch.zeros(nb, q, dtype=torch.long, device=dev)
        self.visible = torch.eye(q, dtype=torch.bool, device=dev).repeat(nb, 1, 1)
        self.lens = torch.zeros(nb, dtype=torch.long, device=dev)
        self.write = torch.zeros(nb, q, dtype=torch.bool, device=dev)
        self.page_rows = torch.zeros(nb, cache.page_table.shape[1], dtype=torch.int32, device=dev)
        self.splits = 1
        if attention == "triton":
            from .models.paged_attention import num_splits

            heads, kv = model.config.num_attention_heads, model.config.num_key_value_heads
            self.splits = num_splits(nb, kv, heads // kv, q, cache.max_len, sm_count(dev))
        self.triton = attention == "triton"
        self.out = None
        self.graph = None

    def body(self) -> torch.Tensor:
        """The forward over the buffers (what a graph records)."""
        new_mask = self.visible[:, None]
        if self.triton:
            meta = PagedMeta(self.page_rows, self.lens, new_mask, self.cache.page_size, self.splits)
        else:
            meta = gather_meta(self.cache, self.page_rows, self.lens, self.span, new_mask)
        write_idx = self.cache.write_index(self.page_rows, self.positions, self.write)
        batch = ForwardBatch(self.positions, meta, self.cache, write_idx, self.layer_fn, self.fast)
        return self.model.hidden(self.ids, batch)

    def capture(self, pool) -> None:
        # Warm up on a side stream (allocator and kernel selection), then record. Write flags are
        # all off here, so warm-up runs only touch the pool's scratch position.
        self.write.zero_()
        self.graph, self.out = capture(self.body, pool=pool)

    def load(self, ids, positions, visible, slots, write, lens) -> int:
        """Copy the inputs of rows ``slots`` into the first rows; the rest become padding."""
        b = slots.shape[0]
        self.ids[:b], self.positions[:b], self.visible[:b] = ids, positions, visible
        self.lens[:b] = lens
        self.lens[b:] = 0
        self.page_rows[:b] = self.cache.page_table[slots]
        self.write.zero_()
        if write is not None:
            self.write[:b] = write
        return b

    def __call__(self, ids, positions, visible, slots, write, lens) -> torch.Tensor:
        """Returns the hidden states [b, q, hidden] of rows ``slots``."""
        b = self.load(ids, positions, visible, slots, write, lens)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.out = self.body()
        return self.out[:b]


class StaticForwards:
    """The :class:`StaticForward` of every (bucket, query length, span) a runner's decoders have
    used, over the runner's current pool (the runner makes a new one when it reallocates)."""

    def __init__(self, runner):
        self.runner = runner
        self.pool = torch.cuda.graph_pool_handle() if runner.cuda_graphs else None
        self.forwards: dict[tuple[int, int, int], StaticForward] = {}

    def span(self, max_len: int) -> int:
        # The triton backend reads lengths at run time: one shape for all spans.
        return 0 if self.runner.attention == "triton" else span_bucket(max_len, self.runner.cache.max_len)

    def get(self, b: int, q: int, max_len: int) -> StaticForward:
        key = (batch_bucket(b), q, self.span(max_len))
        if key not in self.forwards:
            fwd = StaticForward(self.runner, key[0], q, key[2])
            if self.runner.cuda_graphs:
                fwd.capture(self.pool)
            self.forwards[key] = fwd
        return self.forwards[key]

    def close(self) -> None:
        self.forwards.clear()
