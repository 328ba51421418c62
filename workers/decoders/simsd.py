"""SimSD: draft the block, verify with one target forward (paper) or per-step copies (exact),
accept in position order, commit full blocks to both caches."""
from __future__ import annotations

import logging
import time

import torch

from ..runner import ModelRunner
from ..decoding import layouts
from ..decoding.acceptance import accept_greedy, accept_mrs, apply_acceptance
from ..decoding.adaptive import TARGET, AdaptivePolicy, arm_steps
from ..graphs import CAPTURES
from ..round_graph import RoundGraphs
from ..step_graph import StepGraphs
from .block_state import BlockState, close_full_blocks
from .commits import CommitQueue
from .vanilla import denoise_step
from ..decoding.rng import STREAM_ACCEPT, STREAM_BONUS
from ..decoding.row_settings import StepRows, process_logits, record_logprobs
from ..decoding.sampling import suppress, target_distribution
from ..decoding.sequence import Sequence
from ..decoding.host import to_device


log = logging.getLogger(__name__)


class SimSDDecoder:
    """policy: an AdaptivePolicy deciding per round whether to draft or let the target decode
    alone (exact verification only: the target's step gives the same token), or None to always draft."""

    def __init__(self, target: ModelRunner, drafter, block: int, settings, num_slots: int, generator, timer,
                 fold: bool, policy: AdaptivePolicy | None = None):
        self.target, self.drafter, self.block, self.timer = target, drafter, block, timer
        self.policy = policy
        self._logged_mode = policy.arms[0] if policy is not None else None
        self.settings = settings  # randomness is per row (rng.py); ``generator`` is unused
        self.mask_id = target.config.mask_token_id
        self.state = BlockState(num_slots, block, self.mask_id, target.device)
        self.commits = CommitQueue(target, num_slots, block, fold, "num_target_forwards")
        self.queues = [self.commits] + drafter.make_queues(num_slots, fold)
        self.graphs: RoundGraphs | None = None  # whole greedy rounds as one replay (see _can_graph)
        self.step_graphs: StepGraphs | None = None

    def evict(self, seq: Sequence) -> None:
        """Forget a preempted row (its slot and pages are given to others)."""
        for queue in self.queues:
            queue.drop(seq)

    def admit(self, seqs: list[Sequence], stop_ids) -> None:
        slots = to_device([s.slot for s in seqs], self.target.device)
        self.target.prefill(slots, [s.aligned_prompt(self.block) for s in seqs], self.block)
        self.drafter.admit(seqs)
        for s in seqs:
            s.result.num_target_forwards += 1
            s.result.num_draft_forwards += 1
            for queue in self.queues:
                queue.drop(s)
        self.state.open(seqs)

    def step(self, seqs: list[Sequence], stop_ids) -> list[Sequence]:
        """One round for every sequence (drafted, or target-only when the policy says drafting does
        not pay); returns those that finished."""
        if self.policy is None or any(s.temperature > 0 for s in seqs):
            # A sampled row's draws must not depend on timing (its text is reproducible across
            # batches, workers and restarts): rounds with sampled rows always draft as configured.
            return self._draft_round(seqs, stop_ids)[0]
        arm = self.policy.choose()
        if arm != TARGET and getattr(self.drafter, "commits", None) is not None:
            # Blocks the draft missed while the target ran alone are stored before the clock
            # starts: that cost follows from the target-only rounds, not from this drafted one.
            self.drafter.commits.catch_up(seqs)
        captures, t0 = CAPTURES.count, time.perf_counter()
        if arm == TARGET:
            finished, tokens_per_row = self._target_round(seqs, stop_ids)
        else:
            finished, tokens_per_row = self._draft_round(seqs, stop_ids, arm_steps(arm))
        if CAPTURES.count == captures:
            # A round that captured a CUDA graph (a new bucket or cache span) is not timed: its
            # one-off cost would make the arm look slow (on an H100 a two-step draft arm measured
            # 44 ms a round against 1.5 ms) and the rule would rarely try it again.
            self.policy.record(arm, time.perf_counter() - t0, tokens_per_row)
        if self.policy.current != self._logged_mode:
            self._logged_mode = self.policy.current
            log.info("adaptive SimSD: %s rounds now (%s)", self._logged_mode,
                     ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in self.policy.report().items()))
        return finished

    def _target_round(self, seqs: list[Sequence], stop_ids):
        """One target forward over the current blocks; the leftmost masked position of each row is
        revealed with the target's choice. In exact mode this is the token a SimSD round yields
        there whatever the draft proposes (verify copy k at the first masked position k)."""
        slots = to_device([s.slot for s in seqs], self.target.device)
        with self.timer("verify"):
            new_tokens = denoise_step(self.target, self.commits, self.state, seqs, slots, stop_ids, "sequential",
                                      graphs=self._step_graphs())
        # The round's one device->host copy; per row: no draft accepted, one target token.
        rows = [block + [0, 1] for block in new_tokens.tolist()]
        return self._close(seqs, slots, stop_ids, self._count(seqs, rows, drafted=False)), 1.0

    def _draft_round(self, seqs: list[Sequence], stop_ids, denoising_steps: int | None = None):
        """One speculative round: draft (in ``denoising_steps`` steps per block when given, else the
        configured ones), verify, accept in position order."""
        dev, B = self.target.device, self.block
        use_mrs = any(self.settings.acceptance_rule(s.temperature) == "mrs" for s in seqs)
        rows = StepRows(seqs, dev, use_mrs)  # only sampling (MRS) reads temperatures and uniforms
        if self._can_graph(rows):
            return self._graph_round(seqs, stop_ids, rows, denoising_steps)
        slots = to_device([s.slot for s in seqs], dev)
        starts = to_device([s.start for s in seqs], dev)
        ids, masked = self.state.tokens[slots], self.state.masked[slots]
        with self.timer("draft"):
            drafts, steps, p = self.drafter.draft(seqs, slots, ids, masked, starts, rows, use_mrs, denoising_steps)
        with self.timer("verify"):
            logits = self.verify(seqs, slots, starts, drafts, steps)  # [b, B, V] target logits per position
            if rows.process:
                logits = process_logits(logits, seqs, [s.start - s.prompt_len for s in seqs], stop_ids)
            logits = suppress(logits, (self.mask_id,))  # the mask token is never emitted
            num_acc, bonus, has_bonus = self._accept(rows, drafts, logits, p, masked, use_mrs)
        new_tokens, new_masked = apply_acceptance(ids, masked, drafts, num_acc, bonus, has_bonus)
        record_logprobs(rows, logits, new_tokens, masked & ~new_masked, [s.start for s in seqs], ())
        rows.advance()
        self.state.tokens[slots], self.state.masked[slots] = new_tokens, new_masked
        # The round's one device->host copy: the blocks and the accepted counts.
        rows = torch.cat([new_tokens, num_acc[:, None], has_bonus[:, None].long()], dim=1).tolist()
        blocks = self._count(seqs, rows)
        self.drafter.after_round(seqs, slots, to_device([s.start + B - s.masked_left for s in seqs], dev))
        tokens_per_row = sum(r[B] + r[B + 1] for r in rows) / len(rows)
        return self._close(seqs, slots, stop_ids, blocks), tokens_per_row

    def _step_graphs(self) -> StepGraphs | None:
        """Target-only rounds as one replay (the graph a vanilla sequential step uses)."""
        self.step_graphs = StepGraphs.current(self.step_graphs, self.target, self.block, "sequential", 0.9, None)
        return self.step_graphs

    def _can_graph(self, rows: StepRows) -> bool:
        """A whole round fits one replay: fixed shapes, an SDAR draft revealing a known count per
        step, greedy rows without logit processing or logprobs, and both models folding commits."""
        drafter = self.drafter
        return (self.target.static_shapes and getattr(drafter, "commits", None) is not None
                and drafter.runner.static_shapes and self.commits.folds(len(rows.seqs))
                and drafter.commits.folds(len(rows.seqs))
                and self.settings.draft_remasking != "dynamic" and not rows.sample and not rows.process
                and rows.num_top is None)

    def _graph_round(self, seqs: list[Sequence], stop_ids, step_rows: StepRows, denoising_steps: int | None):
        """``_draft_round`` as one replay of a RoundGraph (same tokens, same counters)."""
        B, dq = self.block, self.drafter.commits
        # Older blocks a model missed (adaptive rounds) are stored first; _can_graph checked that
        # both models fold the queued ones.
        pending = list(zip(self.commits.ready(seqs), dq.ready(seqs)))
        S, k = self.drafter.count_steps(seqs, denoising_steps)
        if self.graphs is None or self.graphs.is_stale():
            self.graphs = RoundGraphs(self.target, self.drafter.runner, B, self.settings.draft_remasking,
                                      self.settings.verify)
        packed = [[s.slot, s.start, t, d] for s, (t, d) in zip(seqs, pending)]
        with self.timer("round"):
            out = self.graphs.run(packed, k, S, max(s.start for s in seqs),
                                  (self.state.tokens, self.state.masked, self.commits, dq))
            slots = to_device([s.slot for s in seqs], self.target.device)
            self.state.tokens[slots], self.state.masked[slots] = out[:, :B], out[:, B:2 * B].bool()
            for queue, col in ((self.commits, 2), (dq, 3)):  # the folded blocks are in the caches now
                queue.stored([row[0] for row in packed if row[col]])
            # The round's one device->host copy: the blocks and the accepted counts.
            rows = torch.cat([out[:, :B], out[:, 2 * B:]], dim=1).tolist()
        step_rows.advance()
        blocks = self._count(seqs, rows)
        tokens_per_row = sum(r[B] + r[B + 1] for r in rows) / len(rows)
        return self._close(seqs, slots, stop_ids, blocks), tokens_per_row

    def _close(self, seqs, slots, stop_ids, blocks) -> list[Sequence]:
        """Commit full blocks, end rows at a stop; returns the finished rows."""
        B = self.block
        with self.timer("commit"):
            closed, finished = close_full_blocks(self.state, self.queues, seqs, stop_ids, blocks)
        # A stop committed inside a block ends the sequence now; the rest of the block is not needed.
        done = set(id(s) for s in closed)
        for s, block in zip(seqs, blocks):
            if id(s) not in done and s.check_finished(stop_ids, block[len(s.tokens) - s.start:B - s.masked_left]):
                finished.append(s)
        for s in finished:
            for queue in self.queues:
                queue.drop(s)
        return finished

    def _accept(self, rows: StepRows, drafts, logits, p, masked, use_mrs):
        B = self.block
        if use_mrs:
            per_position = [v.repeat_interleave(B) if isinstance(v, torch.Tensor) else v
                            for v in (rows.temps, rows.top_k, rows.top_p)]
            q = target_distribution(logits.reshape(-1, logits.shape[-1]).float(), *per_position).view_as(logits)
            return accept_mrs(drafts, q, p, masked, rows.uniforms(STREAM_ACCEPT, B),
                              rows.uniforms(STREAM_BONUS, 1)[:, 0])
        return accept_greedy(drafts, logits.argmax(-1), masked)

    def verify(self, seqs, slots, starts, drafts, steps) -> torch.Tensor:
        b, B, dev = drafts.shape[0], self.block, self.target.device
        positions = starts[:, None] + torch.arange(B, device=dev)
        if self.settings.verify == "paper":
            # [leftover | D_1..D_n | M_1..M_n], M_i at D_i's RoPE position; read the target at M_i.
            ids = torch.cat([drafts, torch.full_like(drafts, self.mask_id)], dim=1)
            h = self.commits.hidden(seqs, ids, positions.repeat(1, 2), layouts.paper_verify(steps), slots)
            return self.target.logits(h[:, B:])
        # Exact: copy k = [block positions < k revealed, >= k masked]; read position k of copy k.
        ids = layouts.exact_copies(drafts, self.mask_id)
        h = self.commits.hidden(seqs, ids, positions.repeat(1, B), layouts.exact_verify(b, B, dev), slots)
        diag = torch.arange(B, device=dev)
        return self.target.logits(h.view(b, B, B, -1)[:, diag, diag])

    def _count(self, seqs, rows, drafted: bool = True) -> list[list[int]]:
        """Update statistics and the host's masked counts from the copied rows; return the blocks."""
        B = self.block
        for s, row in zip(seqs, rows):
            accepted, bonus = row[B], row[B + 1]
            r = s.result
            r.num_rounds += 1
            r.num_target_forwards += 1
            if drafted:
                r.num_drafted_tokens += s.masked_left
            else:
                r.num_undrafted_rounds += 1
            r.num_accepted_tokens += accepted
            s.masked_left -= accepted + bonus
        return [row[:B] for row in rows]

