"""A draft's whole greedy denoising loop as one CUDA graph.

The reference draft is small enough that one of its forwards is cheaper than the host work of
launching it; replaying k denoising steps (forward, confidence, one reveal per step) as a single
graph removes that host work from every step but the round's first. Like StaticForward, it runs
over every cache slot with fixed shapes; rows outside the round have nothing masked and reveal
nothing. On CPU the same body runs eagerly (how it is tested without a GPU).
"""
from __future__ import annotations

import torch

from .decoding.remasking import reveal_positions
from .graphs import SPAN_BUCKET
from .models import ForwardBatch
from .runner import ModelRunner


class DraftLoop:
    def __init__(self, runner: ModelRunner, block: int, rule: str):
        cache, dev = runner.cache, runner.device
        S = cache.num_slots
        self.runner, self.cache, self.block, self.rule = runner, cache, block, rule
        self.tokens = torch.zeros(S, block, dtype=torch.long, device=dev)
        self.masked = torch.zeros(S, block, dtype=torch.bool, device=dev)
        self.positions = torch.zeros(S, block, dtype=torch.long, device=dev)
        self.steps = torch.zeros(S, block, dtype=torch.long, device=dev)
        self.lens = torch.zeros(S, dtype=torch.long, device=dev)
        self.offset = torch.zeros(1, dtype=torch.long, device=dev)
        self.visible = torch.ones(S, block, block, dtype=torch.bool, device=dev)
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph | None] = {}

    def _body(self, k: int, span: int) -> None:
        model = self.runner.model
        for i in range(k):
            batch = ForwardBatch(self.positions, self.visible, self.cache, None, self.lens, None, span,
                                 layer_fn=self.runner.layer_fn)
            confidence, tokens = torch.softmax(model.logits(model.hidden(self.tokens, batch)), -1).max(-1)
            reveal = reveal_positions(confidence, self.masked, self.rule)
            self.tokens.copy_(torch.where(reveal, tokens, self.tokens))
            self.steps.copy_(torch.where(reveal, self.offset + (i + 1), self.steps))
            self.masked.copy_(self.masked & ~reveal)

    def _graph(self, k: int, span: int):
        key = (k, span)
        if key not in self.graphs:
            self.graphs[key] = self._capture(k, span) if self.runner.cuda_graphs else None
        return self.graphs[key]

    def _capture(self, k: int, span: int):
        # Capture with nothing masked: the warm-up changes no state that matters.
        self.masked.zero_()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._body(k, span)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.runner.static.pool):
            self._body(k, span)
        return graph

    def run(self, slots, drafts, masked, positions, steps, offset: int, k: int, max_len: int):
        """Run k steps for rows ``slots`` (tokens/masks/positions/steps [b, B]); returns drafts, steps."""
        span = min(self.cache.max_len, -(-max(max_len, 1) // SPAN_BUCKET) * SPAN_BUCKET)
        graph = self._graph(k, span)
        self.masked.zero_()
        self.tokens[slots], self.masked[slots], self.positions[slots] = drafts, masked, positions
        self.steps[slots] = steps
        self.lens[slots] = self.cache.lengths[slots]
        self.offset.fill_(offset)
        if graph is not None:
            graph.replay()
        else:
            self._body(k, span)
        return self.tokens[slots], self.steps[slots]
