"""Autoregressive decoding of a Qwen3 checkpoint (shifted logits), through the decoder interface."""
from __future__ import annotations

import torch

from ..runner import ModelRunner
from .sampling import choose_tokens
from .sequence import Sequence


class AutoregressiveDecoder:
    """The cache holds every committed token but the last; each step feeds that last token."""

    def __init__(self, target: ModelRunner, settings, num_slots: int, generator, timer):
        self.target, self.settings, self.generator, self.timer = target, settings, generator, timer

    def admit(self, seqs: list[Sequence], stop_ids) -> None:
        slots = torch.tensor([s.slot for s in seqs], device=self.target.device)
        self.target.prefill(slots, [s.tokens[:-1] for s in seqs], block=1)
        for s in seqs:
            s.result.num_target_forwards += 1

    def step(self, seqs: list[Sequence], stop_ids) -> list[Sequence]:
        dev = self.target.device
        slots = torch.tensor([s.slot for s in seqs], device=dev)
        last = torch.tensor([[s.tokens[-1]] for s in seqs], device=dev)
        positions = torch.tensor([[len(s.tokens) - 1] for s in seqs], device=dev)
        visible = torch.ones(len(seqs), 1, 1, dtype=torch.bool, device=dev)
        write = torch.ones(len(seqs), 1, dtype=torch.bool, device=dev)
        with self.timer("denoise"):
            logits = self.target.logits(self.target.hidden(last, positions, visible, slots, write))
            self.target.cache.lengths[slots] += 1
            temps = torch.tensor([s.temperature for s in seqs], device=dev)[:, None]
            tokens, _, _ = choose_tokens(logits, temps, self.settings.top_k, self.settings.top_p, self.generator,
                                         sample=any(s.temperature > 0 for s in seqs))
        finished = []
        for s, tok in zip(seqs, tokens[:, 0].tolist()):
            s.tokens.append(tok)
            s.result.num_rounds += 1
            s.result.num_target_forwards += 1
            if s.check_finished(stop_ids):
                finished.append(s)
        return finished
