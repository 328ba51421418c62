"""A whole greedy SimSD round as one CUDA graph: draft steps, verify, acceptance.

With a small draft and target every forward of a round costs less than the host work of
launching it, so a round built from separate forwards (a draft commit, the draft's steps, the
verify, a target commit, then the acceptance's small kernels) is bound by the host. Here one
replay per batch bucket runs all of it:

1. the draft's first denoising step, with the draft's finished block (if one is queued for the
   row) folded in front so its K/V are stored by the same forward;
2. the draft's remaining steps (one reveal each, or ``step_quota`` with ``--denoising-steps``);
3. one target forward over the verify layout (exact copies or the paper's layout), with the
   target's queued block folded in front;
4. greedy acceptance in position order and the new block state.

The host copies a row-packed int tensor in (slots, starts, which rows have a queued block) and
reads the new blocks and accepted counts out: one copy each way per round. Padding rows of the
bucket have nothing masked, store nothing and read no cache. On CPU the same body runs eagerly,
which is how the path is tested without a GPU. Sampled rows (MRS), logit processing and logprobs
take the general path in ``SimSDDecoder``.
"""
from __future__ import annotations

import torch

from .decoding import layouts
from .decoding.acceptance import accept_greedy, apply_acceptance
from .decoding.remasking import reveal_positions, step_quota
from .graphs import StaticForward, batch_bucket, capture
from .runner import ModelRunner

# Columns of the packed host input, one row per batch row.
SLOT, START, TARGET_PENDING, DRAFT_PENDING, VALID = range(5)


def folded_forward(fwd: StaticForward, cache, queued: torch.Tensor, ids, pos, visible, prev, slots, valid,
                   pending) -> torch.Tensor:
    """One forward of ``ids[nb, q]`` (at ``pos``, under ``visible``) with each row's queued block
    (``queued[slot]``, at ``prev``) folded in front and stored where ``pending``; invalid rows
    read no cache. Fills ``fwd``'s buffers, so it is recordable. Returns the hidden states of
    ``ids`` only."""
    B = queued.shape[1]
    fwd.ids.copy_(torch.cat([queued[slots], ids], 1))
    fwd.positions.copy_(torch.cat([prev, pos], 1))
    fwd.visible.copy_(layouts.fold_prefix(visible, pending, B))
    fwd.write.copy_(torch.cat([pending[:, None].expand(-1, B), torch.zeros_like(ids, dtype=torch.bool)], 1))
    fwd.lens.copy_(cache.lengths[slots] * valid)
    fwd.page_rows.copy_(cache.page_table[slots])
    return fwd.body()[:, B:]


def pack_rows(rows: list[list[int]], nb: int, width: int, device) -> torch.Tensor:
    """Host rows [b][width - 1] -> [width, nb] long (pinned on CUDA): the columns, then VALID."""
    packed = torch.zeros(width, nb, dtype=torch.long)
    if rows:
        packed[:width - 1, :len(rows)] = torch.tensor(rows, dtype=torch.long).T
    packed[width - 1, :len(rows)] = 1
    return packed.pin_memory() if torch.device(device).type == "cuda" else packed


