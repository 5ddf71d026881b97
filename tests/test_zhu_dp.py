# Over 400 lines: it keeps verbatim copies of the original DP and joint solver as bit-for-bit references.
"""Zhu et al.'s batching + speculation-length DP and the joint band/γ solver (the batching rules, zhu's online
use of the DP included, are in test_batching.py)."""
from __future__ import annotations

import dataclasses
import math
import random

import pytest

from testbed.bench.policies import joint_decision_times, zhu_dp_decision_times
from testbed.policies import acceptance, zhu_dp
from testbed.policies.allocation import Station
from testbed.policies.joint import Drafter, JointAllocation, brute_force, objective, solve_joint
from testbed.policies.zhu_dp import CostModel, Plan, Task, evaluate, plan_dp, plan_exhaustive

import numpy as np


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


# The original (pre-vectorisation) plan_dp, kept verbatim as the reference the optimised one must equal bit
# for bit: the same plan, lengths and total_latency (itself _simulate of the plan).
def _reference_plan_dp(tasks, cost, objective="sum", order="given"):
    zhu_dp._check_objective(objective)
    seq = zhu_dp._ordered(tasks, order)
    K = len(seq)
    if K == 0:
        return Plan((), (), 0.0)
    ls = sorted(set(cost.lengths))
    r = np.array([[zhu_dp.rounds(t, l) for l in ls] for t in seq], dtype=float)
    maxb = min(cost.max_batch, K)
    pq = np.array([[cost.stages(b, l) for l in ls] for b in range(maxb + 1)])
    period, tail = pq[..., 0], pq[..., 1]
    f = [0.0] + [math.inf] * K
    back = [(0, 0)] * (K + 1)
    for k in range(1, K + 1):
        rmax = np.zeros(len(ls))
        rsum = np.zeros(len(ls))
        upload = 0.0
        longest_in = 0
        for j in range(k - 1, k - 1 - maxb, -1):
            if j < 0:
                break
            b = k - j
            rmax = np.maximum(rmax, r[j])
            rsum = rsum + r[j]
            upload = max(upload, seq[j].upload_s)
            longest_in = max(longest_in, seq[j].input_len)
            lead = upload + cost.prefill_per_token * b * longest_in + tail[b]
            service = lead + rmax * period[b]
            if objective == "sum":
                c = (K - k) * service + b * lead + rsum * period[b]
            else:
                c = service
            li = int(np.argmin(c))
            total = f[j] + float(c[li])
            if total < f[k]:
                f[k], back[k] = total, (j, li)
    batches, lengths = [], []
    k = K
    while k > 0:
        j, li = back[k]
        batches.append(seq[j:k])
        lengths.append(ls[li])
        k = j
    return zhu_dp._plan(batches[::-1], lengths[::-1], cost, objective)


def _big_instance(rng: random.Random) -> tuple[list[Task], CostModel]:
    """Larger and rougher than _instance: up to 80 tasks, long windows, extreme and exactly-integer O/μ."""
    k = rng.choice([rng.randint(1, 8), rng.randint(9, 40), rng.randint(41, 80)])
    tasks = [Task(f"t{i}", rng.randrange(0, 600),
                  rng.choice([rng.randrange(1, 300), rng.randrange(1, 8), 10 ** rng.randint(0, 5)]),
                  rng.choice([0.0, 1.0, 0.5, rng.random(), round(rng.random(), 1), 1 - 1e-12]),
                  rng.choice([0.0, 0.1, rng.uniform(0, 0.3)])) for i in range(k)]
    cost = CostModel(draft_a=rng.choice([0.0, rng.uniform(0, 0.02)]), draft_b=rng.uniform(0, 0.01),
                     verify_a=rng.choice([0.0, rng.uniform(0, 0.1)]),
                     verify_b=rng.choice([0.0, rng.uniform(0, 0.01)]),
                     max_batch=rng.randint(1, k + 3), lengths=tuple(rng.sample(range(0, 16), rng.randint(1, 9))),
                     prefill_per_token=rng.choice([0.0, rng.uniform(0, 1e-3)]), pipelined=rng.random() < 0.7)
    return tasks, cost


