"""How long each policy takes to decide (not a pass/fail test: timings on a shared machine are noisy).

Run as `python -m testbed.bench.policies`. A policy runs once per round per AP, so its decision
time should stay far below a round's network time (milliseconds); 64 stations is a crowded cell.
"""
from __future__ import annotations

import argparse
import random
import time

from testbed.policies.allocation import ALLOCATION_POLICIES, Station, make_allocation
from testbed.policies.timing import best_seconds_per_call


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
    from testbed.policies import joint, routing, scheduling, speculation, zhu_dp
    n = args.stations
    groups = [
        ("band allocation, per AP decision", {f"allocation {k}": v for k, v in
                                              allocation_decision_times(n, args.repeats).items()}),
        ("joint band + gamma, per AP decision", joint.decision_times(n)),
        ("speculation length, per session round (observe + next window)",
         speculation.decision_times(n)),          # awc is in the registry
        ("verification budget, per round across all sessions", scheduling.decision_times(n)),
        ("routing, per new session", routing.decision_times(n)),
        ("Zhu DP, one plan for all tasks (reused for every round it covers)", zhu_dp.decision_times(n)),
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
