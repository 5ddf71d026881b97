"""Verification-budget schedulers: GoodSpeed's greedy against brute force, budget invariants, Fixed-S and
Random-S, and the eq. (3)/(4) estimators on hand-computed sequences."""
from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from testbed.bench.policies import scheduling_decision_times
from testbed.policies.acceptance import mu
from testbed.policies.scheduling import (SCHEDULERS, DrafterEstimate, FixedScheduler, GoodSpeedEstimator,
                                         GoodSpeedScheduler, RandomScheduler, jain, log_utility, make_scheduler)


def compositions(total: int, parts: int, lo: int, hi: int):
    """Every integer vector with entries in [lo, hi] summing to at most `total` (brute force)."""
    if parts == 0:
        yield ()
        return
    for s in range(lo, min(hi, total) + 1):
        for rest in compositions(total - s, parts - 1, lo, hi):
            yield (s,) + rest


def random_estimates(rng: random.Random, n: int) -> list[DrafterEstimate]:
    # Shuffled names so that no code path can lean on the input order.
    names = [f"d{i}" for i in range(n)]
    rng.shuffle(names)
    return [DrafterEstimate(nm, rng.uniform(0.05, 0.95), rng.uniform(0.5, 8.0)) for nm in names]


# --- GoodSpeed: optimality ---