class Replayable:
    """A graphed body over fixed buffers: ``packed`` (host input) in, ``out`` back."""

    packed: torch.Tensor
    out: torch.Tensor
    graph = None

    def body(self, *args) -> None:
        raise NotImplementedError

    def run(self, packed: torch.Tensor, args) -> torch.Tensor:
        """Copy the host input in, replay the graph (or run the body eagerly), return ``out``."""
        self.packed.copy_(packed, non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.body(*args)
        return self.out


class _Round(Replayable):
    """Buffers and graph of one (bucket, draft steps, cache spans)."""

    def __init__(self, target: ModelRunner, draft: ModelRunner, nb: int, block: int, k: int, rule: str,
                 steps: int | None, verify: str, spans: tuple[int, int]):
        B, dev = block, target.device
        self.target, self.draft, self.nb, self.B, self.k = target, draft, nb, B, k
        self.rule, self.num_steps, self.verify = rule, steps, verify
        q_verify = B * B if verify == "exact" else 2 * B
        self.tf = StaticForward(target, nb, B + q_verify, spans[0])
        self.df1 = StaticForward(draft, nb, 2 * B, spans[1])
        self.df = None
        if k > 1:  # later draft steps: the block alone, nothing stored
            self.df = StaticForward(draft, nb, B, spans[1])
            self.df.visible.fill_(True)
        self.packed = torch.zeros(5, nb, dtype=torch.long, device=dev)  # host input (see SLOT...)
        self.out = torch.zeros(nb, 2 * B + 2, dtype=torch.long, device=dev)  # tokens | masked | acc | bonus
        self.arange = torch.arange(B, device=dev)
        self.never_t = torch.tensor([target.config.mask_token_id], device=dev)
        mask = draft.config.mask_token_id
        self.never_d = None if mask is None else torch.tensor([mask], device=dev)
        self.graph = None

    # -- the round (what the graph records) -------------------------------------------------

    def body(self, state_tokens, state_masked, t_queue, d_queue) -> None:
        B, nb = self.B, self.nb
        p = self.packed
        slots, valid = p[SLOT], p[VALID].bool()
        ids, masked = state_tokens[slots], state_masked[slots] & valid[:, None]
        pos = p[START][:, None] + self.arange
        prev = pos - B  # the queued block sits just before the current one
        d_pend, t_pend = p[DRAFT_PENDING].bool() & valid, p[TARGET_PENDING].bool() & valid
        drafts, steps, left = self._draft(ids, masked, pos, prev, slots, valid, d_pend, d_queue)
        if self.verify == "exact":
            ids_v, vis, pos_v = layouts.exact_copies(drafts, self.target.config.mask_token_id), \
                layouts.exact_verify(nb, B, ids.device), pos.repeat(1, B)
        else:
            ids_v, vis, pos_v = torch.cat([drafts, torch.full_like(drafts, self.target.config.mask_token_id)], 1), \
                layouts.paper_verify(steps), pos.repeat(1, 2)
        h = folded_forward(self.tf, self.target.cache, t_queue.tokens, ids_v, pos_v, vis, prev, slots, valid, t_pend)
        h = h.view(nb, B, B, -1)[:, self.arange, self.arange] if self.verify == "exact" else h[:, B:]
        logits = self.target.logits(h).index_fill(-1, self.never_t, float("-inf"))
        num_acc, bonus, has_bonus = accept_greedy(drafts, logits.argmax(-1), masked)
        tokens, new_masked = apply_acceptance(ids, masked, drafts, num_acc, bonus, has_bonus)
        self.out.copy_(torch.cat([tokens, new_masked.long(), num_acc[:, None], has_bonus[:, None].long()], 1))

    def _draft(self, ids, masked, pos, prev, slots, valid, d_pend, d_queue):
        """k denoising steps of the draft; the first folds the draft's queued block in."""
        steps = torch.zeros_like(ids)
        h = folded_forward(self.df1, self.draft.cache, d_queue.tokens, ids, pos,
                           layouts.full_block(self.nb, self.B, ids.device), prev, slots, valid, d_pend)
        drafts, steps, left = self._reveal(h, ids, steps, masked, 0)
        if self.df is not None:
            fwd = self.df
            fwd.positions.copy_(pos)
            fwd.page_rows.copy_(self.df1.page_rows)
            fwd.lens.copy_(self.df1.lens + self.B * d_pend)  # the folded block is in the cache now
            for i in range(1, self.k):
                fwd.ids.copy_(drafts)
                drafts, steps, left = self._reveal(fwd.body(), drafts, steps, left, i)
        return drafts, steps, left

    def _reveal(self, h, tokens, steps, masked, i: int):
        logits = self.draft.logits(h)
        if self.never_d is not None:  # as the eager draft: the mask token is never proposed
            logits = logits.index_fill(-1, self.never_d, float("-inf"))
        confidence, chosen = torch.softmax(logits.float(), -1).max(-1)
        quota = None if self.num_steps is None else step_quota(masked.sum(-1), self.num_steps, i)
        reveal = reveal_positions(confidence, masked, self.rule, quota=quota)
        return (torch.where(reveal, chosen, tokens), torch.where(reveal, i + 1, steps), masked & ~reveal)

    # -- capture and replay -------------------------------------------------------------------

    def capture(self, args) -> None:
        # Nothing valid, nothing masked, nothing written: the warm-up changes no state that matters.
        self.packed.zero_()
        self.graph, _ = capture(self.body, args, self.target.static.pool)


class RoundGraphs:
    """The round graphs of one target/draft pair, per (bucket, draft steps, spans)."""

    def __init__(self, target: ModelRunner, draft: ModelRunner, block: int, rule: str, verify: str):
        self.target, self.draft, self.block, self.rule, self.verify = target, draft, block, rule, verify
        self.caches = (target.cache, draft.cache)
        self.rounds: dict[tuple, _Round] = {}

    def is_stale(self) -> bool:
        """The pools were reallocated (the graphs point at the old ones)."""
        return self.caches != (self.target.cache, self.draft.cache)

    def run(self, rows: list[list[int]], k: int, steps: int | None, max_start: int, args) -> torch.Tensor:
        """rows: per batch row [slot, start, target pending, draft pending]; returns ``out[:b]``
        ([b, 2B + 2]: new block tokens, new masked flags, accepted count, has bonus)."""
        b = len(rows)
        nb = batch_bucket(b)
        spans = (self.target.static.span(max_start), self.draft.static.span(max_start))
        key = (nb, k, steps, spans)
        if key not in self.rounds:
            rnd = _Round(self.target, self.draft, nb, self.block, k, self.rule, steps, self.verify, spans)
            if self.target.cuda_graphs:
                rnd.capture(args)
            self.rounds[key] = rnd
        return self.rounds[key].run(pack_rows(rows, nb, 5, self.target.device), args)[:b]
