"""A draft's whole greedy denoising loop as one CUDA graph.

The reference draft is small enough that one of its forwards is cheaper than the host work of
launching it; replaying k denoising steps (forward, confidence, reveal) as a single
graph removes that host work from every step but the round's first. Like StaticForward, it runs
at a batch-size bucket with fixed shapes; padding rows have nothing masked and reveal nothing. On
CPU the same body runs eagerly (how it is tested without a GPU). Each step reveals one position,
or, with S denoising steps per block (``--denoising-steps``), ``step_quota`` positions computed on
the device from the masked count and the step's index (so the graph needs no host input).
"""
from __future__ import annotations

import torch

from .decoding.remasking import reveal_positions, step_quota
from .graphs import StaticForward, batch_bucket, capture
from .runner import ModelRunner


class _Loop:
    """The buffers and graph of one (bucket, steps, span)."""

    def __init__(self, runner: ModelRunner, nb: int, block: int, span: int, k: int, rule: str,
                 steps: int | None = None):
        dev = runner.device
        self.runner, self.k, self.rule, self.num_steps = runner, k, rule, steps
        self.fwd = StaticForward(runner, nb, block, span)
        self.fwd.visible.fill_(True)
        self.masked = torch.zeros(nb, block, dtype=torch.bool, device=dev)
        self.steps = torch.zeros(nb, block, dtype=torch.long, device=dev)
        self.offset = torch.zeros(1, dtype=torch.long, device=dev)
        mask = runner.config.mask_token_id  # made before capture: no host->device copy inside the graph
        self.never = None if mask is None else torch.tensor([mask], device=dev)
        self.graph = self._capture() if runner.cuda_graphs else None

    def body(self) -> None:
        tokens = self.fwd.ids
        for i in range(self.k):
            logits = self.runner.logits(self.fwd.body())
            if self.never is not None:  # as the eager draft: the mask token is never proposed
                logits = logits.index_fill(-1, self.never, float("-inf"))
            confidence, chosen = torch.softmax(logits, -1).max(-1)
            quota = None if self.num_steps is None else step_quota(self.masked.sum(-1), self.num_steps,
                                                                   self.offset + i)
            reveal = reveal_positions(confidence, self.masked, self.rule, quota=quota)
            tokens.copy_(torch.where(reveal, chosen, tokens))
            self.steps.copy_(torch.where(reveal, self.offset + (i + 1), self.steps))
            self.masked.copy_(self.masked & ~reveal)

    def _capture(self):
        # Capture with nothing masked and nothing written: the warm-up changes no state that matters.
        self.masked.zero_()
        return capture(self.body, pool=self.runner.static.pool, warmups=1)[0]


class DraftLoop:
    """The graphed loops of one draft, per (bucket, steps to run, span, steps per block)."""

    def __init__(self, runner: ModelRunner, block: int, rule: str):
        self.runner, self.cache, self.block, self.rule = runner, runner.cache, block, rule
        self.loops: dict[tuple, _Loop] = {}

    def run(self, slots, drafts, masked, positions, steps, offset: int, k: int, max_len: int,
            num_steps: int | None = None):
        """Run k steps for rows ``slots`` (tokens/masks/positions/steps [b, B]); returns drafts, steps.
        num_steps: denoising steps per block (None: one reveal per step)."""
        b = slots.shape[0]
        key = (batch_bucket(b), k, self.runner.static.span(max_len), num_steps)
        if key not in self.loops:
            self.loops[key] = _Loop(self.runner, key[0], self.block, key[2], k, self.rule, num_steps)
        loop = self.loops[key]
        loop.fwd.load(drafts, positions, loop.fwd.visible[:b], slots, None, self.cache.lengths[slots])
        loop.masked.zero_()
        loop.masked[:b], loop.steps[:b] = masked, steps
        loop.offset.fill_(offset)
        if loop.graph is not None:
            loop.graph.replay()
        else:
            loop.body()
        return loop.fwd.ids[:b].clone(), loop.steps[:b].clone()
