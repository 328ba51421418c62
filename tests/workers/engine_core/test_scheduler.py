"""Admission and preemption of the pure-Python scheduler."""
from dataclasses import dataclass

from workers.engine_core import BlockManager, Scheduler


@dataclass(eq=False)
class Item:
    name: str
    need: int


def make(num_pages=4, page=4, slots=3):
    return Scheduler(BlockManager(num_pages, page), slots, lambda it: it.need)


def test_admits_while_slots_and_pages_are_free_in_order():
    s = make(num_pages=4, slots=3)
    items = [Item("a", 8), Item("b", 4), Item("c", 8), Item("d", 1)]
    for it in items:
        s.add(it)
    assert [it.name for it in s.admit()] == ["a", "b"]   # c needs 2 pages, 1 left: FIFO stops there
    assert [it.name for it in s.waiting] == ["c", "d"]
    s.finish(items[0])
    assert [it.name for it in s.admit()] == ["c", "d"]
    assert s.blocks.num_free_pages == 0


def test_growth_preempts_the_most_recent_row_and_requeues_it_first():
    s = make(num_pages=4, slots=3)
    a, b, c = Item("a", 4), Item("b", 4), Item("c", 8)
    for it in (a, b, c):
        s.add(it)
    s.admit()
    assert [it.name for it in s.running] == ["a", "b", "c"]
    a.need = 8  # a's next step needs a second page; none is free
    grown, preempted = s.reserve()
    assert [it.name for it in preempted] == ["c"] and grown == [a]
    assert [it.name for it in s.running] == ["a", "b"] and s.waiting[0] is c
    assert s.num_preemptions == 1
    assert len(s.pages(a)) == 2 and s.blocks.num_free_pages == 1


def test_a_row_that_cannot_grow_preempts_itself_last():
    s = make(num_pages=2, slots=2)
    a = Item("a", 8)
    s.add(a)
    s.admit()
    a.need = 12
    grown, preempted = s.reserve()
    assert preempted == [a] and grown == [] and not s.running and s.waiting[0] is a
    assert s.blocks.num_free_pages == 2 and s.free_slots == [1, 0]


def test_admissions_are_batched_while_rows_run():
    s = Scheduler(BlockManager(64, 4), 8, lambda it: it.need, min_admit=4)
    items = [Item(str(i), 4) for i in range(14)]
    for it in items:
        s.add(it)
    assert len(s.admit()) == 8                      # nothing runs: admit at once
    for it in items[:3]:
        s.finish(it)
    assert s.admit() == [] and len(s.waiting) == 6  # 3 free < 4: wait for one prefill of 4
    s.finish(items[3])
    assert [it.name for it in s.admit()] == ["8", "9", "10", "11"]
    s.finish(items[4])
    assert s.admit() == []                          # 1 free, 2 waiting
    s.finish(items[5])
    assert [it.name for it in s.admit()] == ["12", "13"]  # every waiting row fits: no wait
    from workers.engine import admission_batch
    assert [admission_batch(b) for b in (1, 4, 16, 64, 256)] == [1, 1, 2, 8, 32]
