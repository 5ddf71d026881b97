"""Batching rules through their one interface: select(pending, now, active) -> Selection, observe, forget."""
from __future__ import annotations

import random

import pytest

from testbed.policies.batching import (FifoBatching, LengthAwareBatching, Pending, Selection, SyncBatching,
                                       VerifiedRound, WindowBatching, ZhuBatching, make_batching)
from testbed.policies.zhu_dp import CostModel, Task, plan_dp


def queue(arrivals, windows=None, remaining=10, context=10) -> list[Pending]:
    """Pending drafts s0, s1, ... arriving at `arrivals` with `windows` drafted tokens (default 4 each)."""
    windows = [4] * len(arrivals) if windows is None else windows
    return [Pending(f"s{i}", float(t), w, remaining, context) for i, (t, w) in enumerate(zip(arrivals, windows))]


# ---------------------------------------------------------------- fifo, window, sync

def test_fifo_takes_the_oldest_up_to_max_batch_at_once():
    fifo = FifoBatching(max_batch=3)
    assert fifo.select([], 0.0, 0) == Selection()
    assert fifo.select(queue([0.0, 0.1]), 0.1, 5) == Selection((0, 1), None)
    assert fifo.select(queue([0.0, 0.1, 0.2, 0.3, 0.4]), 0.4, 5) == Selection((0, 1, 2), None)


def test_window_waits_for_the_window_after_the_oldest_or_a_full_batch():
    rule = WindowBatching(max_batch=3, window_s=0.005)
    assert rule.select([], 1.0, 2) == Selection()
    assert rule.select(queue([1.0, 1.001]), 1.002, 4) == Selection((), 1.005)        # wait until 1.0 + 5 ms
    assert rule.select(queue([1.0, 1.001]), 1.005, 4) == Selection((0, 1), None)     # the window has passed
    assert rule.select(queue([1.0, 1.001, 1.002, 1.003]), 1.003, 4) == Selection((0, 1, 2), None)  # full


def test_sync_waits_for_every_open_session_or_the_timeout():
    rule = SyncBatching(max_batch=64, timeout_s=1.0)
    assert rule.select([], 0.0, 3) == Selection()
    assert rule.select(queue([0.0, 0.2]), 0.3, 3) == Selection((), 1.0)              # one of 3 still drafting
    assert rule.select(queue([0.0, 0.2, 0.4]), 0.4, 3) == Selection((0, 1, 2), None)
    assert rule.select(queue([0.0, 0.2]), 1.0, 3) == Selection((0, 1), None)         # the silent one timed out
    assert SyncBatching(max_batch=2).select(queue([0.0, 0.1, 0.2]), 0.2, 3).indices == (0, 1)


def test_stateless_rules_ignore_observe_and_forget():
    for rule in (FifoBatching(2), WindowBatching(2), SyncBatching(2), LengthAwareBatching(2)):
        before = rule.select(queue([0.0, 0.1, 0.2]), 0.2, 3)
        rule.observe([VerifiedRound("s0", 4, 2, 0.01)], 10, 0.05)
        rule.forget("s0")
        assert rule.select(queue([0.0, 0.1, 0.2]), 0.2, 3) == before


def test_pending_rejects_impossible_counts():
    for window, remaining, context in ((-1, 1, 1), (0, 0, 1), (0, 1, 0)):
        with pytest.raises(ValueError, match="pending draft"):
            Pending("s", 0.0, window, remaining, context)


# ---------------------------------------------------------------- length-aware batching

def test_length_aware_prefers_similar_lengths_and_always_takes_the_oldest():
    lab = LengthAwareBatching(max_batch=3, max_tokens=100)
    assert lab.select(queue([0.0, 0.1, 0.2, 0.3, 0.4], [4, 8, 4, 1, 5]), 1.0, 5) == Selection((0, 2, 4), None)
    # A closer but longer draft that would break the token cap is skipped, a farther shorter one still fits.
    assert LengthAwareBatching(8, 8).select(queue([0, 1, 2], [4, 6, 1]), 3, 3).indices == (0, 2)
    # An oldest draft longer than the cap goes alone rather than starving.
    assert LengthAwareBatching(8, 8).select(queue([0, 1], [20, 1]), 3, 2).indices == (0,)
    # Ties in distance go to the older request.
    assert LengthAwareBatching(2, 100).select(queue([0, 1, 2], [5, 6, 4]), 3, 3).indices == (0, 1)
    assert lab.select([], 1.0, 0) == Selection((), None)
    # Prefills (window 0) pad to nothing: oldest first up to max_batch, as FIFO.
    assert lab.select(queue([0.0, 0.1, 0.2, 0.3], [0, 0, 0, 0]), 1.0, 4).indices == (0, 1, 2)