@pytest.mark.parametrize("utility,a", [("log", 1.0), ("linear", 1.0), ("alpha-fair", 2.0)])
def test_goodspeed_matches_brute_force(utility, a):
    rng = random.Random(7 + int(a) + len(utility))
    checked = 0
    for case in range(240):
        n, budget = rng.randint(2, 5), rng.randint(0, 12)
        min_s, max_s = 0, None
        if case % 3 == 1:
            min_s = rng.randint(0, budget // n)
        if case % 3 == 2:
            min_s = rng.randint(0, 1) if budget >= n else 0
            max_s = rng.randint(min_s, 6)
        est = random_estimates(rng, n)
        sched = GoodSpeedScheduler(min_s=min_s, max_s=max_s, utility=utility, a=a)
        alloc = sched.allocate(est, budget)
        names = [e.name for e in est]
        best = max(sched.objective(est, dict(zip(names, s)))
                   for s in compositions(budget, n, min_s, budget if max_s is None else max_s))
        got = sched.objective(est, alloc)
        assert abs(got - best) <= 1e-9 * best, (case, alloc, got, best)
        assert set(alloc) == set(names)
        assert all(min_s <= s and (max_s is None or s <= max_s) for s in alloc.values())
        checked += 1
    assert checked >= 200


def test_goodspeed_spends_the_budget_and_respects_caps():
    rng = random.Random(3)
    for _ in range(300):
        n, budget = rng.randint(1, 8), rng.randint(0, 40)
        est = random_estimates(rng, n)
        max_s = rng.choice([None, rng.randint(0, 8)])
        for sched in (GoodSpeedScheduler(min_s=0, max_s=max_s), FixedScheduler(max_s=max_s)):
            alloc = sched.allocate(est, budget)
            if max_s is None or n * max_s >= budget:
                assert sum(alloc.values()) == budget, (sched.name, alloc, budget)
            else:
                assert alloc == {e.name: max_s for e in est}, sched.name
        # Random-S spends at most C (the paper's Σ S_i ≤ C), within the caps
        alloc = RandomScheduler(seed=1, max_s=max_s).allocate(est, budget)
        assert sum(alloc.values()) <= budget and all(0 <= s <= (max_s if max_s is not None else budget)
                                                     for s in alloc.values())


def test_goodspeed_gives_every_drafter_a_position_by_default():
    """min_s 1 by default: eq. 3 averages over S_i drafted positions; at 0 a drafter's alpha-hat would freeze."""
    est = [DrafterEstimate("strong", 0.95, 1.0), DrafterEstimate("weak", 0.05, 20.0)]
    assert GoodSpeedScheduler().allocate(est, 8)["weak"] == 1
    assert GoodSpeedScheduler(min_s=0).allocate(est, 8)["weak"] == 0


def test_goodspeed_marginal_gain_identity_and_preferences():
    # μ(S+1) − μ(S) = α^{S+1}, the increment the greedy ranks by.
    for alpha in (0.0, 0.1, 0.5, 0.93, 1.0):
        for s in range(6):
            assert mu(s + 1, alpha) - mu(s, alpha) == pytest.approx(alpha ** (s + 1))
    # A high-acceptance drafter gets more; at equal α a lower-goodput drafter (bigger weight 1/X) gets more.
    sched = GoodSpeedScheduler()
    alloc = sched.allocate([DrafterEstimate("a", 0.9, 2.0), DrafterEstimate("b", 0.3, 2.0)], 10)
    assert alloc["a"] > alloc["b"]
    alloc = sched.allocate([DrafterEstimate("a", 0.7, 1.0), DrafterEstimate("b", 0.7, 6.0)], 10)
    assert alloc["a"] > alloc["b"]


def test_goodspeed_ties_are_broken_by_name_and_input_order_does_not_matter():
    est = [DrafterEstimate(n, 0.6, 2.0) for n in ("c", "a", "b")]
    alloc = GoodSpeedScheduler().allocate(est, 7)
    assert alloc == {"a": 3, "b": 2, "c": 2}
    assert GoodSpeedScheduler().allocate(est[::-1], 7) == alloc


def test_goodspeed_min_s_and_empty():
    sched = GoodSpeedScheduler(min_s=1)
    est = [DrafterEstimate("a", 0.99, 1.0), DrafterEstimate("b", 0.05, 8.0)]
    alloc = sched.allocate(est, 6)
    assert alloc["b"] >= 1 and sum(alloc.values()) == 6
    assert sched.allocate([], 5) == {}
    assert GoodSpeedScheduler(min_s=2, max_s=2).allocate(est, 9) == {"a": 2, "b": 2}


# --- Fixed-S and Random-S ---

def test_fixed_splits_evenly_with_remainder_to_first_names():
    est = [DrafterEstimate(f"d{i}", 0.5, 1.0) for i in (7, 3, 0, 1, 2, 4, 6, 5)]
    assert FixedScheduler().allocate(est, 20) == {"d0": 3, "d1": 3, "d2": 3, "d3": 3,
                                                  "d4": 2, "d5": 2, "d6": 2, "d7": 2}
    assert set(FixedScheduler().allocate(est, 24).values()) == {3}
    assert FixedScheduler(max_s=2).allocate(est, 24) == {f"d{i}": 2 for i in range(8)}
    assert FixedScheduler().allocate([], 3) == {}


def test_random_is_deterministic_per_seed_and_respects_bounds():
    rng = random.Random(5)
    est = random_estimates(rng, 4)
    a, b, c = RandomScheduler(seed=11), RandomScheduler(seed=11), RandomScheduler(seed=12)
    seq_a = [a.allocate(est, 10) for _ in range(50)]
    assert seq_a == [b.allocate(est, 10) for _ in range(50)]
    assert seq_a != [c.allocate(est, 10) for _ in range(50)]
    sched = RandomScheduler(seed=2, min_s=1, max_s=4)
    for _ in range(200):
        alloc = sched.allocate(est, 10)
        assert sum(alloc.values()) <= 10 and all(1 <= s <= 4 for s in alloc.values())


def _vectors(n: int, budget: int, cap: int) -> list[tuple[int, ...]]:
    """Every vector of n parts in [0, cap] with sum <= budget, by brute force."""
    from itertools import product
    return [v for v in product(range(cap + 1), repeat=n) if sum(v) <= budget]


@pytest.mark.parametrize("n,budget,max_s,expected", [
    (2, 4, None, _vectors(2, 4, 4)),           # stars and bars with a slack part: 15 vectors
    (3, 4, 2, _vectors(3, 4, 2)),              # binding cap: the total, then part by part, by counting
    (2, 5, 2, _vectors(2, 5, 2)),              # N * max_s < C: every vector within the caps
])
def test_random_covers_compositions_roughly_uniformly(n, budget, max_s, expected):
    est = [DrafterEstimate(f"d{i}", 0.5, 1.0) for i in range(n)]
    sched = RandomScheduler(seed=3, max_s=max_s)
    draws = 300 * len(expected)
    allocs = [sched.allocate(est, budget) for _ in range(draws)]
    counts = Counter(tuple(a[f"d{i}"] for i in range(n)) for a in allocs)
    assert set(counts) == set(expected)
    share = draws / len(expected)
    assert all(0.8 * share < c < 1.2 * share for c in counts.values()), counts


# --- estimators, eqs. (3) and (4) ---

def test_estimator_follows_eq3_and_eq4_by_hand():
    est = GoodSpeedEstimator(eta=0.25, beta=0.5, alpha0=0.5, goodput0=1.0)
    est.observe("a", [1.0, 0.5, 0.0, 0.5], accepted=1, drafted=4)
    # α̂ = 0.75·0.5 + 0.25·(2/4) = 0.5;  X = 0.5·1 + 0.5·(1+1) = 1.5
    (e,) = est.estimates()
    assert (e.name, e.alpha, e.goodput) == ("a", pytest.approx(0.5), pytest.approx(1.5))
    est.observe("a", [1.0, 1.0], accepted=2, drafted=2)
    # α̂ = 0.75·0.5 + 0.25·1 = 0.625;  X = 0.5·1.5 + 0.5·3 = 2.25
    (e,) = est.estimates()
    assert (e.alpha, e.goodput) == (pytest.approx(0.625), pytest.approx(2.25))
    est.observe("a", None, accepted=1, drafted=4)           # fallback: accepted/drafted = 0.25
    # α̂ = 0.75·0.625 + 0.25·0.25 = 0.53125;  X = 0.5·2.25 + 0.5·2 = 2.125
    (e,) = est.estimates()
    assert (e.alpha, e.goodput) == (pytest.approx(0.53125), pytest.approx(2.125))
    est.observe("a", [], accepted=0, drafted=0)             # no drafts: α̂ kept, X moves toward 1
    (e,) = est.estimates()
    assert (e.alpha, e.goodput) == (pytest.approx(0.53125), pytest.approx(1.5625))


def test_estimator_defaults_registration_and_order():
    est = GoodSpeedEstimator()
    assert (est.eta, est.beta, est.alpha0, est.goodput0) == (0.1, 0.5, 0.5, 1.0)
    est.add("b")
    est.observe("a", [1.0, 0.0], accepted=1, drafted=2)
    assert [e.name for e in est.estimates()] == ["a", "b"]
    assert est.estimates()[1] == DrafterEstimate("b", 0.5, 1.0)
    assert est.estimates()[0].alpha == pytest.approx(0.9 * 0.5 + 0.1 * 0.5)
    est.remove("b")
    assert [e.name for e in est.estimates()] == ["a"]
    # First GoodSpeed round with fresh estimates is the even split.
    fresh = GoodSpeedEstimator()
    for name in ("x", "y", "z", "w"):
        fresh.add(name)
    assert set(GoodSpeedScheduler().allocate(fresh.estimates(), 24).values()) == {6}


# --- helpers, factory and bad inputs ---

def test_log_utility_and_jain():
    assert log_utility([1.0, math.e, math.e ** 2]) == pytest.approx(3.0)
    assert log_utility({"a": 0.0, "b": 2.0}) == -math.inf
    assert jain([2.0, 2.0, 2.0]) == pytest.approx(1.0)
    assert jain([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert jain([0.0, 0.0]) == 1.0


def test_make_scheduler():
    assert [make_scheduler(n).name for n in SCHEDULERS] == list(SCHEDULERS)
    s = make_scheduler("goodspeed", min_s=1, max_s=5, utility="alpha-fair", a=0.5)
    assert (s.min_s, s.max_s, s.utility, s.a) == (1, 5, "alpha-fair", 0.5)
    assert make_scheduler("random", seed=4).seed == 4


@pytest.mark.parametrize("make,field", [
    (lambda: DrafterEstimate("a", 1.5, 1.0), "alpha"),
    (lambda: DrafterEstimate("a", float("nan"), 1.0), "alpha"),
    (lambda: DrafterEstimate("a", 0.5, 0.0), "goodput"),
    (lambda: GoodSpeedEstimator(eta=0.0), "eta"),
    (lambda: GoodSpeedEstimator(beta=1.5), "beta"),
    (lambda: GoodSpeedEstimator(alpha0=-0.1), "alpha0"),
    (lambda: GoodSpeedEstimator(goodput0=0), "goodput0"),
    (lambda: GoodSpeedEstimator().observe("a", None, accepted=3, drafted=2), "accepted"),
    (lambda: GoodSpeedEstimator().observe("a", None, accepted=0, drafted=-1), "drafted"),
    (lambda: GoodSpeedEstimator().observe("a", [0.5], accepted=0, drafted=2), "accept_probs"),
    (lambda: GoodSpeedEstimator().observe("a", [0.5, 1.2], accepted=0, drafted=2), "accept_probs[1]"),
    (lambda: GoodSpeedScheduler(min_s=-1), "min_s"),
    (lambda: GoodSpeedScheduler(min_s=2, max_s=1), "max_s"),
    (lambda: GoodSpeedScheduler(utility="cubic"), "utility"),
    (lambda: GoodSpeedScheduler(utility="alpha-fair", a=-1.0), "a must"),
    (lambda: RandomScheduler(seed=-3), "seed"),
    (lambda: GoodSpeedScheduler().allocate([DrafterEstimate("a", 0.5, 1.0)], -1), "budget"),
    (lambda: GoodSpeedScheduler().allocate([DrafterEstimate("a", 0.5, 1.0)], 2.5), "budget"),
    (lambda: FixedScheduler(min_s=3).allocate([DrafterEstimate("a", 0.5, 1.0), DrafterEstimate("b", 0.5, 1.0)],
                                              5), "min_s"),
    (lambda: RandomScheduler().allocate([DrafterEstimate("a", 0.5, 1.0)] * 2, 5), "unique"),
    (lambda: make_scheduler("lottery"), "scheduler must be one of"),
    (lambda: make_scheduler("fixed", seed=1), "seed"),
    (lambda: log_utility([1.0, -2.0]), "goodputs[1]"),
    (lambda: jain([]), "goodputs"),
])
def test_bad_inputs_name_the_field(make, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        make()


def test_decision_times_runs():
    times = scheduling_decision_times(n=8, repeats=3)
    assert set(times) == set(SCHEDULERS) and all(t > 0 for t in times.values())