def test_dp_equals_the_reference_implementation_bit_for_bit():
    rng = random.Random(64)
    checked = 0
    for _ in range(150):
        tasks, cost = _big_instance(rng)
        order = rng.choice(["given", "length"])
        for obj in zhu_dp.OBJECTIVES:
            fast, ref = plan_dp(tasks, cost, obj, order), _reference_plan_dp(tasks, cost, obj, order)
            assert fast == ref
            assert math.copysign(1.0, fast.total_latency) == math.copysign(1.0, ref.total_latency)
            checked += 1
    assert checked == 300
    # the worst case of zhu_dp_decision_times: 64 tasks, max_batch 64, 8 lengths
    rng = random.Random(0)
    tasks = [Task(f"t{i}", rng.randrange(16, 512), rng.randrange(16, 256), rng.uniform(0.5, 0.9),
                  rng.uniform(0.0, 0.05)) for i in range(64)]
    cost = CostModel(0.004, 0.0005, 0.02, 0.0002, 64, prefill_per_token=1e-6)
    for obj in zhu_dp.OBJECTIVES:
        assert plan_dp(tasks, cost, obj) == _reference_plan_dp(tasks, cost, obj)


def test_rounds_table_equals_rounds():
    rng = random.Random(5)
    for _ in range(400):
        seq = [Task(f"t{i}", 0, rng.choice([rng.randrange(1, 400), rng.randrange(1, 20), 10 ** rng.randint(0, 6)]),
                    rng.choice([0.0, 1.0, rng.random(), round(rng.random(), 2), 1 - 10.0 ** -rng.randint(1, 15),
                                rng.random() * 1e-3, 0.5]))
               for i in range(rng.randint(1, 40))]
        ls = sorted(set(rng.sample(range(0, 40), rng.randint(1, 10))))
        table = zhu_dp._rounds_table(seq, ls)
        assert table.tolist() == [[float(zhu_dp.rounds(t, l)) for t in seq] for l in ls]
    # O/μ exactly an integer (μ = 1.5, 1.75, 1.875 at α = 1/2): no spurious extra round
    seq = [Task("a", 0, 3, 0.5), Task("b", 0, 7, 0.5), Task("c", 0, 15, 0.5), Task("d", 0, 6, 0.5)]
    assert zhu_dp._rounds_table(seq, [0, 1, 2, 3]).tolist() == [[float(zhu_dp.rounds(t, l)) for t in seq]
                                                               for l in [0, 1, 2, 3]]


TWO = [Task("A", 10, 6, 0.5, 0.1), Task("B", 20, 3, 0.0, 0.2)]
COST2 = CostModel(0.01, 0.002, 0.05, 0.001, max_batch=2, lengths=(1, 2), prefill_per_token=1e-4)


def test_evaluate_by_hand():
    # Together at l=2 (b=2): whole d = 2(0.01+0.004) = 0.028, v = 0.05+0.001*2*3 = 0.056, d + v = 0.084. Halves
    # of one task: d = 0.024, v = 0.053, cycle c = max(0.048, 0.106, 0.077, 0.077) = 0.106 >= 0.084: the fixed
    # verify cost dominates, so no split: p = 0.084, q = 0.
    # μ_A = (1-0.5^3)/0.5 = 1.75 -> r_A = ceil(6/1.75) = 4; α_B = 0 -> μ = 1, r_B = 3.
    # lead = max upload 0.2 + 1e-4*2*20 = 0.204; C_A = 0.204+4*0.084 = 0.540, C_B = 0.204+3*0.084 = 0.456
    assert evaluate(TWO, [["A", "B"]], [2], COST2, "sum") == pytest.approx(0.996)
    assert evaluate(TWO, [["A", "B"]], [2], COST2, "makespan") == pytest.approx(0.540)
    assert not COST2.split(2, 2)
    # A alone at l=1: p = 0.012 + 0.052, r_A = ceil(6/1.5) = 4, lead 0.101 -> C_A = 0.101 + 4*0.064 = 0.357;
    # then B alone at l=2: p = 0.024 + 0.053 = 0.077, lead 0.202 -> C_B = 0.357+0.202+3*0.077 = 0.790.
    assert evaluate(TWO, [["A"], ["B"]], [1, 2], COST2, "sum") == pytest.approx(0.357 + 0.790)
    assert evaluate(TWO, [["A"], ["B"]], [1, 2], COST2, "makespan") == pytest.approx(0.790)
    # No pipelining: the same here (the batch ran whole anyway).
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
    assert acceptance.mu(3, 1.0) == 4 and acceptance.mu(3, 0.0) == 1 and acceptance.mu(1, 0.5) == 1.5
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


