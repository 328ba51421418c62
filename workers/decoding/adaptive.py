"""When SimSD drafts and when the target decodes alone: a pure rule over measured costs.

A SimSD round costs the draft's steps plus one verify and yields ``tokens`` per row (accepted
drafts plus the bonus token). A target-only round (one target forward, the leftmost masked
position revealed with the target's own choice) yields exactly one token per row, and in exact
mode it is the token SimSD would have produced there, so switching changes speed only.

The decoder times every round (it ends with a device->host copy, so wall time is device time)
and feeds ``record``; ``choose`` picks the mode with more tokens per second, and now and then runs
the other mode once to keep its estimate fresh (acceptance drifts as the text changes): after
``probe_every`` rounds, and each probe that confirms the choice doubles the wait, up to
``max_probe_every`` (a probe is not free: a target-only round also leaves the draft a shorter block);
a change of choice resets it. Estimates are medians of the last ``window`` rounds, so one slow round
cannot flip the decision; rounds that captured a CUDA graph are not recorded at all (the decoder
skips them).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from statistics import median

DRAFT, TARGET = "draft", "target"


def draft_arm(steps: int) -> str:
    """The arm that drafts the block in at most ``steps`` denoising steps."""
    return f"draft-{steps}-steps"


def adaptive_arms(block: int, denoising_steps: int | None) -> tuple[str, ...]:
    """The rounds adaptive SimSD chooses from: the configured draft, the target alone, and the
    draft revealing its block in fewer steps (halving down to one) where that is fewer than the
    configured steps. Exact verification makes every arm give the same tokens."""
    configured = min(denoising_steps or block, block)
    arms = [DRAFT, TARGET]
    k = configured // 2
    while k >= 1:
        arms.append(draft_arm(k))
        k //= 2
    return tuple(arms)


def arm_steps(arm: str) -> int | None:
    """Denoising steps an arm overrides (None: the configured ones); TARGET has no draft."""
    return int(arm.split("-")[1]) if arm.startswith("draft-") else None


class ModeStats:
    """The last ``window`` rounds of one arm: seconds per round and tokens per row per round."""

    def __init__(self, window: int = 8):
        self.seconds: deque = deque(maxlen=window)
        self.tokens: deque = deque(maxlen=window)

    def add(self, seconds: float, tokens_per_row: float) -> None:
        self.seconds.append(seconds)
        self.tokens.append(tokens_per_row)

    @property
    def known(self) -> bool:
        return bool(self.seconds)

    def rate(self) -> float:
        """Tokens per row per second (median round)."""
        return median(self.tokens) / max(median(self.seconds), 1e-9)


@dataclass
class AdaptivePolicy:
    """arms: the kinds of round to choose from, in warm-up order: ``DRAFT`` (the configured draft),
    ``TARGET`` (no draft), and ``draft_arm(k)`` (the draft revealing its block in at most k steps)."""
    arms: tuple = (DRAFT, TARGET)
    probe_every: int = 16     # rounds between probes of the mode not in use (at first, and after a change)
    max_probe_every: int = 256
    window: int = 8
    warmup: int = 3           # rounds of each mode measured first (the median drops a capture spike)
    # State (not arguments): rounds recorded, the arm chosen, per-arm stats, the probe schedule.
    rounds: int = field(default=0, init=False)
    current: str = field(default="", init=False)
    stats: dict = field(default_factory=dict, init=False)

    def __post_init__(self):
        if not 1 <= self.warmup <= self.window:
            raise ValueError(f"warmup must be in [1, window={self.window}], got {self.warmup}")
        if len(set(self.arms)) != len(self.arms) or not self.arms:
            raise ValueError(f"arms must be distinct and not empty, got {self.arms}")
        self.current = self.arms[0]
        self.stats = {arm: ModeStats(self.window) for arm in self.arms}
        self.interval = self.probe_every
        self.next_probe: int | None = None  # round index of the next probe (set once warmed up)
        self.probes = 0

    def choose(self) -> str:
        """The arm of the next round: ``warmup`` rounds of each arm first, in order (the median
        ignores a first round slowed by graph capture), then the one with the most tokens per
        second, with a probe of another arm (in turn) now and then."""
        for arm in self.arms:
            if len(self.stats[arm].seconds) < self.warmup:
                return arm
        best = max(self.arms, key=lambda a: self.stats[a].rate())  # ties: the earlier arm
        if self.next_probe is None or best != self.current:
            self.interval = self.probe_every  # warmed up, or the choice changed: probe soon
            self.next_probe = self.rounds + self.interval
        self.current = best
        others = [a for a in self.arms if a != best]
        if others and self.rounds >= self.next_probe:
            self.interval = min(2 * self.interval, self.max_probe_every)  # confirmed so far: wait longer
            self.next_probe = self.rounds + self.interval
            self.probes += 1
            return others[(self.probes - 1) % len(others)]
        return best

    def record(self, mode: str, seconds: float, tokens_per_row: float) -> None:
        self.rounds += 1
        self.stats[mode].add(seconds, tokens_per_row)

    def report(self) -> dict:
        """What the rule sees now (for logs and the summary)."""
        out = {"adaptive_mode": self.current, "adaptive_rounds": self.rounds}
        for mode, s in self.stats.items():
            if s.known:
                out[f"{mode}_round_ms"] = 1e3 * median(s.seconds)
                out[f"{mode}_tokens_per_round"] = median(s.tokens)
        return out
