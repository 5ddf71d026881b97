"""Compute pacing fidelity of a run: did the profiled (synthetic) nodes' compute take what the profile said?

A synthetic node logs one Pace event per compute step (nodes/shell.py): the profile's duration and the one it
took on the wall clock. The shell sleeps to the profile, so realised/profile is >= 1, and it grows when the
machine's CPUs cannot keep every emulated node on time (64 drafters on 2 cores: each step a median 2.7x its
profile). Beside it, the host's CPU load sampled by the runner (Load events, testbed/run/hostload.py).

| key              | definition                                                                        |
|------------------|-----------------------------------------------------------------------------------|
| steps            | Pace events with profile_s > 0                                                    |
| p50, p95         | nearest-rank percentiles of realised_s / profile_s over those steps               |
| drafters, verifier | the same over drafter steps / verifier steps ({steps, p50, p95})               |
| cpu_busy_mean, cpu_busy_max | mean and max of the Load samples' cpu_busy (fraction of all CPUs)      |
| distorted        | p50 > 1.05 or p95 > 1.20: the run's figures describe an overloaded host, not the profile |
| compute          | "profiled" (every node logged Pace), "real" (none did), "mixed"                   |
"""
from __future__ import annotations

import math

from nodes.events import Pace, RunLogs, of_type

P50_LIMIT = 1.05      # realised/profile: the median step at most 5 % late ...
P95_LIMIT = 1.20      # ... and the 95th percentile at most 20 %


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


def ratios(events) -> list[float]:
    return [e.realised_s / e.profile_s for e in of_type(events, Pace) if e.profile_s > 0]


def _summary(rs: list[float]) -> dict:
    return {"steps": len(rs), "p50": _pct(rs, 50), "p95": _pct(rs, 95)}


def pacing(run: RunLogs) -> dict:
    per_drafter = {name: _summary(ratios(evs)) for name, evs in run.drafters.items()}
    drafter_rs = [r for evs in run.drafters.values() for r in ratios(evs)]
    verifier_rs = ratios(run.verifiers)
    every = drafter_rs + verifier_rs
    out = {**_summary(every), "drafters": _summary(drafter_rs), "verifier": _summary(verifier_rs),
           "per_drafter": per_drafter}
    busy = [e.cpu_busy for e in run.load]
    out["cpu_busy_mean"] = sum(busy) / len(busy) if busy else None
    out["cpu_busy_max"] = max(busy) if busy else None
    out["cpus"] = run.load[0].cpus if run.load else None
    logged = [bool(of_type(evs, Pace)) for evs in run.drafters.values()] + [bool(of_type(run.verifiers, Pace))]
    out["compute"] = "profiled" if all(logged) else "real" if not any(logged) else "mixed"
    why = []
    if out["p50"] is not None and out["p50"] > P50_LIMIT:
        why.append(f"median step took {out['p50']:.2f}x its profile (limit {P50_LIMIT:g})")
    if out["p95"] is not None and out["p95"] > P95_LIMIT:
        why.append(f"p95 step took {out['p95']:.2f}x its profile (limit {P95_LIMIT:g})")
    out["distorted"] = bool(why)
    out["why"] = "; ".join(why) or None
    return out


def summary_lines(p: dict) -> list[str]:
    """summary.md's lines on compute: what it was, how faithfully it was paced, how loaded the host was."""
    load = "" if p["cpu_busy_mean"] is None else \
        f"; host CPU busy {100 * p['cpu_busy_mean']:.0f} % mean, {100 * p['cpu_busy_max']:.0f} % max of {p['cpus']} CPUs"
    if p["compute"] == "real":
        return [f"- compute: real models on this machine (not profiled){load}"]
    lines = [f"- compute: {p['compute']} — synthetic nodes paced to their latency profiles; realised/profile "
             f"p50 {_f(p['p50'])}, p95 {_f(p['p95'])} over {p['steps']} steps (drafters p50 {_f(p['drafters']['p50'])}"
             f" p95 {_f(p['drafters']['p95'])}, verifier p50 {_f(p['verifier']['p50'])} p95 {_f(p['verifier']['p95'])})"
             f"{load}"]
    if p["distorted"]:
        lines.append(f"- **compute pacing distorted**: {p['why']}; this machine could not run the modelled compute on "
                     f"time, so the figures understate the modelled system (fewer drafters, or a bigger machine)")
    return lines


def _f(x) -> str:
    return "–" if x is None else f"{x:.3f}"
