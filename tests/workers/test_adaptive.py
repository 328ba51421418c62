"""Adaptive SimSD: the rule that picks drafted or target-only rounds (pure), and the claim that
switching changes speed only: any schedule of the two round kinds gives exact mode's tokens,
which are vanilla sequential decoding's."""
import pytest

from workers.api import DecodeConfig, Request
from workers.decoding.adaptive import DRAFT, TARGET, AdaptivePolicy, adaptive_arms, arm_steps, draft_arm
from workers.engine import Engine

from .test_simsd import PROMPTS, near_draft  # noqa: F401  (fixture)


def _feed(policy, rounds, draft=(0.010, 3.0), target=(0.004, 1.0)):
    """Run ``rounds`` rounds where a drafted round takes draft[0] s for draft[1] tokens per row."""
    modes = []
    for _ in range(rounds):
        mode = policy.choose()
        modes.append(mode)
        s, t = draft if mode == DRAFT else target
        policy.record(mode, s, t)
    return modes


def _probes(modes, usual):
    return [i for i, m in enumerate(modes) if i >= 6 and m != usual]


def test_warm_up_measures_both_modes_then_keeps_the_faster():
    policy = AdaptivePolicy(probe_every=8, warmup=3)
    modes = _feed(policy, 70)  # drafting: 300 tokens/s per row; target alone: 250
    assert modes[:6] == [DRAFT] * 3 + [TARGET] * 3
    # probes of the target 8 rounds after the warm-up, then 16 and 32 rounds apart (each confirmed)
    assert _probes(modes, DRAFT) == [14, 30, 62]
    assert policy.report()["adaptive_mode"] == DRAFT


def test_zero_acceptance_falls_back_to_the_target():
    policy = AdaptivePolicy(probe_every=8, warmup=3)
    modes = _feed(policy, 40, draft=(0.010, 1.0))  # a round of 10 ms for one token: 100 vs 250 tokens/s
    assert _probes(modes, TARGET) == [14, 30]
    assert policy.report()["adaptive_mode"] == TARGET


def test_a_change_of_choice_probes_soon_again():
    policy = AdaptivePolicy(probe_every=8, warmup=3, window=3)
    modes = _feed(policy, 40)                       # drafting wins; probes back off (14, 30)
    modes += _feed(policy, 30, draft=(0.010, 1.0))  # acceptance collapses: drafting loses
    # two bad drafted rounds make the median of 3, then the target; probes 8 and 24 rounds on
    assert modes[40:42] == [DRAFT, DRAFT] and modes[42:50] == [TARGET] * 8
    assert [i for i in range(42, 70) if modes[i] == DRAFT] == [50, 66]
    with pytest.raises(ValueError, match="warmup"):
        AdaptivePolicy(warmup=4, window=3)


def test_one_slow_round_does_not_flip_the_choice():
    policy = AdaptivePolicy(probe_every=1000, warmup=3)
    _feed(policy, 20)
    policy.record(DRAFT, 5.0, 3.0)  # a graph capture: 500x slower once
    assert policy.choose() == DRAFT


def test_arms_fewer_draft_steps_down_to_one():
    assert adaptive_arms(4, None) == (DRAFT, TARGET, draft_arm(2), draft_arm(1))
    assert adaptive_arms(8, 4) == (DRAFT, TARGET, draft_arm(2), draft_arm(1))
    assert adaptive_arms(4, 1) == (DRAFT, TARGET)
    assert [arm_steps(a) for a in adaptive_arms(4, None)] == [None, None, 2, 1]


def test_the_fastest_of_several_arms_wins_and_the_others_are_probed_in_turn():
    arms = (DRAFT, TARGET, draft_arm(2), draft_arm(1))
    cost = {DRAFT: (0.010, 3.0), TARGET: (0.004, 1.0), draft_arm(2): (0.006, 2.9), draft_arm(1): (0.003, 1.0)}
    policy = AdaptivePolicy(arms=arms, probe_every=4, warmup=2)
    modes = []
    for _ in range(80):
        arm = policy.choose()
        modes.append(arm)
        policy.record(arm, *cost[arm])
    assert modes[:8] == [a for a in arms for _ in range(2)]  # warm-up, in order
    assert policy.current == draft_arm(2)                     # 483 tokens/s beats 300, 250 and 333
    probes = [m for m in modes[8:] if m != draft_arm(2)]
    assert probes == [DRAFT, TARGET, draft_arm(1), DRAFT][:len(probes)] and len(probes) >= 3