def test_length_aware_respects_caps_and_is_maximal():
    rng = random.Random(7)
    for _ in range(500):
        n = rng.randint(1, 20)
        lengths = [rng.randint(1, 12) for _ in range(n)]
        lab = LengthAwareBatching(rng.randint(1, 8), rng.randint(1, 60))
        chosen = lab.select(queue(sorted(rng.random() for _ in range(n)), lengths), 2.0, n).indices
        assert chosen[0] == 0 and list(chosen) == sorted(set(chosen))
        assert len(chosen) <= lab.max_batch
        longest = max(lengths[i] for i in chosen)
        assert len(chosen) == 1 or len(chosen) * longest <= lab.max_tokens
        # Greedy is maximal: nothing left out would fit in the final batch.
        if len(chosen) < lab.max_batch:
            for i in set(range(n)) - set(chosen):
                assert (len(chosen) + 1) * max(longest, lengths[i]) > lab.max_tokens


# ---------------------------------------------------------------- zhu

def fitted_zhu() -> ZhuBatching:
    """decay 1: plain least squares. Two batches on the line verify_s = 0.02 + 0.001·tokens, and one round of
    session x drafted in 2 ms per token."""
    zhu = ZhuBatching(max_batch=2, decay=1.0, lengths=(1, 2))
    zhu.observe([VerifiedRound("x", 2, 1, 0.004)], 2, 0.022)
    zhu.observe([], 4, 0.024)
    return zhu


def test_zhu_observe_fits_the_cost_model():
    zhu = ZhuBatching(max_batch=2, lengths=(1, 2))
    assert zhu.cost_model() == CostModel(0.002, 0.0, 0.01, 0.0, 2, (1, 2))       # the priors
    cost = fitted_zhu().cost_model()
    assert (cost.draft_a, cost.draft_b) == (0.002, 0.0)
    assert cost.verify_a == pytest.approx(0.02) and cost.verify_b == pytest.approx(0.001)
    assert fitted_zhu().alpha("x") == 0.5           # prior [1, 1] plus 1 accepted, 1 rejection


def test_zhu_fits_prefills_apart_from_verify_rounds():
    """A prefill costs per prompt token: counted as one token it would bend the verify fit (issue 13)."""
    zhu = fitted_zhu()
    # a batch of one round (2 tokens) and a 100-token prompt: 0.022 for the round, 0.05 for the prefill
    zhu.observe([VerifiedRound("x", 1, 1, 0.002)], 2, 0.072, prefill_tokens=100)
    zhu.observe([], 0, 0.07, prefill_tokens=100)                       # a prefill alone: 0.07 for 100 tokens
    cost = zhu.cost_model()
    assert cost.verify_a == pytest.approx(0.02) and cost.verify_b == pytest.approx(0.001)   # unchanged
    assert 0.0005 < cost.prefill_per_token < 0.0007
    # the plan charges a prompt only to pending prefills (500 tokens: 0.3 s), not to a session past its own
    fresh = zhu.select([Pending("old", 0.0, 2, 20, 500), Pending("new", 0.0, 0, 20, 500, prefill=True)], 0.0, 2)
    later = zhu.select([Pending("old", 0.0, 2, 20, 500), Pending("new", 0.0, 0, 20, 500)], 0.0, 2)
    assert fresh.plan["total_latency"] > later.plan["total_latency"] + 0.25
    assert fresh.plan["batches"] == [["old"], ["new"]]          # not held up by the other's prompt


def test_zhu_verifies_the_plans_first_batch_with_its_length():
    # Hand-checked, verify_s = 0.004 + 0.01·tokens (fitted below), 2 ms per draft token; sessions A (2 tokens
    # left) and B (30), α = 0.5 (prior): μ(1) = 1.5, μ(2) = 1.75, so A needs 2 rounds at l = 1 or 2; B 20 at
    # l = 1, 18 at l = 2. A batch's own rounds are serial (p = d + v):
    #   alone, l=1: p = 0.002 + 0.024 = 0.026 -> A 0.052, B 0.52;   l=2: p = 0.004 + 0.034 = 0.038 -> B 0.684
    #   pair,  l=1: p = 0.002 + 0.044 = 0.046 (halves: cycle max(0.004, 0.048, 0.026, 0.026) = 0.048, no gain)
    #               -> A 0.092 + B 0.92 = 1.012;   l=2: p = 0.004 + 0.064 -> 0.136 + 1.224 = 1.36
    # Queue A, B: [A] at l=1 then [B] at l=1 costs 0.052 + (0.052 + 0.52) = 0.624 < 1.012: A goes alone.
    zhu = ZhuBatching(max_batch=2, decay=1.0, lengths=(1, 2))
    zhu.observe([VerifiedRound("x", 1, 1, 0.002)], 2, 0.024)
    zhu.observe([VerifiedRound("y", 1, 1, 0.002), VerifiedRound("z", 1, 1, 0.002)], 4, 0.044)
    a, b = Pending("A", 0.0, 4, 2, 10), Pending("B", 0.1, 4, 30, 10)
    s = zhu.select([a, b], 0.2, 2)
    assert s.indices == (0,) and s.windows == {"A": 1} and s.wake_at is None
    assert s.plan["rule"] == "zhu" and s.plan["batches"] == [["A"], ["B"]] and s.plan["lengths"] == [1, 1]
    assert s.plan["total_latency"] == pytest.approx(0.624)
    assert s.plan["cost"]["verify_b"] == pytest.approx(0.01) and s.plan["cost"]["lengths"] == (1, 2)
    # Queue B, A: [B] then [A] would cost 0.52 + 0.572 = 1.092, so both go now at l=1 (1.012).
    s = zhu.select([b, a], 0.2, 2)
    assert s.indices == (0, 1) and s.windows == {"B": 1, "A": 1} and s.plan["total_latency"] == pytest.approx(1.012)
    # The same as the DP itself on those tasks
    plan = plan_dp([Task("B", 10, 30, 0.5), Task("A", 10, 2, 0.5)], zhu.cost_model())
    assert [list(x) for x in plan.batches] == s.plan["batches"] and list(plan.lengths) == s.plan["lengths"]
    assert zhu.select([], 0.3, 0) == Selection()


