"""Finished blocks waiting to enter a model's KV cache.

Every reference engine spends one extra forward per block to store its K/V. Here a finished
block is queued and, when folding is on, prepended to that model's next forward of the same
sequence: its K/V are written by the forward that also runs the next block's first step. The
prepended tokens see only the cache and themselves, so the stored K/V are exactly what a
separate commit forward would store. Folding adds B query tokens per row to that forward, which
is free while a forward is memory bound (small batches); at large batch a separate commit forward
is cheaper. A fixed-shape forward computes the prepended block for every row of its bucket, not
only the rows with a block queued, so ``fold="auto"`` decides per forward (``fold_pays``): fold
while computing B more tokens for every row costs less than a separate forward (reading the
weights once more, plus a launch); else the queued blocks are stored by a forward of their own.
"""
from __future__ import annotations

import torch

from ..runner import ModelRunner
from ..decoding import layouts
from ..decoding.sequence import Sequence
from ..decoding.host import to_device

FOLD_MAX_QUERY_TOKENS = 64  # without fixed shapes: fold while slots x block length stays at or below this
PEAK_FLOPS = 790e12         # H100/H200 dense bf16: what B more query tokens per row cost to compute
HBM_BYTES_PER_S = 3.0e12    # H100 copy bandwidth: what a separate forward costs to read the weights
LAUNCH_S = 50e-6            # a separate forward's launch and host work, at least
CATCH_UP_BLOCKS = 16        # most backlog blocks stored by one forward (padded to a power of two)


def fold_pays(config, rows: int, block: int, bytes_per_param: int = 2) -> bool:
    """Folding a block into a forward of ``rows`` rows costs less than a separate commit forward.

    Folded: 2 x params FLOPs for each of block x rows extra query tokens. Separate: the weights
    read once more and one more launch. SDAR 1.7B to 8B fold up to 64 rows (measured to pay at
    8-64 rows on an H100, docs/engine.md); a model of a few million parameters always folds (its
    forwards are launch-bound).
    """
    n = config.num_active_params
    return 2 * n * block * rows / PEAK_FLOPS <= n * bytes_per_param / HBM_BYTES_PER_S + LAUNCH_S