class Scripted(AdaptivePolicy):
    """A fixed schedule of round kinds: long target-only runs (blocks close while the draft runs no
    forward), drafted rounds with the configured steps and with fewer, and back."""

    PATTERN = [TARGET] * 9 + [DRAFT] + [TARGET] + [DRAFT] * 3 + [draft_arm(2)] * 3 + [TARGET] + [draft_arm(1)] * 2

    def choose(self) -> str:
        return self.PATTERN[self.rounds % len(self.PATTERN)]


class LongSitOut(Scripted):
    """The draft sits out for 30 rounds (7+ blocks close), then drafts: one catch-up forward."""

    PATTERN = [TARGET] * 30 + [DRAFT] * 3


def _tokens(ckpts, draft, policy=None, static=None, max_new=21, **kw):
    kw.setdefault("decoder", "simsd" if draft else "vanilla")
    eng = Engine(str(ckpts["target"]), str(draft) if draft else None, DecodeConfig(batch_size=3, **kw), "cpu", "float32",
                 static_shapes=static)
    if policy is not None:
        eng.decoder.policy = policy
    res = eng.generate([Request(i, p, max_new_tokens=max_new) for i, p in enumerate(PROMPTS)])
    return [r.token_ids for r in res], res


@pytest.mark.parametrize("fold,static", [("always", False), ("never", False), ("always", True)])
def test_any_schedule_gives_sequential_tokens(ckpts, near_draft, fold, static):  # noqa: F811
    """static: fixed-shape forwards and the graphed draft loop (eager on CPU), per-round step counts."""
    want, _ = _tokens(ckpts, None, remasking="sequential", commit_folding=fold)
    got, res = _tokens(ckpts, near_draft, Scripted(arms=(DRAFT, TARGET, draft_arm(2), draft_arm(1))),
                       static=static, verify="exact", commit_folding=fold)
    assert got == want
    assert all(r.num_undrafted_rounds > 0 for r in res)
    assert all(r.num_undrafted_rounds < r.num_rounds for r in res)
    assert sum(r.num_accepted_tokens for r in res) > 0  # the drafted rounds did accept drafts


@pytest.mark.parametrize("fold", ["always", "never"])
def test_a_long_sit_out_is_caught_up_in_one_draft_forward(ckpts, near_draft, monkeypatch, fold):  # noqa: F811
    from workers.decoders import commits

    kw = dict(verify="exact", max_new=40, commit_folding=fold)
    want, _ = _tokens(ckpts, None, remasking="sequential", max_new=40)
    got, res = _tokens(ckpts, near_draft, LongSitOut(arms=(DRAFT, TARGET)), **kw)
    assert got == want
    monkeypatch.setattr(commits, "CATCH_UP_BLOCKS", 1)  # one forward per missed block instead
    _, per_block = _tokens(ckpts, near_draft, LongSitOut(arms=(DRAFT, TARGET)), **kw)
    # the 30-round sit-out closes 6-7 blocks per row: one catch-up forward instead of one each
    assert all(a.num_draft_forwards <= b.num_draft_forwards - 4 for a, b in zip(res, per_block))


def test_adaptive_is_on_for_exact_and_refused_for_paper():
    assert DecodeConfig(decoder="simsd", verify="exact").adaptive_on
    assert not DecodeConfig(decoder="simsd", verify="paper").adaptive_on
    assert not DecodeConfig(decoder="simsd", verify="exact", adaptive="off").adaptive_on
    with pytest.raises(ValueError, match="needs verify 'exact'"):
        DecodeConfig(decoder="simsd", verify="paper", adaptive="on")


def test_a_round_that_captured_a_graph_is_not_timed(ckpts, near_draft, monkeypatch):  # noqa: F811
    """A CUDA graph capture's one-off cost must not count as the arm's round time (on CPU no graph
    is captured, so a capture is simulated on every third target round)."""
    from workers.decoders.simsd import SimSDDecoder
    from workers.graphs import CAPTURES

    calls = {"n": 0}
    real = SimSDDecoder._target_round

    def capturing(self, seqs, stop_ids):
        calls["n"] += 1
        if calls["n"] % 3 == 1:
            CAPTURES.count += 1
        return real(self, seqs, stop_ids)

    monkeypatch.setattr(SimSDDecoder, "_target_round", capturing)
    policy = AdaptivePolicy(arms=(DRAFT, TARGET), window=64, warmup=3)
    before = CAPTURES.count
    try:
        _tokens(ckpts, near_draft, policy, verify="exact")
    finally:
        captured, CAPTURES.count = CAPTURES.count - before, before
    assert captured > 0
    recorded = len(policy.stats[TARGET].seconds) + len(policy.stats[DRAFT].seconds)
    assert len(policy.stats[TARGET].seconds) == min(calls["n"] - captured, 64)
    assert recorded == policy.rounds
