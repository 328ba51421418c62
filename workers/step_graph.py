"""A whole greedy denoising step as one CUDA graph: forward, token choice, reveal, new block.

Vanilla decoding (and SimSD's target-only rounds) run one denoising step per round. Built from
separate pieces, a step is one graphed forward plus a dozen small kernels for the logits, the
confidence, the reveal and the block update, each launched from Python; for a small model those
launches cost more than the forward. Here one replay per (batch bucket, fold) runs all of it. The
row's queued finished block (if any) is folded in front and stored by the same forward.

The host copies one packed int tensor in (slots, starts, pending blocks, the block's step index)
and gets the new block tokens and masks back on the device. Greedy rows only, without logit
processing or logprobs (the general path in ``vanilla.denoise_step`` handles those).
"""
from __future__ import annotations

import torch

from .decoding import layouts
from .decoding.remasking import reveal_positions, step_quota
from .graphs import StaticForward, batch_bucket, capture
from .round_graph import Replayable, folded_forward, pack_rows
from .runner import ModelRunner

SLOT, START, PENDING, STEP_INDEX, VALID = range(5)


class _Step(Replayable):
    def __init__(self, runner: ModelRunner, nb: int, block: int, fold: bool, rule: str, threshold: float,
                 steps: int | None, span: int):
        B, dev = block, runner.device
        self.runner, self.nb, self.B, self.fold, self.rule, self.num_steps = runner, nb, B, fold, rule, steps
        self.threshold = threshold
        self.fwd = StaticForward(runner, nb, 2 * B if fold else B, span)
        if not fold:
            self.fwd.visible.fill_(True)  # the block is bidirectional; nothing is written
        self.packed = torch.zeros(5, nb, dtype=torch.long, device=dev)
        self.out = torch.zeros(nb, 2 * B, dtype=torch.long, device=dev)  # tokens | masked
        self.arange = torch.arange(B, device=dev)
        self.never = torch.tensor([runner.config.mask_token_id], device=dev)
        self.graph = None

    def body(self, state_tokens, state_masked, queued) -> None:
        B, p = self.B, self.packed
        slots, valid = p[SLOT], p[VALID].bool()
        ids, masked = state_tokens[slots], state_masked[slots] & valid[:, None]
        pos = p[START][:, None] + self.arange
        visible = layouts.full_block(self.nb, B, ids.device)
        if self.fold:
            h = folded_forward(self.fwd, self.runner.cache, queued, ids, pos, visible, pos - B, slots, valid,
                               p[PENDING].bool() & valid)
        else:
            fwd = self.fwd
            fwd.ids.copy_(ids)
            fwd.positions.copy_(pos)
            fwd.lens.copy_(self.runner.cache.lengths[slots] * valid)
            fwd.page_rows.copy_(self.runner.cache.page_table[slots])
            h = fwd.body()
        # As vanilla.denoise_step: greedy choice (never the mask token), float32 confidence.
        logits = self.runner.logits(h).float().index_fill(-1, self.never, float("-inf"))
        confidence, chosen = torch.softmax(logits, -1).max(-1)
        quota = None if self.num_steps is None else step_quota(masked.sum(-1), self.num_steps, p[STEP_INDEX])
        reveal = reveal_positions(confidence, masked, self.rule, self.threshold, quota)
        self.out.copy_(torch.cat([torch.where(reveal, chosen, ids), (masked & ~reveal).long()], 1))


class StepGraphs:
    """The step graphs of one model, per (bucket, fold, span)."""

    def __init__(self, runner: ModelRunner, block: int, rule: str, threshold: float, steps: int | None):
        self.runner, self.block, self.rule, self.threshold, self.steps = runner, block, rule, threshold, steps
        self.cache = runner.cache
        self.graphs: dict[tuple, _Step] = {}

    def is_stale(self) -> bool:
        return self.cache is not self.runner.cache

    @classmethod
    def current(cls, graphs: "StepGraphs | None", runner: ModelRunner, *args) -> "StepGraphs | None":
        """``graphs`` while they still fit the runner's pool, new ones when it was reallocated,
        None without fixed shapes (eager steps)."""
        if not runner.static_shapes:
            return None
        return graphs if graphs is not None and not graphs.is_stale() else cls(runner, *args)

    def run(self, rows: list[list[int]], fold: bool, max_start: int, args) -> torch.Tensor:
        """rows: per batch row [slot, start, pending, step index]; returns ``out[:b]`` ([b, 2B]:
        the new block tokens and masked flags)."""
        nb = batch_bucket(len(rows))
        key = (nb, fold, self.runner.static.span(max_start))
        if key not in self.graphs:
            step = _Step(self.runner, nb, self.block, fold, self.rule, self.threshold, self.steps, key[2])
            if self.runner.cuda_graphs:
                step.graph, _ = capture(step.body, args, self.runner.static.pool)
            self.graphs[key] = step
        return self.graphs[key].run(pack_rows(rows, nb, 5, self.runner.device), args)[:len(rows)]
