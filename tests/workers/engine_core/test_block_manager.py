"""Page accounting of the paged KV pool's block manager."""
import pytest

from workers.engine_core import BlockManager


def test_grow_and_free_account_for_every_page():
    bm = BlockManager(num_pages=8, page_size=4)
    assert bm.capacity_tokens == 32 and bm.num_free_pages == 8
    assert not bm.holds(0, 1) and bm.holds(0, 0)               # an owner without pages holds nothing
    assert bm.grow(0, 9) and bm.pages[0] == [0, 1, 2]          # 9 tokens -> 3 pages, low ids first
    assert bm.holds(0, 12) and not bm.holds(0, 13)             # 3 pages of 4 tokens: positions < 12
    assert not bm.grow(0, 12)                                  # still 3 pages: nothing changes
    assert bm.grow(1, 1) and bm.num_used_pages == 4
    bm.grow(0, 13)
    assert len(bm.pages[0]) == 4 and bm.num_free_pages == 3
    owned = set(bm.pages[0]) | set(bm.pages[1])
    assert len(owned) == 5 and owned.isdisjoint(bm.free_pages)  # no page is both owned and free
    bm.free(0)
    assert bm.num_free_pages == 7 and 0 not in bm.pages
    bm.free(0)  # freeing twice is harmless
    assert bm.num_free_pages == 7


def test_exhaustion_is_refused_without_side_effects():
    bm = BlockManager(num_pages=2, page_size=4)
    assert not bm.can_grow(0, 9)
    with pytest.raises(MemoryError, match="KV pool exhausted"):
        bm.grow(0, 9)
    assert bm.num_free_pages == 2 and bm.pages.get(0, []) == []


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        BlockManager(0, 16)
