"""Routing across verifiers: session affinity, each policy's placement rule, and a seeded queueing
simulation in which JSQ must beat random placement."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from testbed.policies.routing import (ROUTERS, JSQdRouter, JSQRouter, RandomRouter, RoundRobinRouter,
                                      decision_times, make_router, simulate_routing)

QUEUES = {"v2": 5, "v0": 3, "v1": 1, "v3": 4}


@pytest.mark.parametrize("name", ROUTERS)
def test_affinity_holds_until_release(name):
    router = make_router(name)
    first = router.route("s", QUEUES, 0.0)
    assert router.assigned("s") == first
    # Whatever the queues do later, the session stays where its KV cache is.
    for t in range(1, 50):
        queues = {v: random.Random(t).randrange(10) for v in QUEUES}
        queues[first] = 100
        assert router.route("s", queues, float(t)) == first
    router.release("s")
    assert router.assigned("s") is None
    router.release("s")     # idempotent
    if name == "jsq":
        assert router.route("s", {"v0": 9, "v1": 0}, 60.0) == "v1"   # placed afresh by the policy


@pytest.mark.parametrize("name", ROUTERS)
def test_pinned_verifier_gone_means_fresh_placement(name):
    router = make_router(name)
    first = router.route("s", QUEUES, 0.0)
    rest = {v: q for v, q in QUEUES.items() if v != first}
    assert router.route("s", rest, 1.0) in rest
    assert router.assigned("s") in rest


def test_round_robin_cycles_over_sorted_names_and_affine_rounds_do_not_advance():
    router = RoundRobinRouter()
    placed = [router.route(f"s{k}", QUEUES, 0.0) for k in range(8)]
    assert placed == ["v0", "v1", "v2", "v3"] * 2
    assert router.route("s0", QUEUES, 1.0) == "v0"            # affine, counter untouched
    assert router.route("new", QUEUES, 1.0) == "v0"


def test_jsq_picks_the_min_queue_with_ties():
    router = JSQRouter()
    assert router.route("a", QUEUES, 0.0) == "v1"
    assert router.route("b", {"vb": 2, "va": 2, "vc": 7}, 0.0) == "va"    # ties by name
    rnd = JSQRouter(ties="random", seed=5)
    picks = Counter(rnd.route(f"s{k}", {"vb": 2, "va": 2, "vc": 0, "vd": 0}, 0.0) for k in range(400))
    assert set(picks) == {"vc", "vd"} and min(picks.values()) > 150


def test_jsq_d_samples_d_distinct_and_joins_the_shortest_sampled():
    names = [f"v{i}" for i in range(6)]
    probe, router = JSQdRouter(d=3, seed=9), JSQdRouter(d=3, seed=9)
    queues = {v: q for v, q in zip(names, [4, 0, 7, 2, 2, 5])}
    for k in range(200):
        cand = probe.sample(names)
        assert len(cand) == 3 == len(set(cand)) and set(cand) <= set(names)
        expected = min(cand, key=lambda v: queues[v])
        assert router.route(f"s{k}", queues, 0.0) == expected
    # Sampling without replacement: the unique longest queue can never win against another candidate, and
    # the shortest wins exactly when sampled, with probability d/M (about 1/2 here).
    r2 = JSQdRouter(d=2, seed=1)
    picks = Counter(r2.route(f"s{k}", {"a": 9, "b": 1, "c": 3, "d": 5}, 0.0) for k in range(2000))
    assert "a" not in picks and 0.45 < picks["b"] / 2000 < 0.55
    assert JSQdRouter(d=10).route("x", QUEUES, 0.0) == "v1"    # d >= M is JSQ


def test_random_router_is_seeded_and_covers_all():
    a, b = RandomRouter(seed=3), RandomRouter(seed=3)
    seq = [a.route(f"s{k}", QUEUES, 0.0) for k in range(400)]
    assert seq == [b.route(f"s{k}", QUEUES, 0.0) for k in range(400)]
    assert set(Counter(seq)) == set(QUEUES) and min(Counter(seq).values()) > 60
    # Insertion order of the mapping does not matter.
    c = RandomRouter(seed=3)
    assert seq == [c.route(f"s{k}", dict(sorted(QUEUES.items())), 0.0) for k in range(400)]


def test_queueing_jsq_beats_random():
    rng = random.Random(2024)
    servers, load, jobs = 4, 0.8, 20000
    t, arrivals = 0.0, []
    for _ in range(jobs):
        t += rng.expovariate(load * servers)      # Poisson arrivals; service rate 1 per server
        arrivals.append(t)
    service = [rng.expovariate(1.0) for _ in range(jobs)]
    mean = {}
    for name in ROUTERS:
        waits = simulate_routing(make_router(name), arrivals, service, servers)
        assert len(waits) == jobs and min(waits) >= 0
        mean[name] = sum(waits) / jobs
    # M/M/1 at ρ = 0.8 waits ρ/(1−ρ) = 4 on average; JSQ over 4 servers waits far less.
    assert mean["jsq"] < 0.5 * mean["random"], mean
    assert mean["jsq"] <= mean["jsq-d"] < mean["random"], mean
    assert mean["round-robin"] < mean["random"], mean
    # Same inputs, same seed: the simulation is deterministic.
    assert simulate_routing(make_router("jsq-d", seed=4), arrivals[:500], service[:500], servers) == \
        simulate_routing(make_router("jsq-d", seed=4), arrivals[:500], service[:500], servers)


def test_simulate_routing_by_hand():
    # Two servers, round robin: jobs 0 and 2 share v0, job 2 waits for job 0 to finish.
    waits = simulate_routing(RoundRobinRouter(), [0.0, 0.5, 1.0, 5.0], [3.0, 1.0, 1.0, 1.0], 2)
    assert waits == [0.0, 0.0, 2.0, 0.0]


def test_make_router():
    assert [make_router(n).name for n in ROUTERS] == list(ROUTERS)
    assert make_router("jsq-d", d=3, seed=2).d == 3
    assert make_router("jsq", ties="random").ties == "random"


@pytest.mark.parametrize("make,field", [
    (lambda: make_router("anycast"), "router must be one of"),
    (lambda: make_router("round-robin", seed=1), "seed"),
    (lambda: make_router("jsq", d=2), "'d'"),
    (lambda: JSQdRouter(d=0), "d must"),
    (lambda: JSQRouter(ties="oldest"), "ties"),
    (lambda: RandomRouter(seed=-1), "seed"),
    (lambda: JSQRouter().route("s", {}, 0.0), "queues"),
    (lambda: JSQRouter().route("s", {"v0": -1}, 0.0), r"queues\['v0'\]"),
    (lambda: simulate_routing(JSQRouter(), [0.0], [1.0, 2.0], 2), "service_times"),
    (lambda: simulate_routing(JSQRouter(), [1.0, 0.0], [1.0, 2.0], 2), r"arrivals\[1\]"),
    (lambda: simulate_routing(JSQRouter(), [0.0], [1.0], 0), "n_servers"),
])
def test_bad_inputs_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_decision_times_runs():
    times = decision_times(n=8, repeats=10)
    assert set(times) == set(ROUTERS) and all(t > 0 for t in times.values())
