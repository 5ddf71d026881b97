"""How long each policy takes to decide (not a pass/fail test: timings on a shared machine are noisy).

Run as `python -m testbed.bench.policies`. A policy runs once per round per AP, so its decision
time should stay far below a round's network time (milliseconds); 64 stations is a crowded cell.
"""
from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Mapping

from testbed.policies import routing, speculation
from testbed.policies.allocation import ALLOCATION_POLICIES, Station, make_allocation
from testbed.policies.joint import Drafter, solve_joint
from testbed.policies.scheduling import SCHEDULERS, DrafterEstimate, make_scheduler
from testbed.policies.speculation import NetworkView, RoundResult, SpeculationPolicy
from testbed.policies.stopping import ThresholdStop
from testbed.policies.timing import best_seconds_per_call
from testbed.policies.zhu_dp import OBJECTIVES, CostModel, Task, plan_dp


def _stations(n: int, rng: random.Random) -> list[Station]:
    # Efficiencies span outage to 64-QAM-like; a few zero demands and outages exercise the exclusion paths.
    return [Station(f"s{i}", 0.0 if rng.random() < 0.05 else rng.uniform(0.1, 6.0),
                    0.0 if rng.random() < 0.05 else rng.uniform(100.0, 20000.0),
                    rng.uniform(0.05, 0.5) if rng.random() < 0.3 else None)
            for i in range(n)]


def allocation_decision_times(n: int = 64, repeats: int = 200, seed: int = 0) -> dict[str, float]:
    """Seconds per allocate() call for each allocation policy, best of 5 batches of `repeats` calls (the
    minimum is the least disturbed by other load on the machine)."""
    stations = _stations(n, random.Random(seed))
    times: dict[str, float] = {}
    for name in ALLOCATION_POLICIES:
        policy = make_allocation(name)
        times[name] = best_seconds_per_call(lambda: policy.allocate(stations), repeats)
    return times


def joint_decision_times(n: int = 64, repeats: int = 20, seed: int = 0) -> dict[str, float]:
    """Seconds per solve_joint call with n drafters and γ in 1..8 (20 MHz, 4 B/token + 40 B frame: token IDs
    over UDP), best of 5 batches of `repeats` calls."""
    rng = random.Random(seed)
    drafters = [Drafter(f"d{i}", rng.uniform(0.2, 6.0), rng.uniform(0.3, 0.95), 4.0, rng.uniform(0.005, 0.05),
                        rng.uniform(0.001, 0.01)) for i in range(n)]
    return {"joint": best_seconds_per_call(lambda: solve_joint(drafters, 20e6, 40.0), repeats)}


def _run_rounds(sessions: list, results: list[RoundResult], net: NetworkView) -> None:
    for r in results:
        for p in sessions:
            p.observe(r)
            p.next_window(r.t, net)


