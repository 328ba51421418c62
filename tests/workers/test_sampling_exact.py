"""Oracle 6 by exact enumeration (float64): SimSD exact verification + MRS leaves the target's
sequential distribution unchanged for the draft modes the engine accepts (SDAR draft revealing
left to right, AR draft), and is biased for the ones it refuses (static / dynamic SDAR drafts).

The world: a block of n positions over a 4-token vocabulary whose last id is the mask token.
Target and draft are tables of random logits keyed by (position, visible block state), so a
position's prediction depends on every revealed position, right ones included, as in a
diffusion model. Distributions come from the engine's pure functions (suppress, target_distribution,
reveal_positions); acceptance is the engine's ``accept_mrs`` evaluated once per cell of a
partition of its uniforms on which it is constant, each cell weighted by its exact probability.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import pytest
import torch

from workers.decoding.acceptance import accept_mrs, mrs_refusal
from workers.decoding.remasking import reveal_positions
from workers.decoding.sampling import suppress, target_distribution

V, MASK = 4, 3
NEVER = (MASK,)


class Table:
    """Random logits per (position, state); state: tuple of token ids or None (masked)."""

    def __init__(self, seed: int, ar: bool = False, scale: float = 1.5):
        self.seed, self.ar, self.scale = seed, ar, scale

    @lru_cache(maxsize=None)
    def logits(self, pos: int, state: tuple) -> torch.Tensor:
        key = state[:pos] if self.ar else state  # an AR model sees the positions to its left only
        seed = hash((self.seed, pos, tuple(-1 if t is None else t for t in key))) % 2 ** 31
        g = torch.Generator().manual_seed(seed)
        return torch.randn(V, generator=g, dtype=torch.float64) * self.scale


def dist(table: Table, pos: int, state: tuple, s) -> torch.Tensor:
    """The distribution a token at ``pos`` is drawn from (mask suppressed), float64 [V]."""
    logits = suppress(table.logits(pos, state)[None], NEVER)
    return target_distribution(logits, torch.tensor([s["T"]], dtype=torch.float64), s["k"], s["p"])[0]


def confidence(table: Table, pos: int, state: tuple, token: int, s) -> float:
    logits = suppress(table.logits(pos, state)[None], NEVER)[0]
    return float(torch.softmax(logits / s["T"], -1)[token])


def reference(target: Table, n: int, leftover: tuple, s) -> dict:
    """Target alone, sequential: position i drawn given positions < i."""
    out = {}
    free = range(len(leftover), n)
    for xs in itertools.product(range(V), repeat=len(free)):
        block, prob = list(leftover) + [None] * len(free), 1.0
        for i, x in zip(free, xs):
            prob *= float(dist(target, i, tuple(block), s)[x])
            block[i] = x
        if prob > 0:
            out[tuple(block)] = out.get(tuple(block), 0.0) + prob
    return out


def draft_outcomes(draft: Table, n: int, leftover: tuple, mode: str, s):
    """Every draft trajectory: (probability, drafts D, per-position draft distribution p at reveal)."""
    results = []

    def go(block, p, prob):
        masked = [i for i in range(n) if block[i] is None]
        if not masked:
            results.append((prob, tuple(block), dict(p)))
            return
        dists = {i: dist(draft, i, tuple(block), s) for i in masked}
        if mode in ("sequential", "ar"):
            i = masked[0]
            for y in range(V):
                if dists[i][y] > 0:
                    go(block[:i] + [y] + block[i + 1:], {**p, i: dists[i]}, prob * float(dists[i][y]))
            return
        # static / dynamic: every masked position draws a token, the most confident is revealed
        for new, new_p, w in confidence_reveals(draft, block, p, prob, dists, mode, s):
            go(new, new_p, w)

    go(list(leftover) + [None] * (n - len(leftover)), {}, 1.0)
    return results


def confidence_reveals(draft: Table, block: list, p: dict, prob: float, dists: dict, rule: str, s, quota=None):
    """One draft step where every masked position draws a token from ``dists`` independently and
    ``reveal_positions`` (rule, optional quota [1]) keeps some: yields (new block, new p, probability)."""
    n, masked = len(block), list(dists)
    for ys in itertools.product(range(V), repeat=len(masked)):
        w = prob
        for i, y in zip(masked, ys):
            w *= float(dists[i][y])
        if w == 0:
            continue
        conf = torch.zeros(1, n, dtype=torch.float64)
        is_masked = torch.zeros(1, n, dtype=torch.bool)
        for i, y in zip(masked, ys):
            conf[0, i], is_masked[0, i] = confidence(draft, i, tuple(block), y, s), True
        reveal = reveal_positions(conf, is_masked, rule, 0.5, quota)[0]
        new, new_p = list(block), dict(p)
        for i, y in zip(masked, ys):
            if reveal[i]:
                new[i], new_p[i] = y, dists[i]
        yield new, new_p, w


def acceptance_cells(D, q, p, start: int, n: int):
    """Uniform cells on which accept_mrs is constant: (weight, u_accept [n], u_bonus)."""
    t = [min(1.0, float(q[i][D[i]] / p[i][D[i]])) if i >= start else 1.0 for i in range(n)]
    cells = []
    for r in range(start, n + 1):  # r: first rejected position (n: none)
        w = 1.0
        for i in range(start, r):
            w *= t[i]
        if r < n:
            w *= 1.0 - t[r]
        if w <= 0:
            continue
        u = [t[i] / 2 for i in range(n)]
        if r < n:
            u[r] = (t[r] + 1.0) / 2
            residual = (q[r] - p[r]).clamp(min=0)
            residual = residual / residual.sum() if residual.sum() > 1e-12 else q[r]
            edges = torch.cat([torch.zeros(1, dtype=torch.float64), residual.cumsum(0)])
            for y in range(V):
                if residual[y] > 0:
                    cells.append((w * float(residual[y]), u, float((edges[y] + edges[y + 1]) / 2)))
        else:
            cells.append((w, u, 0.5))
    return cells


def simsd_mrs(target: Table, draft: Table, n: int, leftover: tuple, mode: str, s, outcomes=None) -> dict:
    """Output distribution of SimSD rounds (exact verification, MRS) until the block is full.
    outcomes(draft, n, leftover, mode, s): the draft's trajectories (default: ``draft_outcomes``)."""
    outcomes = outcomes or draft_outcomes
    out: dict = {}
    for prob, D, p in outcomes(draft, n, leftover, mode, s):
        start = len(leftover)
        q = {k: dist(target, k, tuple(D[:k]) + (None,) * (n - k), s) for k in range(start, n)}
        P = torch.stack([p.get(i, torch.ones(V, dtype=torch.float64) / V) for i in range(n)])[None]
        Q = torch.stack([q.get(i, torch.ones(V, dtype=torch.float64) / V) for i in range(n)])[None]
        verify = torch.tensor([[i >= start for i in range(n)]])
        for w, u, ub in acceptance_cells(D, q, p, start, n):
            acc, bonus, has_bonus = accept_mrs(torch.tensor([D]), Q, P, verify,
                                               torch.tensor([u], dtype=torch.float64),
                                               torch.tensor([ub], dtype=torch.float64))
            new = D[:start + int(acc)] + ((int(bonus),) if bool(has_bonus) else ())
            if len(new) == n:
                out[new] = out.get(new, 0.0) + prob * w
            else:
                for block, pr in simsd_mrs(target, draft, n, new, mode, s, outcomes).items():
                    out[block] = out.get(block, 0.0) + prob * w * pr
    return out