class CommitQueue:
    """lazy: without folding, finished blocks wait in the backlog until the model's next forward of
    the row instead of being stored at once (a draft may sit out several rounds: adaptive SimSD)."""

    def __init__(self, runner: ModelRunner, num_slots: int, block: int, fold: bool | str, counter: str,
                 lazy: bool = False):
        """fold: True (always fold), False (never), or "auto" (fold where ``fold_pays``)."""
        self.auto = fold == "auto"
        self.runner, self.block, self.fold, self.counter, self.lazy = runner, block, bool(fold), counter, lazy
        self.tokens = torch.zeros(num_slots, block, dtype=torch.long, device=runner.device)
        self.pending: set[int] = set()  # slots whose previous block is not in the cache yet
        self.queued: dict[int, list[int]] = {}  # slot -> the pending block's tokens (host copy)
        # Slot -> older finished blocks (host lists), oldest first, queued while this model ran no
        # forward for the row (a draft during target-only rounds); stored together by ``catch_up``.
        self.backlog: dict[int, list[list[int]]] = {}

    def add(self, seqs: list[Sequence], blocks: torch.Tensor, host_blocks: list[list[int]] | None) -> None:
        """Queue each sequence's just-finished block (``blocks[n, B]`` on the device, the same
        tokens as host lists in ``host_blocks``); seq.start is already past it. ``host_blocks``
        may be None (the tokens are not on the host yet) where no row can still have a block
        queued: a queue whose model runs a forward of every row every step (vanilla decoding)."""
        if not seqs:
            return
        if not self.fold and not self.lazy:
            self._store_now(seqs, blocks, [s.start - self.block for s in seqs])
            return
        if host_blocks is None:
            if self.lazy or any(s.slot in self.pending for s in seqs):
                raise RuntimeError("a queued block without its host tokens would go to the backlog")
            host_blocks = [None] * len(seqs)
        # A row whose previous block is still queued (its model ran no forward since) moves that
        # block to its backlog, stored before the row's next forward. The backlog is kept on the
        # host: queuing costs no device work, and a catch-up copies it over in one transfer.
        for s, block in zip(seqs, host_blocks):
            if s.slot in self.pending:
                self.backlog.setdefault(s.slot, []).append(self.queued[s.slot])
            if self.fold:
                self.queued[s.slot] = block
            else:
                self.backlog.setdefault(s.slot, []).append(block)
        if self.fold:
            self.tokens[to_device([s.slot for s in seqs], self.runner.device)] = blocks
            self.pending.update(s.slot for s in seqs)

    def _store_now(self, seqs: list[Sequence], blocks: torch.Tensor, starts: list[int]) -> None:
        """A forward of its own storing ``blocks[n, B]`` at ``starts``."""
        slots = to_device([s.slot for s in seqs], self.runner.device)
        self.runner.commit(slots, blocks, to_device(starts, self.runner.device), max(starts))
        for s in seqs:
            setattr(s.result, self.counter, getattr(s.result, self.counter) + 1)

    def folds(self, rows: int) -> bool:
        """Whether a forward of ``rows`` rows takes the queued blocks in."""
        return self.fold and (not self.auto or fold_pays(self.runner.config, self.runner.batch_rows(rows),
                                                         self.block, self.runner.dtype.itemsize))

    def ready(self, seqs: list[Sequence]) -> list[bool]:
        """Before a forward of ``seqs``: store any backlog, and the queued blocks too where this
        forward will not fold them; returns which rows still have a block to fold in."""
        self.catch_up(seqs)
        flags = [s.slot in self.pending for s in seqs]
        if any(flags) and not self.folds(len(seqs)):
            self.flush([s for s, f in zip(seqs, flags) if f])
            flags = [False] * len(seqs)
        return flags

    def flush(self, seqs: list[Sequence]) -> None:
        """Store the queued blocks of ``seqs`` by a forward of their own."""
        slots = to_device([s.slot for s in seqs], self.runner.device)
        self._store_now(seqs, self.tokens[slots], [s.start - self.block for s in seqs])
        self.pending.difference_update(s.slot for s in seqs)

    def stored(self, slots: list[int]) -> None:
        """The queued blocks of ``slots`` were stored by a graphed forward that folded them in."""
        if slots:
            self.runner.cache.lengths[to_device(slots, self.runner.device)] += self.block
            self.pending.difference_update(slots)

    def drop(self, seq: Sequence) -> None:
        """A finished sequence's last block never needs to enter the cache."""
        self.pending.discard(seq.slot)
        self.queued.pop(seq.slot, None)
        self.backlog.pop(seq.slot, None)

    def catch_up(self, seqs: list[Sequence]) -> None:
        """Store the backlog of ``seqs`` in as few forwards as possible: each forward stores up to
        CATCH_UP_BLOCKS consecutive blocks per row under the block-causal mask (exactly the K/V
        that one commit forward per block would store)."""
        rows = [s for s in seqs if self.backlog.get(s.slot)]
        while rows:
            self._store_backlog(rows)
            rows = [s for s in rows if self.backlog.get(s.slot)]

    def _store_backlog(self, rows: list[Sequence]) -> None:
        dev, B = self.runner.device, self.block
        counts = [min(len(self.backlog[s.slot]), CATCH_UP_BLOCKS) for s in rows]
        width = B * (1 << (max(counts) - 1).bit_length())  # few distinct shapes (CUDA graphs)
        # The oldest backlog block starts where the row's cache ends: before the other backlog
        # blocks and the pending one (if any), which sits just before the current block.
        starts = [s.start - B * (len(self.backlog[s.slot]) + (s.slot in self.pending)) for s in rows]
        host = []
        for s, k in zip(rows, counts):
            tokens = [t for block in self.backlog[s.slot][:k] for t in block]
            host.append(tokens + [0] * (width - len(tokens)))
            del self.backlog[s.slot][:k]
        ids = to_device(host, dev)
        lengths = to_device([k * B for k in counts], dev)
        first = to_device(starts, dev)
        positions = first[:, None] + torch.arange(width, device=dev)
        write = torch.arange(width, device=dev)[None] < lengths[:, None]
        slots = to_device([s.slot for s in rows], dev)
        self.runner.hidden(ids, positions, layouts.block_causal(lengths, width, B), slots, write,
                           cache_lens=first, max_cache_len=max(starts))
        self.runner.cache.lengths[slots] = first + lengths
        for s in rows:
            setattr(s.result, self.counter, getattr(s.result, self.counter) + 1)

    def hidden(self, seqs, ids, positions, visible, slots, write=None) -> torch.Tensor:
        """``runner.hidden`` for these rows, with any queued blocks folded in front."""
        flags = self.ready(seqs)
        bound = max(s.start for s in seqs)  # a block's cache never holds more than its start
        if not any(flags):
            return self.runner.hidden(ids, positions, visible, slots, write, max_cache_len=bound)
        dev, B = self.runner.device, self.block
        b, q = ids.shape
        pending = to_device(flags, dev)
        starts = to_device([s.start for s in seqs], dev)
        prev_pos = (starts - B)[:, None] + torch.arange(B, device=dev)
        new_write = torch.zeros(b, q, dtype=torch.bool, device=dev) if write is None else write
        h = self.runner.hidden(torch.cat([self.tokens[slots], ids], dim=1),
                               torch.cat([prev_pos, positions], dim=1),
                               layouts.fold_prefix(visible, pending, B), slots,
                               torch.cat([pending[:, None].expand(b, B), new_write], dim=1), max_cache_len=bound)
        self.runner.cache.lengths[slots] += B * pending
        self.pending.difference_update(s.slot for s, f in zip(seqs, flags) if f)
        return h[:, B:]