def speculation_decision_times(n_sessions: int = 64, rounds: int = 50, seed: int = 0,
                               policies: Mapping[str, Callable[[], SpeculationPolicy]] | None = None
                               ) -> dict[str, float]:
    """Seconds per decision (observe + next_window, one session's round) for each window policy (default:
    every registered one, AWC included), averaged over n_sessions sessions × rounds rounds, best of 3 passes,
    each over fresh sessions built beforehand. With the default set, also "threshold.should_stop": seconds per
    stop check of the drafter's stop rule on a window growing to 8 tokens."""
    rng = random.Random(seed)
    results = [RoundResult(g, rng.randint(0, g), 0.05 * k, rtt_s=rng.uniform(0.02, 0.2),
                           verify_s=rng.uniform(0.01, 0.05), draft_s=g * rng.uniform(0.002, 0.01),
                           accept_probs=tuple(rng.random() for _ in range(g)) if k % 2 else None)
               for k, g in enumerate(rng.randint(1, 8) for _ in range(rounds))]
    net = NetworkView(rtt_s=None, uplink_mbps=20.0, downlink_mbps=50.0, bytes_per_token_up=8 * 16 + 25)
    times: dict[str, float] = {}
    for name, ctor in (speculation.SPECULATION_POLICIES if policies is None else policies).items():
        passes = iter([[ctor() for _ in range(n_sessions)] for _ in range(3)])
        seconds = best_seconds_per_call(lambda passes=passes: _run_rounds(next(passes), results, net), 1, 3)
        times[name] = seconds / (rounds * n_sessions)
    if policies is None:
        stop, confidences = ThresholdStop(), [rng.uniform(0.7, 1.0) for _ in range(8)]
        seconds = best_seconds_per_call(lambda: [stop.should_stop(confidences[:n]) for n in range(1, 9)],
                                        max(1, n_sessions * rounds // 8), 3)
        times["threshold.should_stop"] = seconds / 8
    return times


def scheduling_decision_times(n: int = 64, repeats: int = 200, seed: int = 0) -> dict[str, float]:
    """Seconds per allocate() call for each budget scheduler with n drafters and C = 4n (GoodSpeed's setups
    have C/N between 2.5 and 7), best of 5 batches."""
    rng = random.Random(seed)
    estimates = [DrafterEstimate(f"d{i}", rng.uniform(0.05, 0.95), rng.uniform(0.5, 8.0)) for i in range(n)]
    times: dict[str, float] = {}
    for name in SCHEDULERS:
        scheduler = make_scheduler(name)
        times[name] = best_seconds_per_call(lambda: scheduler.allocate(estimates, 4 * n), repeats)
    return times


def zhu_dp_decision_times(n: int = 64, repeats: int = 5, seed: int = 0) -> dict[str, float]:
    """Seconds per plan_dp call for n tasks, max_batch = n and 8 lengths (the worst case), best of 5 batches
    of `repeats` calls; one entry per objective."""
    rng = random.Random(seed)
    tasks = [Task(f"t{i}", rng.randrange(16, 512), rng.randrange(16, 256), rng.uniform(0.5, 0.9),
                  rng.uniform(0.0, 0.05)) for i in range(n)]
    cost = CostModel(0.004, 0.0005, 0.02, 0.0002, n, prefill_per_token=1e-6)
    times: dict[str, float] = {}
    for objective in OBJECTIVES:
        times[f"dp-{objective}"] = best_seconds_per_call(lambda: plan_dp(tasks, cost, objective), repeats)
    return times


def channel_step_time(n: int = 64, ticks: int = 200) -> float:
    """Seconds per ChannelPlan.step for one AP with n fading, moving stations (the driver does this per tick)."""
    from testbed.channels.plan import ChannelPlan
    from testbed.net.topology import Topology
    nodes = {"ap": {"role": "ap", "radio": {"band_mhz": 20, "allocation_up": "zhu"}}, "v": {"role": "verifier"}}
    links = [{"a": "ap", "b": "v", "rate_up_mbps": 1000, "rate_down_mbps": 1000}]
    for i in range(n):
        nodes[f"s{i}"] = {"role": "drafter"}
        links.append({"a": f"s{i}", "b": "ap", "kind": "wireless", "rate_up_mbps": 10, "rate_down_mbps": 10,
                      "channel": {"model": "snr", "mobility": {"random_waypoint": {"area_m": [80, 80],
                                                                                   "speed_mps": [1, 2]}},
                                  "shadowing": {"sigma_db": 4}, "fading": {"kind": "rayleigh", "doppler_hz": 10},
                                  "rate": {"mode": "mcs", "table": "wifi"}}})
    plan = ChannelPlan(Topology.model_validate({"name": "bench", "nodes": nodes, "links": links}), 0.1, 0)
    demands = {(f"s{i}", d): 1000.0 + i for i in range(n) for d in ("up", "down")}
    start = time.perf_counter()
    for k in range(ticks):
        plan.step(k, demands)
    return (time.perf_counter() - start) / ticks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.policies",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args(argv)
    n = args.stations
    groups = [
        ("band allocation, per AP decision", {f"allocation {k}": v for k, v in
                                              allocation_decision_times(n, args.repeats).items()}),
        ("joint band + gamma, per AP decision", joint_decision_times(n)),
        ("speculation length, per session round (observe + next window)",
         speculation_decision_times(n)),          # awc is in the registry
        ("verification budget, per round across all sessions", scheduling_decision_times(n)),
        ("routing, per new session", routing.decision_times(n)),
        ("Zhu DP, one plan for all tasks (reused for every round it covers)", zhu_dp_decision_times(n)),
    ]
    print(f"policy decision times, {n} drafters/stations/tasks (best of repeated batches; noisy shared CPU)")
    for title, times in groups:
        print(f"  {title}")
        for name, seconds in times.items():
            flag = "" if seconds < 1e-3 else "   (over 1 ms)"
            print(f"    {name:<32}{seconds * 1e6:10.1f} µs{flag}")
    step = channel_step_time(args.stations)
    print(f"channel step for {args.stations} SNR stations (mobility, shadowing, fading, MCS, zhu split): "
          f"{step * 1e3:.2f} ms per 100 ms tick")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