# ---------------------------------------------------------------- joint band + γ

def _drafters(rng: random.Random, n: int) -> list[Drafter]:
    return [Drafter(f"d{i}", rng.uniform(0.05, 6.0), rng.choice([0.0, 1.0, rng.random()]),
                    rng.choice([0.0, 4.0, 400.0, 4000.0]), rng.uniform(0, 0.05), rng.uniform(0, 0.01))
            for i in range(n)]


# The original (pre-optimisation) solver, kept verbatim as the reference the optimised one must equal bit for
# bit: the same fractions, windows and U.
def _ref_arrays(drafters, band_hz, frame_bytes, grid):
    if not (math.isfinite(band_hz) and band_hz > 0) or not frame_bytes >= 0:
        raise ValueError("band_hz must be finite and > 0, frame_bytes >= 0")
    for d in drafters:
        if not (d.efficiency > 0 and 0 <= d.alpha <= 1 and d.bytes_per_token >= 0 and d.base_s >= 0
                and d.per_token_s >= 0 and all(map(math.isfinite, (d.efficiency, d.bytes_per_token,
                                                                   d.base_s, d.per_token_s)))):
            raise ValueError(f"drafter {d.name!r}: need efficiency > 0, alpha in [0, 1], finite values >= 0")
    alpha = np.array([d.alpha for d in drafters])[:, None]
    g = grid[None, :].astype(float)
    safe = np.where(alpha >= 1, 0.0, alpha)
    mu = np.where(alpha >= 1, g + 1, (1 - safe ** (g + 1)) / (1 - safe))
    a = np.array([d.base_s for d in drafters])[:, None] + g * np.array([d.per_token_s for d in drafters])[:, None]
    c = np.array([d.bytes_per_token for d in drafters])[:, None]
    s = np.array([d.efficiency for d in drafters])[:, None]
    dd = 8 * (frame_bytes + g * c) / (band_hz * s)
    if np.any(a + dd <= 0):
        raise ValueError("every drafter needs a positive round time (base_s, per_token_s or bytes > 0)")
    return np.log(mu), a, dd


