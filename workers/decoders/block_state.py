"""Per-slot state of the block being decoded, shared by the block-diffusion decoders."""
from __future__ import annotations

import torch

from ..decoding.sequence import Sequence
from ..decoding.host import HostCopy, to_device
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
            s.start = s.aligned_prompt_len(self.block)
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
        for s, block in zip(seqs, blocks):
            s.tokens.extend(block[len(s.tokens) - s.start:])
        self.reopen(seqs)

    def reopen(self, seqs: list[Sequence]) -> None:
        """Open each sequence's next block, all masked (its current one is full)."""
        if not seqs:
            return
        slots = to_device([s.slot for s in seqs], self.device)
        for s in seqs:
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


class ClosedBlocks:
    """Blocks closed on the device whose tokens are still on their way to the host.

    With a known number of reveals a step (every rule but ``dynamic``), the host knows which
    blocks are full without reading them, so it can open the next blocks, queue the commits and
    queue the next step before it reads the closed tokens and applies the stop rules. The GPU
    then never waits for that host work at a block boundary. A row the stop rules end had one
    step too many queued: its tokens are never read and its slot is reset when reused. A row
    whose block reached its ``max_new`` is ``final``: it finishes for sure, opens no next block
    and takes no more steps.
    """

    def __init__(self, seqs: list[Sequence], final: list[bool], blocks: torch.Tensor):
        # Per row: the sequence, its block's start, its row in ``blocks``.
        self.rows = [(s, s.start, i) for i, s in enumerate(seqs)]
        self.final = {id(s) for s, f in zip(seqs, final) if f}
        self.host = HostCopy(blocks)

    def is_final(self, seq: Sequence) -> bool:
        return id(seq) in self.final

    def drop(self, seq: Sequence) -> None:
        """Forget a preempted row (it restarts from its prompt)."""
        self.rows = [r for r in self.rows if r[0] is not seq]
        self.final.discard(id(seq))

    def keep(self, seqs: list[Sequence]) -> None:
        """Forget rows not among ``seqs`` (the running rows): those of a run cut short."""
        running = {id(s) for s in seqs}
        self.rows = [r for r in self.rows if id(r[0]) in running]
        self.final &= running

    def resolve(self, stop_ids: tuple[int, ...]) -> list[Sequence]:
        """Append the closed blocks to their sequences; returns the sequences that finished."""
        if not self.rows:
            return []
        blocks = self.host.tolist()
        finished = []
        for s, start, i in self.rows:
            s.tokens.extend(blocks[i][len(s.tokens) - start:])
            if s.check_finished(stop_ids):
                finished.append(s)
        return finished


def close_known_blocks(state: BlockState, queues: list, seqs: list[Sequence]) -> ClosedBlocks:
    """``close_full_blocks`` for rows the host knows are full, without reading them now: the next
    blocks open and the commits are queued on the device; the tokens follow (``ClosedBlocks``)."""
    slots = to_device([s.slot for s in seqs], state.device)
    blocks = state.tokens[slots]  # a copy: the next block overwrites the state's rows
    final = [s.start + state.block - s.prompt_len >= s.max_new for s in seqs]
    closed = ClosedBlocks(seqs, final, blocks)
    going = [i for i, f in enumerate(final) if not f]
    state.reopen([seqs[i] for i in going])  # a final row needs no next block (nor its pages)
    if going:
        kept = blocks if len(going) == len(seqs) else blocks[to_device(going, state.device)]
        for queue in queues:
            queue.add([seqs[i] for i in going], kept, None)
    return closed
