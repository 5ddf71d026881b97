"""Zhu et al.'s batching + speculation-length DP, length-aware batching, and the joint band/γ solver."""
from __future__ import annotations

import math
import random

import pytest

from testbed.policies import joint, zhu_dp
from testbed.policies.allocation import Station
from testbed.policies.batching import (FifoBatching, IndexDecision, LengthAwareBatching, SyncBatching,
                                       WindowBatching, make_batching)
from testbed.policies.joint import Drafter, JointAllocation, brute_force, objective, solve_joint
from testbed.policies.zhu_dp import CostModel, Plan, Task, evaluate, plan_dp, plan_exhaustive


# ---------------------------------------------------------------- Zhu DP

def _instance(rng: random.Random) -> tuple[list[Task], CostModel]:
    k = rng.randint(1, 7)
    tasks = [Task(f"t{i}", rng.randrange(0, 200), rng.randrange(1, 60), rng.choice([0.0, 1.0, rng.random()]),
                  rng.choice([0.0, rng.uniform(0, 0.3)])) for i in range(k)]
    # Fixed costs (draft_a, verify_a) reward batching, per-task costs and mixed output lengths penalise it,
    # so the optimum ranges from one big batch to singletons.
    cost = CostModel(draft_a=rng.uniform(0, 0.02), draft_b=rng.uniform(0, 0.01), verify_a=rng.uniform(0, 0.1),
                     verify_b=rng.uniform(0, 0.01), max_batch=rng.randint(1, k),
                     lengths=tuple(rng.sample(range(0, 9), rng.randint(1, 4))),
                     prefill_per_token=rng.choice([0.0, rng.uniform(0, 1e-3)]), pipelined=rng.random() < 0.7)
    return tasks, cost


def _check_plan(plan: Plan, tasks: list[Task], cost: CostModel, objective_: str, order: str) -> None:
    seq = sorted(tasks, key=lambda t: (t.output_len, t.input_len)) if order == "length" else tasks
    assert [n for b in plan.batches for n in b] == [t.name for t in seq]      # contiguous, in order
    assert all(1 <= len(b) <= cost.max_batch for b in plan.batches)
    assert len(plan.lengths) == len(plan.batches) and set(plan.lengths) <= set(cost.lengths)
    assert plan.total_latency == evaluate(tasks, plan.batches, plan.lengths, cost, objective_)


def test_dp_equals_exhaustive_on_random_instances():
    rng = random.Random(2510_11331)
    shapes = set()
    for _ in range(150):
        tasks, cost = _instance(rng)
        order = rng.choice(["given", "length"])
        for obj in zhu_dp.OBJECTIVES:
            dp = plan_dp(tasks, cost, obj, order)
            ex = plan_exhaustive(tasks, cost, obj, order)
            _check_plan(dp, tasks, cost, obj, order)
            _check_plan(ex, tasks, cost, obj, order)
            assert dp.total_latency == pytest.approx(ex.total_latency, rel=1e-9, abs=1e-12)
            shapes.add((len(dp.batches) == 1, len(dp.batches) == len(tasks), len(set(dp.lengths)) > 1))
    # The instances exercise one batch, all singletons, mixed sizes and mixed lengths per plan.
    assert {(True, False, False), (False, True, True), (False, False, True), (False, False, False)} <= shapes


TWO = [Task("A", 10, 6, 0.5, 0.1), Task("B", 20, 3, 0.0, 0.2)]
COST2 = CostModel(0.01, 0.002, 0.05, 0.001, max_batch=2, lengths=(1, 2), prefill_per_token=1e-4)


