"""Drafts for SimSD: an SDAR model denoising the block, or a Qwen3 AR model going left to right.

Both return, for the current block of each row: the drafted tokens ``drafts[b, B]`` (leftover
positions unchanged), the reveal step ``steps[b, B]`` (0 for leftover, 1..n for drafts; drafts
revealed in the same step share it) and, when asked, the draft distribution each token was drawn
from ``probs[b, B, V]`` (for MRS).
"""
from __future__ import annotations

import torch

from ..draft_loop import DraftLoop
from ..runner import ModelRunner
from .commits import CommitQueue
from ..decoding.layouts import full_block
from ..decoding.remasking import reveal_positions, step_quota, steps_per_block
from ..decoding.rng import STREAM_DRAFT
from ..decoding.sampling import choose_tokens
from ..decoding.sequence import Sequence
from ..decoding.host import to_device


class DiffusionDrafter:
    """An SDAR draft: denoises the remaining masks, one reveal per step by default (most confident);
    ``--denoising-steps`` below the block length reveals several per step (see ``draft``)."""

    def __init__(self, runner: ModelRunner, block: int, settings, generator):
        self.runner, self.block, self.settings = runner, block, settings  # randomness: per row (rng.py)
        self.never = _never(runner)
        self.commits: CommitQueue | None = None
        self.loop: DraftLoop | None = None  # the graphed denoising loop, built on first use

    def make_queues(self, num_slots: int, fold: bool) -> list[CommitQueue]:
        """Full blocks enter this cache as they enter the target's (folded into the first step)."""
        self.commits = CommitQueue(self.runner, num_slots, self.block, fold, "num_draft_forwards", lazy=True)
        return [self.commits]

    def admit(self, seqs: list[Sequence]) -> None:
        slots = to_device([s.slot for s in seqs], self.runner.device)
        self.runner.prefill(slots, [s.aligned_prompt(self.block) for s in seqs], self.block)

    def draft(self, seqs, slots, ids, masked, starts, rows, want_probs: bool, denoising_steps: int | None = None):
        """rows: the step's StepRows (temperatures, top-k/top-p, each row's random stream);
        denoising_steps: this round's steps per block instead of the configured ones (adaptive).

        Each round denoises the block's n remaining masks afresh: one reveal per step (n steps),
        or with ``--denoising-steps`` S below the block length at most S steps, step k revealing
        ``step_quota`` positions; positions revealed in one step share their reveal step t_i.
        """
        dev, B, cfg = self.runner.device, self.block, self.settings
        self.commits.catch_up(seqs)  # blocks finished while this draft sat out (adaptive rounds)
        positions = starts[:, None] + torch.arange(B, device=dev)
        drafts, masked = ids.clone(), masked.clone()
        steps = torch.zeros_like(ids)
        probs = None
        counted = cfg.draft_remasking != "dynamic"
        S, steps_needed = self.count_steps(seqs, denoising_steps) if counted else \
            (steps_per_block(denoising_steps or cfg.denoising_steps, B), None)
        step = 0
        while (step < steps_needed) if counted else bool(masked.any()):
            if counted and not want_probs and self._use_loop(seqs):
                # The remaining steps as one graph replay (queued blocks were folded in already).
                loop = self._loop()
                drafts, steps = loop.run(slots, drafts, masked, positions, steps, step, steps_needed - step,
                                         max(s.start for s in seqs), S)
                break
            step += 1
            if not counted:
                for s, a in zip(seqs, masked.any(-1).tolist()):
                    s.result.num_draft_forwards += int(a)
            h = self.commits.hidden(seqs, drafts, positions, full_block(len(seqs), B, dev), slots)
            logits = self.runner.logits(h)
            tokens, confidence, dist = choose_tokens(
                logits, rows.column(rows.temps), rows.column(rows.top_k), rows.column(rows.top_p),
                rows.uniforms(STREAM_DRAFT + step, B) if want_probs else None, sample=want_probs, never=self.never)
            quota = None if S is None else step_quota(masked.sum(-1), S, step - 1)
            reveal = reveal_positions(confidence, masked, cfg.draft_remasking, cfg.threshold, quota)
            drafts = torch.where(reveal, tokens, drafts)
            steps = torch.where(reveal, step, steps)
            if want_probs:
                probs = dist if probs is None else torch.where(reveal[..., None], dist, probs)
            masked &= ~reveal
        return drafts, steps, probs

    def count_steps(self, seqs, denoising_steps: int | None) -> tuple[int | None, int]:
        """A draft revealing a known count per step: S (steps per block, None: one reveal a step)
        and the round's step count, known up front (no synchronisation per step); each row's
        draft forwards are counted."""
        S = steps_per_block(denoising_steps or self.settings.denoising_steps, self.block)
        row_steps = [n if S is None else min(S, n) for n in (s.masked_left for s in seqs)]
        for s, n in zip(seqs, row_steps):
            s.result.num_draft_forwards += n
        return S, max(row_steps)

    def _use_loop(self, seqs) -> bool:
        """The graphed loop needs fixed shapes and no block waiting to be folded into a forward."""
        return self.runner.static_shapes and not any(s.slot in self.commits.pending for s in seqs)

    def _loop(self) -> DraftLoop:
        if self.loop is None or self.loop.cache is not self.runner.cache:
            self.loop = DraftLoop(self.runner, self.block, self.settings.draft_remasking)
        return self.loop

    def after_round(self, seqs, slots, committed_lens) -> None:
        pass  # nothing enters this cache until the block is full