def tv(a: dict, b: dict) -> float:
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


SETTINGS = [dict(T=1.0, k=0, p=1.0), dict(T=0.7, k=2, p=1.0), dict(T=1.3, k=0, p=0.8), dict(T=0.5, k=2, p=0.9)]


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: f"T{s['T']}-k{s['k']}-p{s['p']}")
@pytest.mark.parametrize("n,leftover", [(2, ()), (3, ()), (3, (1,))])
@pytest.mark.parametrize("mode", ["sequential", "ar"])
def test_lossless_modes_match_target_alone(s, n, leftover, mode):
    target, draft = Table(seed=1), Table(seed=2, ar=(mode == "ar"))
    want = reference(target, n, leftover, s)
    got = simsd_mrs(target, draft, n, leftover, mode, s)
    assert abs(sum(got.values()) - 1.0) < 1e-9
    assert all(MASK not in block for block in got)
    assert tv(got, want) < 1e-9
    assert tv(want, reference(draft, n, leftover, s)) > 1e-3  # the draft alone would differ


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_confidence_order_drafts_are_biased_and_refused(mode):
    s = SETTINGS[0]
    target, draft = Table(seed=1), Table(seed=2)
    want = reference(target, 2, (), s)
    got = simsd_mrs(target, draft, 2, (), mode, s)
    assert abs(sum(got.values()) - 1.0) < 1e-9
    assert tv(got, want) > 1e-3  # why the engine refuses these modes
    assert mrs_refusal(True, mode) is not None
    assert mrs_refusal(True, "sequential") is None and mrs_refusal(False, mode) is None


def test_self_draft_accepts_everything():
    """Draft = target, sequential: every token is accepted (t = 1), and the output is the target's."""
    s = SETTINGS[1]
    target = Table(seed=5)
    got = simsd_mrs(target, target, 3, (), "sequential", s)
    assert tv(got, reference(target, 3, (), s)) < 1e-12