def test_evaluate_by_hand():
    # Together at l=2 (b=2): d = 2(0.01+0.004) = 0.028, v = 0.05+0.001*2*3 = 0.056 -> p = 0.056, q = 0.028.
    # μ_A = (1-0.5^3)/0.5 = 1.75 -> r_A = ceil(6/1.75) = 4; α_B = 0 -> μ = 1, r_B = 3.
    # lead = max upload 0.2 + 1e-4*2*20 = 0.204; C_A = 0.204+4*0.056+0.028 = 0.456, C_B = 0.204+3*0.056+0.028 = 0.4
    assert evaluate(TWO, [["A", "B"]], [2], COST2, "sum") == pytest.approx(0.856)
    assert evaluate(TWO, [["A", "B"]], [2], COST2, "makespan") == pytest.approx(0.456)
    # A alone at l=1: p = max(0.012, 0.052), q = 0.012, r_A = ceil(6/1.5) = 4, lead 0.101 -> C_A = 0.321.
    # then B alone at l=2: p = max(0.024, 0.053), q = 0.024, lead 0.202 -> C_B = 0.321+0.202+3*0.053+0.024 = 0.706.
    assert evaluate(TWO, [["A"], ["B"]], [1, 2], COST2, "sum") == pytest.approx(0.321 + 0.706)
    assert evaluate(TWO, [["A"], ["B"]], [1, 2], COST2, "makespan") == pytest.approx(0.706)
    # No pipelining: p = d + v = 0.084, q = 0 -> C_A = 0.204+4*0.084 = 0.540, C_B = 0.204+3*0.084 = 0.456.
    serial = CostModel(0.01, 0.002, 0.05, 0.001, 2, (1, 2), 1e-4, pipelined=False)
    assert evaluate(TWO, [["A", "B"]], [2], serial, "sum") == pytest.approx(0.996)
    # l = 0 is autoregressive decoding: O rounds of one verify pass each, no draft stage.
    assert evaluate(TWO, [["B"], ["A"]], [0, 0], COST2, "makespan") == pytest.approx(
        (0.2 + 0.002 + 3 * 0.051) + (0.1 + 0.001 + 6 * 0.051))


def test_dp_on_the_two_task_example_and_edges():
    for obj in zhu_dp.OBJECTIVES:
        in_order = ([([["A", "B"]], [l]) for l in (1, 2)]
                    + [([["A"], ["B"]], [l, m]) for l in (1, 2) for m in (1, 2)])
        best = min(evaluate(TWO, b, ls, COST2, obj) for b, ls in in_order)
        assert plan_dp(TWO, COST2, obj).total_latency == pytest.approx(best, rel=1e-12)
        assert plan_dp(TWO, COST2, obj, "length").batches[0][0] == "B"     # shortest output first
    assert plan_dp([], COST2) == Plan((), (), 0.0) == plan_exhaustive([], COST2)
    assert zhu_dp.mu(1.0, 3) == 4 and zhu_dp.mu(0.0, 3) == 1 and zhu_dp.mu(0.5, 1) == 1.5
    assert zhu_dp.rounds(Task("x", 0, 3, 0.5), 1) == 2      # 3 / 1.5 = 2 exactly: no spurious third round


def test_evaluate_and_model_validation():
    with pytest.raises(ValueError):
        evaluate(TWO, [["A"]], [1], COST2)                   # B missing
    with pytest.raises(ValueError):
        evaluate(TWO, [["A", "B"], ["A"]], [1, 1], COST2)    # A twice
    with pytest.raises(ValueError):
        evaluate(TWO, [["A", "B"]], [1], CostModel(0, 0, 0, 0, max_batch=1))
    with pytest.raises(ValueError):
        evaluate(TWO, [["A", "B"]], [1, 2], COST2)           # one length per batch
    with pytest.raises(ValueError):
        plan_dp(TWO, COST2, "mean")
    with pytest.raises(ValueError):
        CostModel(0, 0, 0, 0, max_batch=0)
    with pytest.raises(ValueError):
        Task("x", 1, 0)


# ---------------------------------------------------------------- length-aware batching

