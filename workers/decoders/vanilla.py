"""Vanilla block-diffusion decoding of an SDAR target (the baseline, and the quality reference)."""
from __future__ import annotations

import torch

from ..runner import ModelRunner
from .block_state import BlockState, ClosedBlocks, close_full_blocks, close_known_blocks
from .commits import CommitQueue
from ..step_graph import StepGraphs
from ..decoding.layouts import full_block
from ..decoding.remasking import reveal_positions, step_quota, steps_per_block
from ..decoding.rng import STREAM_TARGET
from ..decoding.row_settings import StepRows, process_logits, record_logprobs
from ..decoding.sampling import choose_tokens
from ..decoding.sequence import Sequence
from ..decoding.host import to_device


class VanillaDecoder:
    """One denoising step per call for every active sequence; full blocks are then committed.

    With ``--denoising-steps`` N below the block length, a block gets S = N steps and step k
    reveals ``step_quota`` (ceil(masked / (S - k))) positions; otherwise one position a step.
    """

    def __init__(self, target: ModelRunner, block: int, settings, num_slots: int, generator, timer, fold: bool):
        self.target, self.block, self.settings = target, block, settings
        self.timer = timer  # randomness is per row (rng.py)
        self.state = BlockState(num_slots, block, target.config.mask_token_id, target.device)
        self.steps = steps_per_block(settings.denoising_steps, block)  # None: one reveal per step
        self.commits = CommitQueue(target, num_slots, block, fold, "num_target_forwards")
        self.graphs: StepGraphs | None = None
        self.closed: ClosedBlocks | None = None  # blocks closed by the last step, not read yet

    def _graphs(self) -> StepGraphs | None:
        """Greedy steps as one replay on fixed shapes (see step_graph.py)."""
        cfg = self.settings
        self.graphs = StepGraphs.current(self.graphs, self.target, self.block, cfg.remasking, cfg.threshold,
                                         self.steps)
        return self.graphs

    def evict(self, seq: Sequence) -> None:
        """Forget a preempted row (its slot and pages are given to others)."""
        self.commits.drop(seq)
        if self.closed is not None:
            self.closed.drop(seq)

    def admit(self, seqs: list[Sequence], stop_ids) -> None:
        slots = _slots(seqs, self.target.device)
        self.target.prefill(slots, [s.aligned_prompt(self.block) for s in seqs], self.block)
        for s in seqs:
            s.result.num_target_forwards += 1
            self.commits.drop(s)
        self.state.open(seqs)

    def step(self, seqs: list[Sequence], stop_ids) -> list[Sequence]:
        """One denoising step of every row; returns the rows that finished.

        Blocks the last step closed (``self.closed``) are read after this step is queued: the
        host's stop checks run while the GPU computes (see ``ClosedBlocks``)."""
        cfg = self.settings
        closed, self.closed = self.closed, None
        if closed is not None:
            closed.keep(seqs)
            seqs = [s for s in seqs if not closed.is_final(s)]
        if seqs:
            slots = _slots(seqs, self.target.device)
            with self.timer("denoise"):
                denoise_step(self.target, self.commits, self.state, seqs, slots, stop_ids, cfg.remasking,
                             cfg.threshold, self.steps, self._graphs())
        finished = []
        if closed is not None:
            with self.timer("commit"):
                finished = closed.resolve(stop_ids)
        for s in seqs:
            s.result.num_target_forwards += 1  # a void step (below) is a forward the row took part in
        if finished:
            done = {id(s) for s in finished}
            seqs = [s for s in seqs if id(s) not in done]  # their step is void: never read
        for s in seqs:
            s.result.num_rounds += 1
        known = cfg.remasking != "dynamic"
        if known:
            # A known count per step: the host knows which blocks are full without reading the device.
            for s in seqs:
                k = self.state.steps_taken[s.slot]
                s.masked_left -= 1 if self.steps is None else step_quota(s.masked_left, self.steps, k)
        self.state.count_step(seqs)
        if not known:
            with self.timer("commit"):
                finished += close_full_blocks(self.state, [self.commits], seqs, stop_ids)[1]
            return finished
        full = [s for s in seqs if s.masked_left == 0]
        if full:
            with self.timer("commit"):
                self.closed = close_known_blocks(self.state, [self.commits], full)
        return finished


def denoise_step(runner: ModelRunner, commits: CommitQueue, state: BlockState, seqs: list[Sequence],
                 slots: torch.Tensor, stop_ids, rule: str, threshold: float = 0.9,
                 steps: int | None = None, graphs: StepGraphs | None = None) -> torch.Tensor:
    """One denoising step of the rows' current blocks: one forward of ``runner``'s model over each
    block (queued finished blocks folded in), each masked position's choice (greedy, or sampled
    from the row's stream; never the mask token), ``rule`` reveals (``steps`` per block: the
    ``--denoising-steps`` quota, else one a step), logprobs recorded, ``state`` updated.
    ``graphs``: greedy steps without logit processing or logprobs replay as one graph.
    Returns the rows' new block tokens [b, B] (on the device)."""
    dev, B = runner.device, state.block
    rows = StepRows(seqs, dev, sample=any(s.temperature > 0 for s in seqs))
    if graphs is not None and not rows.sample and not rows.process and rows.num_top is None:
        rows.advance()
        return _graph_step(graphs, commits, state, seqs, slots)
    never = (state.mask_id,)
    ids, masked = state.tokens[slots], state.masked[slots]
    positions = _starts(seqs, dev)[:, None] + torch.arange(B, device=dev)
    h = commits.hidden(seqs, ids, positions, full_block(len(seqs), B, dev), slots)
    logits = runner.logits(h)
    if rows.process:
        logits = process_logits(logits, seqs, [s.start - s.prompt_len for s in seqs], stop_ids)
    tokens, confidence, _ = choose_tokens(logits, rows.column(rows.temps), rows.column(rows.top_k),
                                          rows.column(rows.top_p), rows.uniforms(STREAM_TARGET, B),
                                          sample=rows.sample, never=never)
    quota = None if steps is None else state.quota(seqs, masked, steps)
    reveal = reveal_positions(confidence, masked, rule, threshold, quota)
    record_logprobs(rows, logits, tokens, reveal, [s.start for s in seqs], never)
    rows.advance()
    new_tokens = torch.where(reveal, tokens, ids)
    state.tokens[slots], state.masked[slots] = new_tokens, masked & ~reveal
    return new_tokens


def _graph_step(graphs: StepGraphs, commits: CommitQueue, state: BlockState, seqs: list[Sequence],
                slots: torch.Tensor) -> torch.Tensor:
    """``denoise_step`` as one replay of a StepGraph (same tokens)."""
    B = state.block
    pending = commits.ready(seqs)
    fold = any(pending)
    rows = [[s.slot, s.start, int(f), state.steps_taken[s.slot]] for s, f in zip(seqs, pending)]
    out = graphs.run(rows, fold, max(s.start for s in seqs), (state.tokens, state.masked, commits.tokens))
    state.tokens[slots], state.masked[slots] = out[:, :B], out[:, B:].bool()
    commits.stored([s.slot for s, f in zip(seqs, pending) if f])
    return out[:, :B]


def _slots(seqs: list[Sequence], device) -> torch.Tensor:
    return to_device([s.slot for s in seqs], device)


def _starts(seqs: list[Sequence], device) -> torch.Tensor:
    return to_device([s.start for s in seqs], device)
