"""Admission and preemption of sequences over a fixed number of slots and KV pages. Pure Python.

A sequence needs pages for every position it may write before its next step: its current
block's start plus a margin (``headroom`` tokens: the block being decoded and one being
committed). Rows are admitted while a slot and their pages are free. When a running row needs a
page and none is free, the most recently admitted row is preempted: its pages are freed and it
goes back to the front of the queue, to be recomputed from its prompt later. Decoding is a
deterministic function of the row (greedy, or sampling keyed by the row), so recompute gives
the same output; no row is lost or duplicated.

Admission is batched: while rows are running, waiting rows are admitted only once ``min_admit``
slots are free (or every waiting row fits). Each admission costs a prefill forward whose price
is mostly fixed (launches and host work, not tokens) at decode-sized batches, so admitting
eight rows at once costs about what admitting one does; the slots left idle meanwhile are few.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Generic, TypeVar

from .block_manager import BlockManager

T = TypeVar("T")


class Scheduler(Generic[T]):
    def __init__(self, blocks: BlockManager, num_slots: int, need: Callable[[T], int], min_admit: int = 1):
        """need(item) -> tokens the item must have pages for before its next step; min_admit:
        free slots an admission waits for while rows are running (see the module docstring)."""
        self.blocks, self.need, self.min_admit = blocks, need, max(1, min_admit)
        self.free_slots = list(range(num_slots - 1, -1, -1))
        self.waiting: deque[T] = deque()
        self.running: list[T] = []          # in admission order
        self.slot_of: dict[int, int] = {}   # id(item) -> slot
        self.num_preemptions = 0

    def add(self, item: T) -> None:
        self.waiting.append(item)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def slot(self, item: T) -> int:
        return self.slot_of[id(item)]

    def admit(self) -> list[T]:
        """Move waiting items to running while a slot and their pages are free (FIFO, no skipping),
        once min_admit slots are free or every waiting item fits (at once when nothing runs)."""
        admitted = []
        if self.running and len(self.free_slots) < min(self.min_admit, len(self.waiting)):
            return admitted
        while self.waiting and self.free_slots:
            item = self.waiting[0]
            slot = self.free_slots[-1]
            if not self.blocks.can_grow(slot, self.need(item)):
                break
            self.waiting.popleft()
            self.free_slots.pop()
            self.blocks.grow(slot, self.need(item))
            self.slot_of[id(item)] = slot
            self.running.append(item)
            admitted.append(item)
        return admitted

    def reserve(self) -> tuple[list[T], list[T]]:
        """Give every running item the pages its next step needs, preempting the most recently
        admitted items when pages run out. Returns (items whose page lists grew, preempted items).
        """
        grown, preempted = [], []
        for item in list(self.running):
            if not self.is_running(item):
                continue  # preempted while serving an earlier item
            slot, need = self.slot(item), self.need(item)
            if self.blocks.holds(slot, need):
                continue  # its pages already reach its next step (most steps of most rows)
            while not self.blocks.can_grow(slot, need):
                victim = self.running[-1]
                self._preempt(victim)
                preempted.append(victim)
                if victim is item:
                    break
            if self.is_running(item) and self.blocks.grow(slot, need):
                grown.append(item)
        return [g for g in grown if self.is_running(g)], preempted

    def is_running(self, item: T) -> bool:
        return id(item) in self.slot_of

    def _preempt(self, item: T) -> None:
        self._remove(item)
        self.release(item)
        self.waiting.appendleft(item)
        self.num_preemptions += 1

    def finish(self, item: T) -> None:
        self._remove(item)
        self.release(item)

    def _remove(self, item: T) -> None:
        self.running = [x for x in self.running if x is not item]

    def release(self, item: T) -> None:
        slot = self.slot_of.pop(id(item))
        self.blocks.free(slot)
        self.free_slots.append(slot)

    def pages(self, item: T) -> list[int]:
        return self.blocks.pages[self.slot(item)]
