"""Autoregressive decoding of a Qwen3 checkpoint (shifted logits), through the decoder interface."""
from __future__ import annotations

import torch

from ..runner import ModelRunner
from ..decoding.rng import STREAM_TARGET
from ..decoding.row_settings import StepRows, process_logits, record_logprobs
from ..decoding.sampling import choose_tokens
from ..decoding.sequence import Sequence
from ..decoding.host import to_device


class AutoregressiveDecoder:
    """The cache holds every committed token but the last; each step feeds that last token."""

    def __init__(self, target: ModelRunner, settings, num_slots: int, generator, timer):
        self.target, self.settings, self.timer = target, settings, timer  # randomness is per row (rng.py)
        self.never = (target.config.mask_token_id,) if target.config.mask_token_id is not None else ()

    def evict(self, seq: Sequence) -> None:
        """Forget a preempted row (its slot and pages are given to others)."""
        pass  # all state lives in the cache, which the engine frees

    def admit(self, seqs: list[Sequence], stop_ids) -> None:
        slots = to_device([s.slot for s in seqs], self.target.device)
        self.target.prefill(slots, [s.tokens[:-1] for s in seqs], block=1)
        for s in seqs:
            s.result.num_target_forwards += 1

    def step(self, seqs: list[Sequence], stop_ids) -> list[Sequence]:
        dev = self.target.device
        slots = to_device([s.slot for s in seqs], dev)
        last = to_device([[s.tokens[-1]] for s in seqs], dev)
        positions = to_device([[len(s.tokens) - 1] for s in seqs], dev)
        visible = torch.ones(len(seqs), 1, 1, dtype=torch.bool, device=dev)
        write = torch.ones(len(seqs), 1, dtype=torch.bool, device=dev)
        with self.timer("denoise"):
            h = self.target.hidden(last, positions, visible, slots, write,
                                   max_cache_len=max(len(s.tokens) for s in seqs))
            logits = self.target.logits(h)
            self.target.cache.lengths[slots] += 1
            rows = StepRows(seqs, dev, sample=any(s.temperature > 0 for s in seqs))
            if rows.process:
                logits = process_logits(logits, seqs, [len(s.tokens) - s.prompt_len for s in seqs], stop_ids)
            tokens, _, _ = choose_tokens(logits, rows.column(rows.temps), rows.column(rows.top_k),
                                         rows.column(rows.top_p), rows.uniforms(STREAM_TARGET, 1),
                                         sample=rows.sample, never=self.never)
            record_logprobs(rows, logits, tokens, torch.ones_like(tokens, dtype=torch.bool),
                            [len(s.tokens) for s in seqs], self.never)
            rows.advance()
        finished = []
        for s, tok in zip(seqs, tokens[:, 0].tolist()):
            s.tokens.append(tok)
            s.result.num_rounds += 1
            s.result.num_target_forwards += 1
            if s.check_finished(stop_ids):
                finished.append(s)
        return finished
