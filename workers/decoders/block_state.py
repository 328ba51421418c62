"""Per-slot state of the block being decoded, shared by the block-diffusion decoders."""
from __future__ import annotations

import torch

from ..decoding.sequence import Sequence
from ..decoding.host import to_device
from ..decoding.remasking import step_quota


class BlockState:
    """Owns ``tokens[S, B]`` and ``masked[S, B]``: the current block of every slot, on the device.

    A revealed position never changes; ``masked`` is explicit because a model may well predict
    the mask token itself. ``steps_taken[slot]`` (host) counts the denoising steps the slot's
    current block has had: the step counter k of ``--denoising-steps`` (0 whenever a block opens).
    """

    def __init__(self, num_slots: int, block: int, mask_id: int, device: torch.device):
        self.block, self.mask_id, self.device = block, mask_id, device
        self.tokens = torch.full((num_slots, block), mask_id, dtype=torch.long, device=device)
        self.masked = torch.ones(num_slots, block, dtype=torch.bool, device=device)
        self.steps_taken = [0] * num_slots

    def open(self, seqs: list[Sequence]) -> None:
        """Start each sequence's first block at floor(P/B)*B with the prompt tail revealed."""
        for s in seqs:
            s.start = len(s.aligned_prompt(self.block))
            tail = s.tokens[s.start:]
            s.masked_left = self.block - len(tail)
            self.steps_taken[s.slot] = 0
            self.tokens[s.slot] = self.mask_id
            self.masked[s.slot] = True
            if tail:
                self.tokens[s.slot, :len(tail)] = to_device(tail, self.device)
                self.masked[s.slot, :len(tail)] = False

    def quota(self, seqs: list[Sequence], masked: torch.Tensor, steps: int) -> torch.Tensor:
        """Per row [b]: tokens this step reveals with ``steps`` steps per block (``step_quota``),
        from the rows' masked positions ``masked[b, B]`` and their blocks' step counters."""
        k = to_device([self.steps_taken[s.slot] for s in seqs], self.device)
        return step_quota(masked.sum(-1), steps, k)

    def count_step(self, seqs: list[Sequence]) -> None:
        """One more denoising step for each row's current block."""
        for s in seqs:
            self.steps_taken[s.slot] += 1

    def read(self, slots: torch.Tensor) -> list[tuple[list[int], int]]:
        """Per row: the block's tokens and how many leading positions are revealed.

        One device->host copy for the whole batch (each copy is a synchronisation on a GPU).
        """
        B = self.block
        masked = self.masked[slots]
        first_masked = torch.where(masked.any(-1), masked.int().argmax(-1), B)
        rows = torch.cat([self.tokens[slots], first_masked[:, None]], dim=1).tolist()
        return [(row[:B], row[B]) for row in rows]

    def advance(self, seqs: list[Sequence], blocks: list[list[int]]) -> None:
        """Append each (full) block to its sequence and open the next, all masked."""
        slots = to_device([s.slot for s in seqs], self.device)
        for s, block in zip(seqs, blocks):
            s.tokens.extend(block[len(s.tokens) - s.start:])
            s.start += self.block
            s.masked_left = self.block
            self.steps_taken[s.slot] = 0
        self.tokens[slots] = self.mask_id
        self.masked[slots] = True


def close_full_blocks(state: BlockState, queues: list, seqs: list[Sequence], stop_ids: tuple[int, ...],
                      blocks: list[list[int]] | None = None) -> tuple[list[Sequence], list[Sequence]]:
    """Append every full block to its sequence and queue it for each model's cache.

    ``blocks``: the rows' block tokens when the caller has already copied them to the host (then
    ``seq.masked_left`` says which are full). Returns (sequences whose block closed, those of
    them that finished). A finished sequence's last block is never committed: nothing reads it.
    """
    if blocks is None:
        rows = state.read(to_device([s.slot for s in seqs], state.device))
    else:
        rows = [(block, state.block - s.masked_left) for s, block in zip(seqs, blocks)]
    full = [(s, block) for s, (block, n) in zip(seqs, rows) if n == state.block]
    if not full:
        return [], []
    closed = [s for s, _ in full]
    blocks = state.tokens[to_device([s.slot for s in closed], state.device)].clone()
    state.advance(closed, [block for _, block in full])
    finished = [s for s in closed if s.check_finished(stop_ids)]
    done = {id(s) for s in finished}
    going = [i for i, s in enumerate(closed) if id(s) not in done]
    for queue in queues:
        queue.add([closed[i] for i in going], blocks[going], [full[i][1] for i in going])
    return closed, finished
