"""Zhu et al.'s wireless band split and their batching DP under one objective (issue 13).

The DP (zhu_dp.py) charges a batch the *largest* upload time among its tasks (it cannot start before all its
inputs are in) and weighs that batch's start by the tasks it delays; allocation.ZhuClosedForm minimises the
*sum* of upload times, as if each task were its own batch. Used together they optimise different things. Here
the band split minimises the DP's own objective for a given plan, in closed form, and the two are alternated.

Band split for a plan. Task k uploads D_k bytes at f_k · B · s_k bit/s (f_k its share of band B, s_k its spectral
efficiency), T_k = 8 D_k / (f_k B s_k). Batch m waits for U_m = max_{k in m} T_k, which enters the objective with
weight w_m: for "sum" (Σ completion times) the number of tasks from batch m on (its own and all later ones wait
for it), for "makespan" 1. Minimise Σ_m w_m U_m subject to Σ_k f_k = 1:
- within a batch, band spent on a task that finishes before the batch's slowest is wasted, so at the optimum all
  of a batch's uploads end together: f_k = F_m a_k / A_m with a_k = D_k / s_k, A_m = Σ_{k in m} a_k, and
  U_m = 8 A_m / (F_m B);
- across batches, minimise Σ_m w_m A_m / F_m with Σ F_m = 1: convex, and the Lagrange condition (as in
  ZhuClosedForm) gives F_m ∝ sqrt(w_m A_m).
Every task its own batch with equal weights gives ZhuClosedForm's f_k ∝ sqrt(a_k) (its special case); one batch
gives f_k ∝ a_k (everyone finishes together, the least max_k T_k).

Alternation. Start from the one-batch split, plan by DP with those upload times, re-split for that plan, plan
again, ...: each step cannot increase the objective (the DP is optimal for given uploads, the split for a given
plan), so it stops at the first step that does not improve it (or after `max_steps`).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping, Sequence

from testbed.policies.zhu_dp import CostModel, Plan, Task, evaluate, plan_dp


def batch_weights(batches: Sequence[Sequence[str]], objective: str) -> list[float]:
    """w_m: how many completion times batch m's upload delays ("sum"), or 1 each ("makespan")."""
    if objective == "makespan":
        return [1.0] * len(batches)
    left = sum(len(b) for b in batches)
    out = []
    for b in batches:
        out.append(float(left))
        left -= len(b)
    return out


def band_for_plan(demand: Mapping[str, float], efficiency: Mapping[str, float],
                  batches: Sequence[Sequence[str]], weights: Sequence[float]) -> dict[str, float]:
    """Band fractions minimising Σ_m w_m max_{k in m} D_k / (f_k s_k) with Σ f_k = 1 (see the module text).
    Tasks with no demand get 0; a task with demand and efficiency 0 cannot upload at any share: ValueError."""
    if len(batches) != len(weights):
        raise ValueError("need exactly one weight per batch")
    a: dict[str, float] = {}
    for batch in batches:
        for k in batch:
            d, s = demand[k], efficiency[k]
            if not (math.isfinite(d) and d >= 0 and math.isfinite(s) and s >= 0):
                raise ValueError(f"task {k!r}: demand and efficiency must be finite and >= 0, got {d!r}, {s!r}")
            if d > 0 and s == 0:
                raise ValueError(f"task {k!r}: demand {d:g} with efficiency 0 (outage) can never be uploaded")
            a[k] = d / s if d > 0 else 0.0
    groups = [(sum(a[k] for k in batch), w, batch) for batch, w in zip(batches, weights)]
    scale = sum(math.sqrt(w * total) for total, w, _ in groups)
    out = {k: 0.0 for batch in batches for k in batch}
    if scale == 0:                   # nothing to upload: the module convention of allocation.py, an equal split
        return {k: 1.0 / len(out) for k in out} if out else {}
    for total, w, batch in groups:
        if total > 0:
            share = math.sqrt(w * total) / scale
            for k in batch:
                out[k] = share * a[k] / total
    return out


def upload_times(demand: Mapping[str, float], efficiency: Mapping[str, float], fractions: Mapping[str, float],
                 band_hz: float) -> dict[str, float]:
    """T_k = 8 D_k / (f_k B s_k) in seconds (D in bytes); 0 for no demand, inf for demand without band."""
    out = {}
    for k, d in demand.items():
        rate = fractions.get(k, 0.0) * band_hz * efficiency[k]
        out[k] = 0.0 if d == 0 else (8.0 * d / rate if rate > 0 else math.inf)
    return out


def plan_with_band(tasks: Sequence[Task], demand: Mapping[str, float], efficiency: Mapping[str, float],
                   band_hz: float, cost: CostModel, objective: str = "sum", order: str = "given",
                   max_steps: int = 8) -> tuple[Plan, dict[str, float]]:
    """Batches, lengths and band split under the DP's objective (tasks' own upload_s are replaced). Returns the
    plan (its total_latency under its split) and the split."""
    if not (math.isfinite(band_hz) and band_hz > 0):
        raise ValueError(f"band_hz must be a finite number > 0, got {band_hz!r}")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    names = [t.name for t in tasks]
    missing = [k for k in names if k not in demand or k not in efficiency]
    if missing:
        raise ValueError(f"no demand or efficiency for task(s) {', '.join(missing)}")
    fractions = band_for_plan(demand, efficiency, [names], [1.0])      # one batch: all uploads end together
    best: tuple[Plan, dict[str, float]] | None = None
    for _ in range(max_steps):
        times = upload_times({k: demand[k] for k in names}, efficiency, fractions, band_hz)
        timed = [replace(t, upload_s=times[t.name]) for t in tasks]
        plan = plan_dp(timed, cost, objective, order)
        if best is not None and not plan.total_latency < best[0].total_latency:
            break
        best = (plan, fractions)
        fractions = band_for_plan(demand, efficiency, plan.batches, batch_weights(plan.batches, objective))
        times = upload_times({k: demand[k] for k in names}, efficiency, fractions, band_hz)
        # the re-split plan's own value, for the stopping test of the next step
        resplit = evaluate([replace(t, upload_s=times[t.name]) for t in tasks], plan.batches, plan.lengths,
                           cost, objective)
        if resplit < best[0].total_latency:
            best = (Plan(plan.batches, plan.lengths, resplit), fractions)
        else:
            break
    assert best is not None
    return best
