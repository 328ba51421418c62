"""Per-slot state of the block being decoded, shared by the block-diffusion decoders."""
from __future__ import annotations

import torch

from ..runner import ModelRunner
from .sequence import Sequence


class BlockState:
    """Owns ``tokens[S, B]`` and ``masked[S, B]``: the current block of every slot, on the device.

    A revealed position never changes; ``masked`` is explicit because a model may well predict
    the mask token itself.
    """

    def __init__(self, num_slots: int, block: int, mask_id: int, device: torch.device):
        self.block, self.mask_id, self.device = block, mask_id, device
        self.tokens = torch.full((num_slots, block), mask_id, dtype=torch.long, device=device)
        self.masked = torch.ones(num_slots, block, dtype=torch.bool, device=device)

    def open(self, seqs: list[Sequence]) -> None:
        """Start each sequence's first block at floor(P/B)*B with the prompt tail revealed."""
        for s in seqs:
            s.start = (s.prompt_len // self.block) * self.block
            tail = s.tokens[s.start:]
            self.tokens[s.slot] = self.mask_id
            self.masked[s.slot] = True
            if tail:
                self.tokens[s.slot, :len(tail)] = torch.tensor(tail, device=self.device)
                self.masked[s.slot, :len(tail)] = False

    def revealed_prefix(self, seq: Sequence) -> list[int]:
        """Tokens of the block up to the first masked position (the block's decided part)."""
        row, masked = self.tokens[seq.slot].tolist(), self.masked[seq.slot].tolist()
        n = masked.index(True) if True in masked else self.block
        return row[len(seq.tokens) - seq.start:n]

    def advance(self, seqs: list[Sequence]) -> None:
        """Append each (full) block to its sequence and open the next, all masked."""
        for s in seqs:
            s.tokens.extend(self.tokens[s.slot, len(s.tokens) - s.start:].tolist())
            s.start += self.block
            self.tokens[s.slot] = self.mask_id
            self.masked[s.slot] = True


def commit_full_blocks(state: BlockState, runners: list[ModelRunner], seqs: list[Sequence],
                       stop_ids: tuple[int, ...]) -> tuple[list[Sequence], list[Sequence]]:
    """Commit every full block to the given caches (one forward each) and advance.

    Returns (sequences whose block was committed, those of them that finished).
    """
    full = [s for s in seqs if not bool(state.masked[s.slot].any())]
    if not full:
        return [], []
    slots = torch.tensor([s.slot for s in full], device=state.device)
    starts = torch.tensor([s.start for s in full], device=state.device)
    for runner in runners:
        runner.commit(slots, state.tokens[slots], starts)
    state.advance(full)
    return full, [s for s in full if s.check_finished(stop_ids)]
