"""The simulator's shortcuts for scale give exactly what the plain algorithms give.

NetPlan.path climbs a rooted tree instead of searching the whole network; _Shaper.admit skips its calendar walk
on the gap-free tail; _Shaper.waiting bisects sorted arrivals and dequeues instead of scanning the slots. Both are checked here against the plain versions on random inputs.
"""
from __future__ import annotations

import bisect
import math
import random

import pytest

from testbed.net.netplan import NetPlan
from testbed.net.topology import Topology
from testbed.sim.network import EPS, _Shaper, _Slot


def _dfs_path(plan: NetPlan, src: str, dst: str):
    stack, seen = [(src, [])], {src}
    while stack:
        node, hops = stack.pop()
        if node == dst:
            return hops
        for link, direction, nxt in plan.adjacent.get(node, []):
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, hops + [(link, direction)]))
    raise KeyError


def _random_tree(rng: random.Random, n_switches: int, n_hosts: int) -> dict:
    nodes = {f"s{i}": {"role": "switch"} for i in range(n_switches)}
    links = [{"a": f"s{i}", "b": f"s{rng.randrange(i)}", "rate_up_mbps": 100, "rate_down_mbps": 100}
             for i in range(1, n_switches)]
    for i in range(n_hosts):
        nodes[f"h{i}"] = {"role": "drafter" if i else "verifier"}
        pair = [f"h{i}", f"s{rng.randrange(n_switches)}"]
        rng.shuffle(pair)                       # either end may be the host: directions must follow
        links.append({"a": pair[0], "b": pair[1], "rate_up_mbps": 10, "rate_down_mbps": 20})
    return {"name": "t", "nodes": nodes, "links": links}


@pytest.mark.parametrize("seed", range(5))
def test_path_by_tree_climb_equals_search(seed):
    rng = random.Random(seed)
    plan = NetPlan(Topology.model_validate(_random_tree(rng, 6, 12)), "t")
    hosts = plan.topo.hosts()
    for src in hosts:
        for dst in hosts:
            got = [(l.name, d) for l, d in plan.path(src, dst)]
            assert got == [(l.name, d) for l, d in _dfs_path(plan, src, dst)]


def _admit_by_walk(sh: _Shaper, a: float, service: float, beta: float, floor: float) -> _Slot:
    t = max(a - beta, floor)
    j = bisect.bisect_right(sh.ends, t)
    while j < len(sh.slots) and sh.slots[j].u < t + service - EPS:
        t = max(t, sh.slots[j].e)
        j += 1
    slot = _Slot(t, t + service, a, max(a, t))
    sh.slots.insert(j, slot)
    sh.ends.insert(j, slot.e)
    bisect.insort(sh._arrivals, slot.a)          # waiting()'s bookkeeping, checked on its own below
    bisect.insort(sh._dequeues, slot.q)
    return slot


@pytest.mark.parametrize("seed", range(10))
def test_waiting_by_bisection_equals_the_scan(seed):
    """_Shaper.waiting counts queued segments from two sorted lists; a scan of the slots is the definition."""
    rng = random.Random(seed)
    sh = _Shaper()
    now = 0.0
    for _ in range(3000):
        now += rng.choice([0.0, 0.0, rng.expovariate(3000)])
        a = now + (rng.uniform(-0.002, 0.0) if rng.random() < 0.2 else 0.0)
        sh.admit(a, rng.choice([1e-6, 1e-4, 1.2e-3]), rng.choice([0.0, 3e-3]), a - rng.choice([1.0, 0.0005]))
        for t in (a, now + rng.uniform(0, 0.01)):     # queries at arrivals, as _transmit asks, and later
            assert sh.waiting(t) == sum(1 for s in sh.slots if s.a <= t < s.q)
        if rng.random() < 0.05:
            sh.prune(now - 0.01)
    assert sorted(s.a for s in sh.slots) == sh._arrivals and sorted(s.q for s in sh.slots) == sh._dequeues


@pytest.mark.parametrize("seed", range(10))
def test_admit_tail_shortcut_equals_walk(seed):
    rng = random.Random(seed)
    fast, slow = _Shaper(), _Shaper()
    now = 0.0
    for _ in range(2000):
        now += rng.choice([0.0, 0.0, rng.expovariate(2000)])          # bursts at one instant, and gaps
        a = now + (rng.uniform(-0.002, 0.0) if rng.random() < 0.2 else 0.0)   # some arrive out of order
        service, beta = rng.choice([1e-6, 1e-4, 1.2e-3]), rng.choice([0.0, 3e-3])
        floor = a - rng.choice([1.0, 0.0005])
        got, want = fast.admit(a, service, beta, floor), _admit_by_walk(slow, a, service, beta, floor)
        assert (got.u, got.e, got.q) == (want.u, want.e, want.q)
        if rng.random() < 0.05:
            fast.prune(now - 0.01)
            slow.lookback = fast.lookback
            slow.prune(now - 0.01)




def test_bench_split_times_the_node_cores(tmp_path):
    """`make bench --split`'s floor: time inside the node cores is counted, lies within the run's, and the classes
    are given back after."""
    from nodes.core.drafter import DrafterCore
    from testbed.bench.sim import CoreTimer, run_point
    original = DrafterCore.__dict__["on_frames"]
    with CoreTimer() as timer:
        assert DrafterCore.__dict__["on_frames"] is not original
        got = run_point(6, 1, 1, tmp_path)
    assert DrafterCore.__dict__["on_frames"] is original
    assert got["rounds"] > 0 and got["unfinished"] == 0
    assert 0.0 < timer.total_s < got["wall_s"]


def test_bench_split_figures(tmp_path):
    from testbed.bench.sim import CoreTimer, run_point
    from nodes.core.verifier import VerifierCore
    original = VerifierCore.__dict__["decide"]
    try:
        got = run_point(6, 1, 1, tmp_path, split=True)
    finally:                                  # run_point installs for good (its child process ends after it)
        CoreTimer._restore_all()
    assert VerifierCore.__dict__["decide"] is original
    assert 0.0 < got["cores_share"] < 1.0 and 0.0 < got["cores_us_per_round"] < got["us_per_round"]


@pytest.mark.parametrize("seed", range(20))
def test_floors_equal_the_plain_scan(seed):
    """_Floors.latest is the max end over pairs that arrived by a, as the scan it replaced, through out-of-order
    additions (retransmissions) and forgetting (which may only drop what cannot matter above its horizon)."""
    from testbed.sim.network import _Floors
    rng = random.Random(seed)
    floors, plain = _Floors(), []
    t = 0.0
    for _ in range(400):
        op = rng.random()
        if op < 0.75:
            t += rng.expovariate(50)
            a = t if rng.random() < 0.8 else t - rng.uniform(0, 0.1)        # some arrive "late" in list order
            e = a + rng.uniform(0, 0.05)
            floors.add(a, e)
            plain.append((a, e))
        elif op < 0.85:
            horizon = t - rng.uniform(0, 0.05)
            floors.forget(horizon)
            plain = [(a, e) for a, e in plain if e > horizon]
            # queries from here on only come with arrivals at or after the horizon
            t = max(t, horizon)
        q = t + rng.uniform(-0.02, 0.05)
        if q >= t - 1e-12 or not plain:
            want = max((e for a, e in plain if a <= q), default=-math.inf)
            got = floors.latest(q)
            assert got == want or (want < q and got < q), (got, want)     # a forgotten end below q cannot bind
