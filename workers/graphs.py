"""Fixed-shape forwards over every cache slot, replayed as CUDA graphs on the GPU.

Decoding forwards are tiny (a few tokens per sequence) so on a GPU their cost is dominated by
kernel launches unless the whole forward is one CUDA graph. A graph needs fixed shapes and fixed
addresses, so each :class:`StaticForward` owns input buffers for all ``S`` cache slots and a
fixed query length ``q`` and cache span. Rows of idle slots compute garbage that nobody reads and
write nothing (their write flags are off). On CPU the same code runs eagerly, which is how the
fixed-shape path is tested without a GPU.
"""
from __future__ import annotations

import torch

from .models import ForwardBatch, KVCache, Qwen3Model

SPAN_BUCKET = 128  # cache spans are rounded up to this, so few graphs cover all lengths


class StaticForward:
    def __init__(self, model: Qwen3Model, cache: KVCache, q: int, span: int, capture: bool, pool=None,
                 layer_fn=None):
        S, dev = cache.num_slots, cache.lengths.device
        self.model, self.cache, self.span, self.layer_fn = model, cache, span, layer_fn
        self.ids = torch.zeros(S, q, dtype=torch.long, device=dev)
        self.positions = torch.zeros(S, q, dtype=torch.long, device=dev)
        self.visible = torch.eye(q, dtype=torch.bool, device=dev).repeat(S, 1, 1)
        self.lens = torch.zeros(S, dtype=torch.long, device=dev)
        self.write = torch.zeros(S, q, dtype=torch.bool, device=dev)
        self.out = None
        self.graph = self._capture(pool) if capture else None

    def _forward(self) -> torch.Tensor:
        batch = ForwardBatch(self.positions, self.visible, self.cache, None, self.lens, self.write, self.span,
                             layer_fn=self.layer_fn)
        return self.model.hidden(self.ids, batch)

    def _capture(self, pool):
        # Warm up on a side stream (allocator and kernel selection), then record. Write flags are
        # all off here, so warm-up runs only touch the cache's scratch position.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._forward()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            self.out = self._forward()
        return graph

    def __call__(self, ids, positions, visible, slots, write, lens) -> torch.Tensor:
        """Inputs for rows ``slots`` only; returns their hidden states [b, q, hidden]."""
        self.write.zero_()
        self.ids[slots], self.positions[slots], self.visible[slots] = ids, positions, visible
        self.lens[slots] = lens
        if write is not None:
            self.write[slots] = write
        if self.graph is not None:
            self.graph.replay()
        else:
            self.out = self._forward()
        return self.out[slots]


class StaticForwards:
    """The :class:`StaticForward` of every (query length, span bucket) a decoder has used."""

    def __init__(self, model: Qwen3Model, cache: KVCache, capture: bool, layer_fn=None):
        self.model, self.cache, self.capture, self.layer_fn = model, cache, capture, layer_fn
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.forwards: dict[tuple[int, int], StaticForward] = {}

    def get(self, q: int, max_len: int) -> StaticForward:
        span = min(self.cache.max_len, -(-max(max_len, 1) // SPAN_BUCKET) * SPAN_BUCKET)
        key = (q, span)
        if key not in self.forwards:
            self.forwards[key] = StaticForward(self.model, self.cache, q, span, self.capture, self.pool,
                                               self.layer_fn)
        return self.forwards[key]

    def close(self) -> None:
        self.forwards.clear()