def test_length_aware_prefers_similar_lengths_and_always_takes_the_oldest():
    lab = LengthAwareBatching(max_batch=3, max_tokens=100)
    assert lab.select([0.0, 0.1, 0.2, 0.3, 0.4], 1.0, 5, [4, 8, 4, 1, 5]) == IndexDecision((0, 2, 4), None)
    # A closer but longer draft that would break the token cap is skipped, a farther shorter one still fits.
    assert LengthAwareBatching(8, 8).select([0, 1, 2], 3, 3, [4, 6, 1]).indices == (0, 2)
    # An oldest draft longer than the cap goes alone rather than starving.
    assert LengthAwareBatching(8, 8).select([0, 1], 3, 2, [20, 1]).indices == (0,)
    # Ties in distance go to the older request.
    assert LengthAwareBatching(2, 100).select([0, 1, 2], 3, 3, [5, 6, 4]).indices == (0, 1)
    assert lab.select([], 1.0, 0, []) == IndexDecision((), None)
    assert lab.select([0.0, 0.1, 0.2, 0.3], 1.0, 4).indices == (0, 1, 2)      # no lengths: FIFO up to max_batch
    with pytest.raises(ValueError):
        lab.select([0.0, 0.1], 1.0, 2, [3])


def test_length_aware_respects_caps_and_is_maximal():
    rng = random.Random(7)
    for _ in range(500):
        n = rng.randint(1, 20)
        lengths = [rng.randint(1, 12) for _ in range(n)]
        lab = LengthAwareBatching(rng.randint(1, 8), rng.randint(1, 60))
        chosen = lab.select(sorted(rng.random() for _ in range(n)), 2.0, n, lengths).indices
        assert chosen[0] == 0 and list(chosen) == sorted(set(chosen))
        assert len(chosen) <= lab.max_batch
        longest = max(lengths[i] for i in chosen)
        assert len(chosen) == 1 or len(chosen) * longest <= lab.max_tokens
        # Greedy is maximal: nothing left out would fit in the final batch.
        if len(chosen) < lab.max_batch:
            for i in set(range(n)) - set(chosen):
                assert (len(chosen) + 1) * max(longest, lengths[i]) > lab.max_tokens


def test_make_batching_keeps_old_rules_and_adds_length():
    assert make_batching("fifo", 4) == FifoBatching(4)
    assert make_batching("window", 4, 10.0) == WindowBatching(4, 0.01)
    assert make_batching("sync", 4, timeout_ms=500.0) == SyncBatching(4, 0.5)
    assert make_batching("length", 4, max_tokens=32) == LengthAwareBatching(4, 32)
    with pytest.raises(ValueError):
        make_batching("lab")


# ---------------------------------------------------------------- joint band + γ

def _drafters(rng: random.Random, n: int) -> list[Drafter]:
    return [Drafter(f"d{i}", rng.uniform(0.05, 6.0), rng.choice([0.0, 1.0, rng.random()]),
                    rng.choice([0.0, 4.0, 400.0, 4000.0]), rng.uniform(0, 0.05), rng.uniform(0, 0.01))
            for i in range(n)]


def test_joint_solver_beats_brute_force_on_tiny_instances():
    rng = random.Random(11)
    for _ in range(60):
        drafters = _drafters(rng, 2)
        frame, band = rng.choice([0.0, 40.0, 1000.0]), rng.choice([1e5, 1e6, 20e6])
        lo = rng.choice([0, 1])
        hi = lo + rng.randrange(0, 5)
        f, g, u = solve_joint(drafters, band, frame, lo, hi)
        assert sum(f) == pytest.approx(1.0) and min(f) >= 0 and all(lo <= x <= hi for x in g)
        assert u == pytest.approx(objective(drafters, f, g, band, frame), abs=1e-9)
        assert u >= brute_force(drafters, band, frame, lo, hi, step=0.01)[2] - 1e-9
    for _ in range(3):      # three drafters on a coarser grid (γ = 0 with no frame needs no band at all)
        drafters = _drafters(rng, 3)
        assert solve_joint(drafters, 1e6, 0.0, 0, 3)[2] >= brute_force(drafters, 1e6, 0.0, 0, 3, 0.05)[2] - 1e-9


