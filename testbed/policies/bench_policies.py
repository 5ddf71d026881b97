"""How long each policy takes to decide (not a pass/fail test: timings on a shared machine are noisy).

Run as `python -m testbed.policies.bench_policies`. A policy runs once per round per AP, so its decision
time should stay far below a round's network time (milliseconds); 64 stations is a crowded cell.
"""
from __future__ import annotations

import argparse
import random
import time

from .allocation import ALLOCATION_POLICIES, Station, make_allocation


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
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats):
                policy.allocate(stations)
            best = min(best, (time.perf_counter() - start) / repeats)
        times[name] = best
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.policies.bench_policies",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args(argv)
    times = allocation_decision_times(args.stations, args.repeats)
    print(f"{'policy':<14}µs per decision ({args.stations} stations)")
    for name, seconds in times.items():
        print(f"{name:<14}{seconds * 1e6:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
