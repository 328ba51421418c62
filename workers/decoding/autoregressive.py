"""Autoregressive decoding of a Qwen3 checkpoint (shifted logits), through the decoder interface."""
from __future__ import annotations

import torch

from ..runner import ModelRunner
from .sampling import choose_tokens
from .sequence import Sequence
from .host import temperatures, to_device


class AutoregressiveDecoder:
    """The cache holds every committed token but the last; each step feeds that last token."""

    def __init__(self, target: ModelRunner, settings, num_slots: int, generator, timer):
        self.target, self.settings, self.generator, self.timer = target, settings, generator, timer

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
            sample = any(s.temperature > 0 for s in seqs)
            temps = temperatures(seqs, dev, sample)
            tokens, _, _ = choose_tokens(logits, temps[:, None] if sample else None, self.settings.top_k,
                                         self.settings.top_p, self.generator, sample=sample)
        finished = []
        for s, tok in zip(seqs, tokens[:, 0].tolist()):
            s.tokens.append(tok)
            s.result.num_rounds += 1
            s.result.num_target_forwards += 1
            if s.check_finished(stop_ids):
                finished.append(s)
        return finished
