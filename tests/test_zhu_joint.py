"""Zhu et al.'s band split under the DP's own objective (testbed/policies/zhu_joint.py, issue 13)."""
from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from testbed.policies.allocation import Station, ZhuClosedForm, equal_split
from testbed.policies.zhu_dp import CostModel, Task, plan_dp
from testbed.policies.zhu_joint import band_for_plan, batch_weights, plan_with_band, upload_times


def weighted_max(demand, eff, batches, weights, fractions):
    return sum(w * max((demand[k] / (fractions[k] * eff[k]) if demand[k] else 0.0) for k in b)
               for b, w in zip(batches, weights))


def instance(rng, n):
    demand = {f"t{i}": rng.choice([0.0, rng.uniform(1e3, 1e5)]) if i else rng.uniform(1e3, 1e5) for i in range(n)}
    eff = {k: rng.uniform(0.5, 6.0) for k in demand}
    return demand, eff


def test_band_for_plan_is_the_optimum_of_its_objective():
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 7)
        demand, eff = instance(rng, n)
        names = list(demand)
        cuts = sorted(rng.sample(range(1, n), rng.randint(0, n - 1))) if n > 1 else []
        batches = [names[a:b] for a, b in zip([0] + cuts, cuts + [n])]
        weights = [rng.uniform(0.5, 10) for _ in batches]
        f = band_for_plan(demand, eff, batches, weights)
        assert sum(f.values()) == pytest.approx(1.0)
        best = weighted_max(demand, eff, batches, weights, f)
        for _ in range(30):          # any other split of the band, near or far, is no better
            g = {k: max(1e-12, v * math.exp(rng.gauss(0, 0.3))) for k, v in f.items()}
            total = sum(g.values())
            g = {k: v / total for k, v in g.items()}
            assert weighted_max(demand, eff, batches, weights, g) >= best * (1 - 1e-9)


def test_its_special_cases_are_the_sum_and_the_max_objectives():
    rng = random.Random(2)
    demand, eff = instance(rng, 5)
    demand = {k: v or 1e4 for k, v in demand.items()}
    singletons = band_for_plan(demand, eff, [[k] for k in demand], [1.0] * 5)
    stations = [Station(k, eff[k], demand[k]) for k in demand]
    assert singletons == pytest.approx(ZhuClosedForm().allocate(stations))     # sum of upload times
    together = band_for_plan(demand, eff, [list(demand)], [1.0])
    times = upload_times(demand, eff, together, 20e6)
    assert max(times.values()) == pytest.approx(min(times.values()))            # everyone done together


def test_weights_count_the_completions_a_batch_delays():
    assert batch_weights([["a", "b"], ["c"], ["d", "e", "f"]], "sum") == [6.0, 4.0, 3.0]
    assert batch_weights([["a", "b"], ["c"]], "makespan") == [1.0, 1.0]


@pytest.mark.parametrize("objective", ["sum", "makespan"])
def test_one_objective_beats_the_sum_split_and_the_equal_split(objective):
    rng = random.Random(5)
    cost = CostModel(0.004, 0.001, 0.02, 0.0005, max_batch=4, lengths=(1, 2, 4), prefill_per_token=1e-5)
    wins = 0
    for _ in range(40):
        n = rng.randint(2, 9)
        demand, eff = instance(rng, n)
        tasks = [Task(k, rng.randint(10, 400), rng.randint(5, 80), rng.uniform(0.3, 0.9)) for k in demand]
        plan, split = plan_with_band(tasks, demand, eff, 5e6, cost, objective)
        assert sum(split.values()) == pytest.approx(1.0)
        for other in (ZhuClosedForm().allocate([Station(k, eff[k], demand[k]) for k in demand]),
                      equal_split([Station(k, eff[k], demand[k]) for k in demand])):
            times = upload_times(demand, eff, other, 5e6)
            rival = plan_dp([replace(t, upload_s=times[t.name]) for t in tasks], cost, objective)
            assert plan.total_latency <= rival.total_latency * (1 + 1e-12)
            wins += plan.total_latency < rival.total_latency * (1 - 1e-6)
    assert wins > 20          # and strictly better on most instances


def test_bad_inputs_say_what_is_wrong():
    cost = CostModel(0.004, 0.001, 0.02, 0.0005, max_batch=4)
    tasks = [Task("a", 10, 5), Task("b", 10, 5)]
    with pytest.raises(ValueError, match="outage"):
        plan_with_band(tasks, {"a": 100.0, "b": 100.0}, {"a": 1.0, "b": 0.0}, 1e6, cost)
    with pytest.raises(ValueError, match="no demand or efficiency for task"):
        plan_with_band(tasks, {"a": 100.0}, {"a": 1.0, "b": 1.0}, 1e6, cost)
    with pytest.raises(ValueError, match="band_hz"):
        plan_with_band(tasks, {"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, 0.0, cost)
    with pytest.raises(ValueError, match="one weight per batch"):
        band_for_plan({"a": 1.0}, {"a": 1.0}, [["a"]], [])
    plan, split = plan_with_band(tasks, {"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 1.0}, 1e6, cost)
    assert split == {"a": 0.5, "b": 0.5} and plan.total_latency > 0