def test_joint_escapes_the_send_nothing_trap():
    # With γ_min = 0 and no frame bytes, γ = 0 sends nothing and needs no band. From all-zero γ the f/γ
    # alternation alone stops at an equal split with γ = (0, 0) (U = 9.6566); the Lagrangian start finds
    # γ = (1, 0) with all the band to d0 (U = 9.6695), better than the brute-force grid's best (9.6665).
    drafters = [Drafter("d0", 4.34, 0.6, 4000.0, 0.016, 0.0019), Drafter("d1", 2.92, 0.78, 4000.0, 0.004, 0.0072)]
    f, g, u = solve_joint(drafters, 1e6, 0.0, 0, 3)
    assert g == [1, 0] and f == pytest.approx([1.0, 0.0]) and u == pytest.approx(9.669472, abs=1e-5)
    assert u >= brute_force(drafters, 1e6, 0.0, 0, 3)[2]


def test_joint_equal_drafters_split_equally():
    for n in (1, 2, 3, 5):
        drafters = [Drafter(f"d{i}", 2.0, 0.8, 4.0, 0.02, 0.003) for i in range(n)]
        f, g, _ = solve_joint(drafters, 1e6, 40.0)
        assert f == pytest.approx([1.0 / n] * n) and len(set(g)) == 1


def test_joint_gives_a_worse_channel_more_band():
    # With a base round time τ > 0, the worse channel's uplink is the larger share of its round, so the
    # proportional-fair optimum gives it more than 1/N (as Zhu's sqrt(D/s) split also does) and that raises Σ log.
    good, bad = Drafter("good", 5.0, 0.8, 4.0, 0.02, 0.003), Drafter("bad", 0.1, 0.8, 4.0, 0.02, 0.003)
    f, g, u = solve_joint([good, bad], 1e6, 40.0)
    assert f[1] > 0.5
    equal_best = max(objective([good, bad], [0.5, 0.5], [a, b], 1e6, 40.0)
                     for a in range(1, 9) for b in range(1, 9))
    assert u > equal_best
    # Observed (and derived in joint.py): with no base or per-token time the split is equal whatever the
    # channels, because log G_k = log μ_k + log f_k - log(bits_k / (B s_k)) separates.
    f0, _, _ = solve_joint([Drafter("good", 5.0, 0.8, 4.0, 0.0, 0.0), Drafter("bad", 0.1, 0.8, 4.0, 0.0, 0.0)],
                           1e6, 40.0)
    assert f0 == pytest.approx([0.5, 0.5])


def test_joint_allocation_policy():
    policy = JointAllocation(band_hz=1e6, frame_bytes=40.0)
    assert policy.allocate([]) == {}
    stations = [Station("a", 5.0), Station("b", 0.1), Station("idle", 3.0, demand=0.0), Station("out", 0.0)]
    with pytest.raises(ValueError):
        policy.allocate(stations)
    policy.update("a", 0.8, 4.0, 0.02, 0.003)
    policy.update("b", 0.8, 4.0, 0.02, 0.003)
    shares = policy.allocate(stations)
    assert set(shares) == {"a", "b", "idle", "out"} and sum(shares.values()) == pytest.approx(1.0)
    assert shares["idle"] == shares["out"] == 0.0
    f, g, _ = solve_joint([Drafter("a", 5.0, 0.8, 4.0, 0.02, 0.003), Drafter("b", 0.1, 0.8, 4.0, 0.02, 0.003)],
                          1e6, 40.0)
    assert [shares["a"], shares["b"]] == pytest.approx(f)
    assert policy.gammas == {"a": g[0], "b": g[1], "idle": 1, "out": 1}
    assert policy.allocate([Station("x", 0.0), Station("y", 1.0, 0.0)]) == {"x": 0.5, "y": 0.5}
    with pytest.raises(ValueError):
        policy.allocate([Station("a", 1.0), Station("a", 2.0)])


def test_decision_times_report_positive_seconds():
    for times in (zhu_dp.decision_times(n=8, repeats=1), joint.decision_times(n=8, repeats=1)):
        assert times and all(math.isfinite(t) and t > 0 for t in times.values())