class AutoregressiveDrafter:
    """A Qwen3 AR draft. Its cache holds every committed token but the last (see ``after_round``)."""

    def __init__(self, runner: ModelRunner, block: int, settings, generator):
        self.runner, self.block, self.settings = runner, block, settings  # randomness: per row (rng.py)
        self.never = _never(runner)

    def make_queues(self, num_slots: int, fold: bool) -> list:
        return []  # the AR cache follows committed tokens itself (see after_round)

    def admit(self, seqs: list[Sequence]) -> None:
        slots = to_device([s.slot for s in seqs], self.runner.device)
        self.runner.prefill(slots, [s.tokens[:-1] for s in seqs], block=1)

    def draft(self, seqs, slots, ids, masked, starts, step_rows, want_probs: bool, denoising_steps=None):
        dev, B = self.runner.device, self.block
        b = len(seqs)
        drafts, steps = ids.clone(), torch.zeros_like(ids)
        probs = torch.zeros(b, B, self.runner.config.vocab_size, device=dev) if want_probs else None
        left = [s.masked_left for s in seqs]
        num_left = to_device(left, dev)
        first = B - num_left  # leftover length: drafting starts here
        # The token before the first masked position: in the block, or the last committed one.
        prev = to_device([s.tokens[-1] if s.start + B - n == len(s.tokens) else 0
                          for s, n in zip(seqs, left)], dev)
        prev = torch.where(first > 0, ids.gather(-1, (first - 1).clamp(min=0)[:, None]).squeeze(-1), prev)
        base = self.runner.cache.lengths[slots].clone()  # = committed length - 1
        visible = torch.ones(b, 1, 1, dtype=torch.bool, device=dev)
        write = torch.ones(b, 1, dtype=torch.bool, device=dev)
        rows = torch.arange(b, device=dev)
        bound = max(s.start for s in seqs) + B  # committed length - 1 < block start + B
        for j in range(max(left)):
            live = j < num_left
            for s, n in zip(seqs, left):
                s.result.num_draft_forwards += int(j < n)
            # Scratch K/V past the cache length; after_round keeps what was committed.
            h = self.runner.hidden(prev[:, None], (base + j)[:, None], visible, slots, write, cache_lens=base + j,
                                   max_cache_len=bound + j)
            tokens, _, dist = choose_tokens(
                self.runner.logits(h), step_rows.column(step_rows.temps), step_rows.column(step_rows.top_k),
                step_rows.column(step_rows.top_p), step_rows.uniforms(STREAM_DRAFT + j, 1) if want_probs else None,
                sample=want_probs, never=self.never)
            tokens = tokens[:, 0]
            col = (first + j).clamp(max=B - 1)
            drafts[rows[live], col[live]] = tokens[live]
            steps[rows[live], col[live]] = j + 1
            if want_probs:
                probs[rows[live], col[live]] = dist[live, 0]
            prev = tokens
        return drafts, steps, probs

    def after_round(self, seqs, slots, committed_lens) -> None:
        # K/V at positions < committed - 1 were written for committed tokens: keep them.
        self.runner.cache.lengths[slots] = committed_lens - 1


def _never(runner) -> tuple[int, ...]:
    """Token ids a draft never proposes: the mask token (the target never emits it)."""
    mask = runner.config.mask_token_id
    return (mask,) if mask is not None else ()