def test_zhu_learns_acceptance_per_session_and_forgets_it():
    zhu = ZhuBatching()
    zhu.observe([VerifiedRound("A", 4, 0, 0.0), VerifiedRound("A", 4, 0, 0.0), VerifiedRound("B", 4, 4, 0.0)],
                10, 0.05)
    assert zhu.alpha("A") == pytest.approx(1 / 4) and zhu.alpha("B") == pytest.approx(5 / 6)
    assert zhu.cost_model().draft_a == 0.002          # draft_s 0: not measured, the prior stays
    zhu.forget("A")
    assert zhu.alpha("A") == 0.5 and zhu.alpha("B") == pytest.approx(5 / 6)
    zhu.forget("never-seen")


def test_zhu_selection_is_a_prefix_with_a_window_each():
    rng = random.Random(3)
    zhu = ZhuBatching(max_batch=3)
    for _ in range(40):
        pending = [Pending(f"s{i}", 0.01 * i, rng.randint(0, 8), rng.randint(1, 200), rng.randint(1, 500))
                   for i in range(rng.randint(1, 9))]
        s = zhu.select(pending, 1.0, len(pending))
        assert s.indices == tuple(range(len(s.indices))) and 1 <= len(s.indices) <= 3
        assert set(s.windows) == {pending[i].key for i in s.indices}
        assert len(set(s.windows.values())) == 1 and set(s.windows.values()) <= set(zhu.lengths)
        assert [k for batch in s.plan["batches"] for k in batch] == [p.key for p in pending]
        zhu.observe([VerifiedRound(pending[i].key, pending[i].window, rng.randint(0, pending[i].window),
                                   rng.uniform(0, 0.02)) for i in s.indices],
                    sum(pending[i].window + 1 for i in s.indices), rng.uniform(0.01, 0.05))


def test_make_batching_builds_every_rule():
    assert make_batching("fifo", 4) == FifoBatching(4)
    assert make_batching("window", 4, 10.0) == WindowBatching(4, 0.01)
    assert make_batching("sync", 4, timeout_ms=500.0) == SyncBatching(4, 0.5)
    assert make_batching("length", 4, max_tokens=32) == LengthAwareBatching(4, 32)
    zhu = make_batching("zhu", 4)
    assert isinstance(zhu, ZhuBatching) and zhu.max_batch == 4 and zhu.name == "zhu"
    with pytest.raises(ValueError):
        make_batching("lab")
    with pytest.raises(ValueError, match="decay"):
        ZhuBatching(decay=0.0)
    with pytest.raises(ValueError, match="max_batch"):
        ZhuBatching(max_batch=0)


def test_zhu_verifies_the_first_half_of_a_batch_the_model_pipelines():
    """Drafting (10 ms a token) slower than a verify pass's fixed cost (2 ms, + 5 ms a token): a pair at l = 1
    runs as two alternating halves (cycle max(0.02, 0.024, 0.022, 0.022) = 0.024 < 0.032 whole), 20 rounds each:
    0.49 + 0.49 against 0.44 + 0.88 one after the other. The first half is verified now, the second while the
    first drafts (zhu_dp.py, "Two-stage pipeline")."""
    zhu = ZhuBatching(max_batch=2, decay=1.0, lengths=(1,))
    zhu.observe([VerifiedRound("x", 1, 1, 0.01)], 2, 0.012)
    zhu.observe([VerifiedRound("y", 1, 1, 0.01), VerifiedRound("z", 1, 1, 0.01)], 4, 0.022)
    cost = zhu.cost_model()
    assert cost.split(2, 1) and not cost.split(1, 1)
    s = zhu.select([Pending("A", 0.0, 1, 30, 10), Pending("B", 0.0, 1, 30, 10)], 0.1, 2)
    assert s.plan["batches"] == [["A", "B"]] and s.plan["total_latency"] == pytest.approx(0.98)
    assert s.indices == (0,) and s.windows == {"A": 1}