def _ref_scores(logmu, a, dd, f):
    f = f[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        upload = np.where(dd == 0, 0.0, dd / f)
    return logmu - np.log(a + upload)


def _ref_best_fractions(a, dd):
    need = dd > 0
    if not need.any():
        return np.full(len(dd), 1.0 / len(dd))
    a, d = a[need], dd[need]

    def fractions(lam):
        return 2 * d / (lam * d + np.sqrt((lam * d) ** 2 + 4 * lam * a * d))

    lo, hi = float(np.max(d / (a + d))), float(len(d))
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if fractions(mid).sum() > 1:
            lo = mid
        else:
            hi = mid
        if hi <= lo * (1 + 1e-15):
            break
    f = fractions(math.sqrt(lo * hi))
    out = np.zeros(len(dd))
    out[need] = f / f.sum()
    return out


def _ref_dual_starts(logmu, a, dd):
    def choose(lam):
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(dd > 0, 2 * dd / (lam * dd + np.sqrt((lam * dd) ** 2 + 4 * lam * a * dd)), 0.0)
            value = logmu - np.log(a + np.where(dd > 0, dd / f, 0.0)) - lam * f
        gi = np.argmax(value, axis=1)
        return gi, float(f[np.arange(len(gi)), gi].sum())

    lo, hi = 1e-12, float(len(dd))
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if choose(mid)[1] > 1:
            lo = mid
        else:
            hi = mid
        if hi <= lo * (1 + 1e-12):
            break
    return [choose(lo)[0], choose(hi)[0]]


def _reference_solve_joint(drafters, band_hz, frame_bytes=0.0, gamma_min=1, gamma_max=8, max_iter=100):
    if not 0 <= gamma_min <= gamma_max:
        raise ValueError(f"need 0 <= gamma_min <= gamma_max, got {gamma_min}, {gamma_max}")
    n = len(drafters)
    if n == 0:
        return [], [], 0.0
    grid = np.arange(gamma_min, gamma_max + 1)
    logmu, a, dd = _ref_arrays(drafters, band_hz, frame_bytes, grid)
    rows = np.arange(n)
    equal = np.full(n, 1.0 / n)
    starts = [np.full(n, i) for i in sorted({0, len(grid) // 3, 2 * len(grid) // 3, len(grid) - 1})]
    starts.append(np.argmax(_ref_scores(logmu, a, dd, equal), axis=1))
    starts += _ref_dual_starts(logmu, a, dd)
    best = None
    for gi in starts:
        for _ in range(max_iter):
            f = _ref_best_fractions(a[rows, gi], dd[rows, gi])
            new = np.argmax(_ref_scores(logmu, a, dd, f), axis=1)
            if np.array_equal(new, gi):
                break
            gi = new
        f = _ref_best_fractions(a[rows, gi], dd[rows, gi])
        value = float(_ref_scores(logmu, a, dd, f)[rows, gi].sum())
        if best is None or value > best[0]:
            best = (value, f, gi)
    return best[1].tolist(), [int(grid[i]) for i in best[2]], best[0]


def _joint_instance(rng: random.Random):
    """Drafters and settings from sparse to crowded cells, including what stresses the solver: γ = 0 with no
    frame (nothing to send), α of 0 and 1, no bytes at all, no base or per-token time, very unequal channels."""
    n = rng.choice([1, 2, 3, 5, 8, 16, 32, 64, rng.randint(1, 80)])
    drafters = [Drafter(f"d{i}", rng.choice([rng.uniform(0.05, 6.0), rng.uniform(0.2, 6.0), 2.0]),
                        rng.choice([0.0, 1.0, rng.random(), rng.uniform(0.3, 0.95)]),
                        rng.choice([0.0, 4.0, 400.0, 4000.0, 4.0]),
                        rng.choice([0.0, rng.uniform(0, 0.05), rng.uniform(0.005, 0.05)]),
                        rng.choice([0.0, rng.uniform(0, 0.01), rng.uniform(0.001, 0.01)])) for i in range(n)]
    if rng.random() < 0.1:                                  # identical drafters: ties everywhere
        drafters = [Drafter(f"d{i}", 2.0, 0.8, 4.0, 0.02, 0.003) for i in range(n)]
    lo = rng.choice([0, 1])
    return (drafters, rng.choice([1e5, 1e6, 20e6]), rng.choice([0.0, 40.0, 1000.0]), lo,
            lo + rng.randrange(0, 9))


def test_joint_equals_the_reference_implementation_bit_for_bit():
    rng = random.Random(2025)
    checked = 0
    while checked < 120:
        drafters, band, frame, lo, hi = _joint_instance(rng)
        try:
            ref = _reference_solve_joint(drafters, band, frame, lo, hi)
        except ValueError:
            with pytest.raises(ValueError):
                solve_joint(drafters, band, frame, lo, hi)
            continue
        fast = solve_joint(drafters, band, frame, lo, hi)
        assert fast[1] == ref[1]
        assert np.array_equal(np.array(fast[0]), np.array(ref[0]))
        assert fast[2] == ref[2] or (math.isnan(fast[2]) and math.isnan(ref[2]))
        checked += 1
    # the joint_decision_times instance, and a short alternation
    rng = random.Random(0)
    drafters = [Drafter(f"d{i}", rng.uniform(0.2, 6.0), rng.uniform(0.3, 0.95), 4.0, rng.uniform(0.005, 0.05),
                        rng.uniform(0.001, 0.01)) for i in range(64)]
    assert solve_joint(drafters, 20e6, 40.0) == _reference_solve_joint(drafters, 20e6, 40.0)
    for max_iter in (0, 1, 2):
        assert (solve_joint(drafters[:9], 1e6, 0.0, 0, 5, max_iter)
                == _reference_solve_joint(drafters[:9], 1e6, 0.0, 0, 5, max_iter))


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
    for times in (zhu_dp_decision_times(n=8, repeats=1), joint_decision_times(n=8, repeats=1)):
        assert times and all(math.isfinite(t) and t > 0 for t in times.values())


def test_a_batch_never_overlaps_with_itself():
    """Issue 13: one task, d = v = 10 ms, 20 rounds. Its next draft needs its verdict: 0.40 s at least (the
    model charged R·max(d, v) + min(d, v) = 0.21 s before)."""
    cost = CostModel(draft_a=0.01, draft_b=0.0, verify_a=0.01, verify_b=0.0, max_batch=4, lengths=(1,))
    one = [Task("x", 0, 20, alpha=0.0)]                   # alpha 0: one token a round, 20 rounds
    assert evaluate(one, [["x"]], [1], cost) == pytest.approx(0.40)
    assert plan_dp(one, cost).total_latency == pytest.approx(0.40)
    # and no plan of several tasks finishes a task faster than its own chain of rounds
    rng = random.Random(7)
    for _ in range(200):
        cost = CostModel(rng.uniform(0, 0.02), rng.uniform(0, 0.01), rng.uniform(0, 0.05), rng.uniform(0, 0.005),
                         max_batch=rng.randint(1, 6), lengths=(1, 2, 4), pipelined=rng.random() < 0.8)
        tasks = [Task(f"t{i}", rng.randint(0, 50), rng.randint(1, 40), rng.uniform(0, 1)) for i in range(rng.randint(1, 6))]
        plan = plan_dp(tasks, cost, objective="makespan")
        for batch, l in zip(plan.batches, plan.lengths):
            d, v = cost._stage(1, l)                       # the cheapest a round of any task can be
            for name in batch:
                task = next(t for t in tasks if t.name == name)
                assert plan.total_latency >= zhu_dp.rounds(task, l) * (d + v) - 1e-12


def test_pipelining_overlaps_two_halves_of_a_batch_when_per_task_costs_dominate():
    # per-task costs only: whole batch of 2 at l=1: d = 0.010, v = 0.010 -> 0.020 a round; halves of one task:
    # d = v = 0.005, cycle 0.010, verdicts by max(0.010, 0.010) + 0.005 = 0.015 after a round starts.
    cost = CostModel(draft_a=0.0, draft_b=0.005, verify_a=0.0, verify_b=0.0025, max_batch=2, lengths=(1,))
    assert cost.split(2, 1) and cost.stages(2, 1) == pytest.approx((0.010, 0.005))
    two = [Task("a", 0, 10, alpha=0.0), Task("b", 0, 10, alpha=0.0)]
    assert evaluate(two, [["a", "b"]], [1], cost, "makespan") == pytest.approx(9 * 0.010 + 0.015)
    serial = dataclasses.replace(cost, pipelined=False)
    assert not serial.split(2, 1)
    assert evaluate(two, [["a", "b"]], [1], serial, "makespan") == pytest.approx(10 * 0.020)
    # the periodic schedule's bound holds against a round-by-round simulation of the two halves
    assert _two_halves(0.005, 0.005, 0.005, 0.005, 10) == pytest.approx(9 * 0.010 + 0.015)
    rng = random.Random(3)
    for _ in range(300):
        da, va, db, vb = (rng.uniform(0.001, 0.02) for _ in range(4))
        rounds = rng.randint(1, 12)
        c = max(da + db, va + vb, da + va, db + vb)
        assert _two_halves(da, va, db, vb, rounds) <= (rounds - 1) * c + max(da + db, da + va) + vb + 1e-12


def _two_halves(da, va, db, vb, rounds):
    """Earliest finish of two task batches alternating on one drafter and one verifier, A first on each: every
    draft needs the batch's previous verdict; each stage serves one batch at a time."""
    free_d = free_v = 0.0
    verdict = {"A": 0.0, "B": 0.0}
    for _ in range(rounds):
        for x, d, v in (("A", da, va), ("B", db, vb)):
            drafted = max(free_d, verdict[x]) + d
            free_d = drafted
            verdict[x] = free_v = max(free_v, drafted) + v
    return max(verdict.values())
