"""A synchronous run as its iterations (GoodSpeed's time slots), read from its event logs.

One iteration is one verified batch. Its wall time splits as the paper's Fig. 3 does, at the verifier:
- receiving: from the moment the previous verdicts reached every drafter until this batch's verification starts
  (the drafters draft, then their drafts and distributions cross the network; the verifier waits for the last);
- verification: the batch's verify time;
- sending: from the end of verification until the last of its verdicts reached its drafter.
One clock serves every node on the simulator (and the host's on the emulator), so these differences are exact.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from nodes.events import Schedule, Start, Verdict, Verify, load_run, of_type


@dataclass
class Iteration:
    t_end: float                               # verification ended
    verify_s: float
    receiving_s: float
    sending_s: float
    tokens: dict[str, int]                     # drafter -> tokens committed this iteration (x_i(t))
    estimate: dict[str, float] = field(default_factory=dict)   # drafter -> X_i after it (schedule event)
    window: dict[str, int] = field(default_factory=dict)       # drafter -> S_i drafted in it

    @property
    def wall_s(self) -> float:
        return self.receiving_s + self.verify_s + self.sending_s


def iterations(run_dir: Path) -> tuple[list[Iteration], list[str]]:
    """The run's iterations in order, cut to the leading ones in which every drafter took part (the paper's
    N servers in every slot; a run's tail, where servers finish at different times, is left out), and the
    drafters."""
    logs = load_run(run_dir)
    drafters = sorted(logs.drafters)
    received = {(e.session, e.round): e.t for evs in logs.drafters.values() for e in of_type(evs, Verdict)}
    starts = [e.t for evs in logs.drafters.values() for e in of_type(evs, Start)]
    batches: dict[int, list[Verify]] = defaultdict(list)
    for v in of_type(logs.verifiers, Verify):
        batches[v.batch_id].append(v)
    schedules = of_type(logs.verifiers, Schedule)
    out: list[Iteration] = []
    ready = min(starts) if starts else 0.0       # when the drafters could begin the first iteration
    si = 0
    for bid in sorted(batches):
        vs = batches[bid]
        if {v.drafter for v in vs} != set(drafters):
            break
        t_end = max(v.t for v in vs)
        verify_s = max(v.verify_s for v in vs)
        back = max(received.get((v.session, v.round), t_end) for v in vs)
        it = Iteration(t_end, verify_s, max(0.0, t_end - verify_s - ready), back - t_end,
                       {v.drafter: v.tokens for v in vs}, window={v.drafter: v.gamma for v in vs})
        while si < len(schedules) and schedules[si].t < t_end - 1e-12:
            si += 1
        # the scheduler's estimates after this batch: the first schedule event at or after its end, before the next
        if si < len(schedules):
            it.estimate = {k.split("/")[0]: est[1] for k, est in schedules[si].estimates.items()}
        out.append(it)
        ready = back
    return out, drafters


def utility_curve(its: list[Iteration], drafters: list[str]) -> list[float]:
    """U(x̄(T)) = Σ_i log x̄_i(T), x̄_i(T) = (1/T) Σ_{t<=T} x_i(t), for T = 1..len(its) (-inf while a server has
    committed nothing yet)."""
    import math
    sums = dict.fromkeys(drafters, 0)
    curve = []
    for t, it in enumerate(its, 1):
        for d in drafters:
            sums[d] += it.tokens.get(d, 0)
        curve.append(sum(math.log(sums[d] / t) if sums[d] else -math.inf for d in drafters))
    return curve


def settle_iteration(curve: list[float], rel: float = 0.02) -> int | None:
    """The first T after which U(x̄(T)) stays within rel of its final value (None: never, or no finite end)."""
    import math
    if not curve or not math.isfinite(curve[-1]):
        return None
    tol = rel * max(abs(curve[-1]), 1e-9)
    last_out = 0
    for t, u in enumerate(curve, 1):
        if not math.isfinite(u) or abs(u - curve[-1]) > tol:
            last_out = t
    return last_out + 1 if last_out < len(curve) else None


def moving(values: list[float], k: int = 10) -> tuple[list[float], list[float]]:
    """Trailing moving average and standard deviation over k values (fewer at the start)."""
    import statistics
    means, stds = [], []
    for i in range(len(values)):
        w = values[max(0, i - k + 1):i + 1]
        means.append(sum(w) / len(w))
        stds.append(statistics.pstdev(w) if len(w) > 1 else 0.0)
    return means, stds
