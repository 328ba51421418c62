"""Page allocation of the paged KV pool. Pure Python: the runner mirrors the page lists to the
device page table; target and draft pools share page ids (a sequence has the same length in
both)."""
from __future__ import annotations


class BlockManager:
    def __init__(self, num_pages: int, page_size: int):
        if num_pages < 1 or page_size < 1:
            raise ValueError(f"a KV pool needs >= 1 page of >= 1 token, got {num_pages} x {page_size}")
        self.num_pages, self.page_size = num_pages, page_size
        self.free_pages: list[int] = list(range(num_pages - 1, -1, -1))  # pop() hands out low ids first
        self.pages: dict[int, list[int]] = {}  # owner (a slot) -> its pages, in logical order

    @property
    def num_free_pages(self) -> int:
        return len(self.free_pages)

    @property
    def capacity_tokens(self) -> int:
        return self.num_pages * self.page_size

    def pages_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    def missing_pages(self, owner: int, num_tokens: int) -> int:
        """Pages ``owner`` still needs so that positions < num_tokens have a page."""
        return max(0, self.pages_for(num_tokens) - len(self.pages.get(owner, ())))

    def holds(self, owner: int, num_tokens: int) -> bool:
        """Whether ``owner``'s pages already cover positions < num_tokens (most steps: nothing to do)."""
        return num_tokens <= len(self.pages.get(owner, ())) * self.page_size

    def can_grow(self, owner: int, num_tokens: int) -> bool:
        return self.missing_pages(owner, num_tokens) <= self.num_free_pages

    def grow(self, owner: int, num_tokens: int) -> bool:
        """Give ``owner`` pages up to ``num_tokens``; returns whether its page list changed."""
        need = self.missing_pages(owner, num_tokens)
        if need > self.num_free_pages:
            raise MemoryError(f"KV pool exhausted: {need} pages needed, {self.num_free_pages} free")
        owned = self.pages.setdefault(owner, [])
        if need:
            owned.extend(self.free_pages.pop() for _ in range(need))
        return need > 0

    def free(self, owner: int) -> None:
        self.free_pages.extend(reversed(self.pages.pop(owner, [])))

    @property
    def num_used_pages(self) -> int:
        return self.num_pages - len(self.free_pages)
