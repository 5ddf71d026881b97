# Over 400 lines on purpose: its docstring is the definition of every metric column, next to the code computing it.
"""Metrics of one run, computed afterwards from its event logs only (`RUN/events/*.jsonl`).

    m = compute(run_dir); write(run_dir, m); write_summary(run_dir, manifest, m, plots.plot_names(run_dir))

Inputs. The run's event logs, read as the typed events of nodes/events.py (`load_run`); `t` is on one shared
clock (seconds since the epoch). A drafter log (`events/<name>.jsonl`, name = its `node` field) has `start`
(per session, `bytes_out`), `draft` (per round >= 1: `gamma`, `draft_s`, `bytes_out`), `verdict` (per round,
round 0 = the prefill that returns the first token: `gamma`, `accepted`, `tokens` = output tokens newly
committed, `rtt_s`, `queue_s`, `verify_s`, `batch`, `hit`, `wasted`, `bytes_in`), `finish` (per session) and
`done`; the verifier's (`verifier.jsonl`) has one `verify` per verified request (`batch_id`, `batch`,
`verify_s`, `tokens`).

Definitions. "Rounds" are a drafter's verdicts with round >= 1 (round 0 is the prefill, not drafted);
"speculative rounds" are rounds with gamma > 0 (gamma = the window actually sent; gamma 0 = autoregressive).
Sums and counts are per drafter; the `total` row pools every drafter's events (not an average of rows).

| column                  | definition                                                                                   |
|-------------------------|----------------------------------------------------------------------------------------------|
| tokens                  | Σ verdict `tokens` (output tokens, cut at max_new / EOS as the verifier cut them)            |
| requests_started        | number of `start` events                                                                     |
| requests_completed      | number of `finish` events                                                                    |
| window_s                | last verdict t − first start t (total: over all drafters)                                     |
| goodput_tps             | tokens / window_s; 0 when tokens = 0                                                         |
| rounds, spec_rounds     | verdicts with round >= 1; those with gamma > 0                                               |
| mean_gamma              | Σ gamma / rounds (γ̄)                                                                         |
| proposed, accepted      | Σ gamma, Σ accepted over speculative rounds                                                  |
| acceptance_rate         | accepted / proposed                                                                          |
| alpha_hat               | per-position acceptance α̂ = accepted / (accepted + #spec rounds with accepted < gamma)       |
| mean_accepted_len       | accepted / spec_rounds                                                                       |
| tokens_per_round        | Σ tokens of rounds / rounds (1 for autoregressive decoding)                                  |
| ttft_*_s                | per request: t(first verdict with tokens > 0, i.e. the round-0 verdict) − t(start)          |
| tpot_*_s                | per completed request with n >= 2 tokens: (t(last verdict) − t(first-token verdict)) / (n−1) |
| e2e_*_s                 | per completed request: t(finish) − t(start)                                                  |
| slo_ttft_attainment     | share of started requests whose TTFT <= slo.ttft_ms (no first token: missed)                |
| slo_tpot_attainment     | share of completed requests with n >= 2 tokens whose TPOT <= slo.tpot_ms                    |
| slo_attainment          | share of started requests that completed within both (TPOT vacuous for n < 2); DSD-Sim's    |
|                         | SLO attainment, its thresholds 300 ms and 35 ms the defaults (experiment field `slo`)       |
| slo_goodput_rps         | requests within both SLOs / window_s (DSD-Sim's "goodput": SLO-meeting requests per second) |
| *_p50/p95/p99, *_mean   | nearest-rank percentile: sorted[ceil(p/100 · N) − 1]; arithmetic mean                       |
| rtt_mean_s, queue_mean_s, verify_mean_s | mean verdict rtt_s / queue_s / verify_s over all verdicts                   |
| bytes_out, bytes_in     | Σ start+draft `bytes_out`; Σ verdict `bytes_in` (the drafter's frames, both ways)           |
| bytes_per_token         | (bytes_out + bytes_in) / tokens                                                              |
| hits, hit_rate          | Σ verdict `hit`; hits / spec_rounds (proactive drafts that became the next window)          |
| wasted                  | Σ verdict `wasted` (drafted tokens thrown away)                                              |
| mu                      | μ(γ̄, α̂) = (1 − α̂^(γ̄+1)) / (1 − α̂); γ̄ + 1 when α̂ = 1; 1 when γ̄ = 0 (autoregressive)          |
| t_round_s               | median over rounds of (verdict rtt_s + min(draft_s, t(draft) − t(previous verdict))): the  |
|                         | round trip plus the drafting on the critical path. `draft_s` alone also counts proactive    |
|                         | drafting done while the previous window was in flight, which overlaps that round's rtt.     |
| bound_session_tps       | μ / t_round_s: goodput of one session doing back-to-back rounds (total: none)               |
| concurrency             | time-mean number of open sessions: Σ_sessions (end − start) / window_s, end = finish t      |
|                         | (or the session's last verdict t for an unfinished one)                                      |
| bound_tps               | bound_session_tps × concurrency (total: Σ over drafters of bound_tps × window_s, / window_s) |
| measured_over_bound     | goodput_tps / bound_tps  (= goodput per concurrent session / μ(γ̄,α̂)/T_round)              |
| jain (total)            | (Σ x_i)² / (n Σ x_i²) over the n drafters' goodput_tps x_i                                  |
| sum_log_goodput (total) | Σ ln x_i (natural log of tokens/s); none if some x_i = 0                                    |
| verifier_batches        | distinct verify `batch_id`s                                                                  |
| verifier_mean_batch     | mean of `batch` over distinct batch_ids                                                      |
| verifier_busy_fraction  | (Σ verify_s over distinct batches + Σ draft_s of the windows drafted at the verifier, fused |
|                         | mode) / (last verify t − min(first start t, first batch start)), mean per verifier           |
| verifier_fused_rounds   | verify events whose window the verifier drafted itself (DSD's fused mode)                    |
| verifier_tokens         | Σ verify `tokens` (a cross-check: equals `tokens` in a complete run)                         |
| pace_p50, pace_p95      | compute pacing: realised/profile of profiled compute steps (testbed/run/pacing.py); total:   |
|                         | every node's steps; none for real models. metrics.json `pacing` has the rest                 |
| cpu_busy_mean (total)   | mean fraction of the host's CPUs busy during the run (the runner's Load samples)             |
| client_requests (total) | users' clients (workload.arrivals clients): requests answered (client `answer` events)      |
| client_latency_*_s      | per answered request: its `answer` latency_s (ANSWER arrival − ASK sending, client's clock)  |
| client_total_latency_s  | Σ client latencies: Zhu et al.'s total latency (sum of completion times; with every request |
|                         | sent at t = 0, the sum of their completion times)                                           |
| upload_mean_s           | mean over requests of (the drafter's `ask` t − the client's `ask` t): the upload             |

The bound is the closed-form model of speculative decoding (μ tokens per round, one round per T_round), not a
hard ceiling: rounds faster than the median, or several sessions' rounds sharing one verifier batch, can put
measured/bound a little above 1. Below 1 it shows time outside the modelled rounds: prefills, sessions waiting
for the drafter's model or for a slot, the tail of a session cut at max_new, start-up and drain.

Why α̂ and not acceptance_rate as the per-position acceptance. Verification stops at the first rejection, so
positions after it are never tested, yet acceptance_rate counts them as failures: with i.i.d. per-position
acceptance α its expectation is (α + α² + … + α^γ)/γ < α (0.59 for α = 0.8, γ = 4), and it falls as γ grows.
α̂ counts each tested position once: every accepted token is a success and each round that stopped early
contributed exactly one failure; rounds accepting all γ are censored (no failure seen). It is the maximum
likelihood estimate of α under that model, consistent whatever γ is.

Faults (an experiment's `faults:`, testbed/channels/faults.py): metrics.json `faults` (only when the experiment has
some) has, per occurrence logged (its `fault` start and end events in events/links.jsonl), the total goodput
during it and over the PRE_WINDOW_S (5 s) before it (or the time since the first start, if less), `dip`
= 1 − during/before, `recovery_s` = time from its end until the goodput over a RECOVERY_WINDOW_S (1 s) window
starting then or at a later verdict is back to 90 % of the before mean (None if never within the run), and the
sessions active during it (`drafter/session`; a drafter_crash: that drafter's). Times are seconds since the first
start. Node faults (events/faults.jsonl, testbed/run/nodefaults.py) are there too, and the totals of sessions
resumed on a restarted verifier, run again by a restarted drafter, and never finished (`sessions_failed`).
Backend local applies no link faults: with only those, `applied: false`.

Partial logs (an interrupted run): an unparsable line is skipped (a truncated last line is the usual case) and
the run is marked `complete: false` with the reason in `issues`; so is a drafter without `done`, with a
`crash`, or with sessions started but not finished. Values that cannot be computed are None (empty in CSV).
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import median

from nodes.events import (LINKS_FILE, fault_marks, Answer, Ask, Crash, Done, Draft, Event, Fault, Finish, Recovery, Start, Verdict, Verify,
                          load_run, of_type, read_events)
from testbed.policies import acceptance
from testbed.run import pacing as pacing_mod
from testbed.run.pacing import pacing

PCTS = (50, 95, 99)

COLUMNS = [
    "complete", "tokens", "requests_started", "requests_completed", "window_s", "goodput_tps",
    "rounds", "spec_rounds", "mean_gamma", "proposed", "accepted", "acceptance_rate", "alpha_hat",
    "mean_accepted_len", "tokens_per_round",
    *[f"{m}_{s}_s" for m in ("ttft", "tpot", "e2e") for s in ("mean", "p50", "p95", "p99")],
    "slo_ttft_attainment", "slo_tpot_attainment", "slo_attainment", "slo_goodput_rps",
    "rtt_mean_s", "queue_mean_s", "verify_mean_s",
    "bytes_out", "bytes_in", "bytes_per_token", "hits", "hit_rate", "wasted",
    "mu", "t_round_s", "bound_session_tps", "concurrency", "bound_tps", "measured_over_bound",
    "jain", "sum_log_goodput", "verifier_batches", "verifier_mean_batch", "verifier_busy_fraction",
    "verifier_fused_rounds",
    "verifier_tokens", "pace_p50", "pace_p95", "cpu_busy_mean",
    "client_requests", "client_latency_mean_s", "client_latency_p50_s", "client_latency_p95_s",
    "client_total_latency_s", "upload_mean_s",
]


# ---------------------------------------------------------------------------------------------- helpers

def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or below it."""
    if not values:
        return None
    xs = sorted(values)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


def mu(gamma: float, alpha: float | None) -> float:
    """Expected tokens per round with window gamma and per-position acceptance alpha (accepted + the bonus):
    acceptance.mu; 1 (one token per round) when nothing was drafted or alpha is unknown."""
    if gamma <= 0 or alpha is None:
        return 1.0
    return acceptance.mu(gamma, alpha)


def jain(xs: list[float]) -> float | None:
    sq = sum(x * x for x in xs)
    return sum(xs) ** 2 / (len(xs) * sq) if xs and sq > 0 else None


def _div(a, b):
    return a / b if a is not None and b else None


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


class _Drafter:
    """One drafter's events, indexed."""

    def __init__(self, name: str, events: list[Event]):
        self.name = name
        starts = of_type(events, Start)
        # a drafter restarted after a crash runs its unfinished sessions again: a session is its last start, and
        # what the crashed process verified of it was never delivered, so it is not goodput
        self.starts = {e.session: e for e in starts}
        self.reruns = len(starts) - len(self.starts)            # sessions a restarted drafter ran again
        self.first_start = {}
        for e in starts:
            self.first_start.setdefault(e.session, e.t)
        self.resumed = sum(1 for e in of_type(events, Recovery) if e.what == "resumed")   # on a restarted verifier
        self.drafts = {(e.session, e.round): e for e in of_type(events, Draft)}
        self.verdicts = [v for v in of_type(events, Verdict)
                         if v.session not in self.starts or v.t >= self.starts[v.session].t]
        self.finishes = {e.session: e for e in of_type(events, Finish)}
        self.done = any(isinstance(e, Done) for e in events)
        self.crashes = of_type(events, Crash)
        self.by_session: dict[str, list[Verdict]] = defaultdict(list)
        for v in self.verdicts:
            self.by_session[v.session].append(v)
        self.rounds = [v for v in self.verdicts if v.round >= 1]
        self.spec = [v for v in self.rounds if v.gamma > 0]
        self.tokens = sum(v.tokens for v in self.verdicts)
        self.t_first = min((e.t for e in starts), default=None)
        self.t_last = max((v.t for v in self.verdicts), default=None)

    def latencies(self) -> tuple[list[float], list[float], list[float]]:
        ttft, tpot, e2e = [], [], []
        for sid, start in self.starts.items():
            vs = self.by_session.get(sid, [])
            first = next((v for v in vs if v.tokens > 0), None)
            if first is not None:
                ttft.append(first.t - start.t)
            fin = self.finishes.get(sid)
            if fin is None:
                continue
            e2e.append(fin.t - start.t)
            n = sum(v.tokens for v in vs)
            if first is not None and n >= 2:
                tpot.append((vs[-1].t - first.t) / (n - 1))
        return ttft, tpot, e2e

    def slo(self, ttft_s: float, tpot_s: float) -> tuple[int, int, int, int, int]:
        """(requests started, TTFT within, completed with >= 2 tokens, TPOT within, completed within both)."""
        started = ttft_ok = tpot_n = tpot_ok = both = 0
        for sid, start in self.starts.items():
            started += 1
            vs = self.by_session.get(sid, [])
            first = next((v for v in vs if v.tokens > 0), None)
            in_ttft = first is not None and first.t - start.t <= ttft_s
            ttft_ok += in_ttft
            if sid not in self.finishes:
                continue
            n = sum(v.tokens for v in vs)
            in_tpot = True
            if first is not None and n >= 2:
                tpot_n += 1
                in_tpot = (vs[-1].t - first.t) / (n - 1) <= tpot_s
                tpot_ok += in_tpot
            both += in_ttft and in_tpot
        return started, ttft_ok, tpot_n, tpot_ok, both

    def session_time(self, window_end: float) -> float:
        """Σ over sessions of the time each was open (for the time-mean concurrency)."""
        total = 0.0
        for sid, start in self.starts.items():
            if sid in self.finishes:
                end = self.finishes[sid].t
            elif self.by_session.get(sid):
                end = self.by_session[sid][-1].t
            else:
                end = window_end
            total += max(0.0, end - start.t)
        return total

    def round_times(self) -> list[float]:
        """Per round: rtt_s + the drafting on the critical path, min(draft_s, t(draft) − t(previous verdict))."""
        prev = {(v.session, v.round): v.t for v in self.verdicts}
        out = []
        for v in self.rounds:
            d = self.drafts.get((v.session, v.round))
            draft = 0.0
            if d is not None:
                draft = d.draft_s
                before = prev.get((v.session, v.round - 1))
                if before is not None:
                    draft = max(0.0, min(draft, d.t - before))
            out.append(v.rtt_s + draft)
        return out

    def bytes(self) -> tuple[int, int]:
        out = sum(e.bytes_out for e in self.starts.values()) + sum(e.bytes_out for e in self.drafts.values())
        return out, sum(v.bytes_in for v in self.verdicts)


SLO_DEFAULT = {"ttft_ms": 300.0, "tpot_ms": 35.0}     # DSD-Sim's thresholds


def _row(ds: list[_Drafter], t_first, t_last, slo: dict = SLO_DEFAULT) -> dict:
    """The metrics shared by a drafter's row and the total row, over the drafters `ds` pooled."""
    r = dict.fromkeys(COLUMNS)
    tokens = sum(d.tokens for d in ds)
    verdicts = [v for d in ds for v in d.verdicts]
    rounds = [v for d in ds for v in d.rounds]
    spec = [v for d in ds for v in d.spec]
    window = t_last - t_first if t_first is not None and t_last is not None else None
    proposed = sum(v.gamma for v in spec)
    accepted = sum(v.accepted for v in spec)
    early = sum(1 for v in spec if v.accepted < v.gamma)
    r.update(
        tokens=tokens,
        requests_started=sum(len(d.starts) for d in ds),
        requests_completed=sum(len(d.finishes) for d in ds),
        window_s=window,
        goodput_tps=0.0 if tokens == 0 else (tokens / window if window and window > 0 else None),
        rounds=len(rounds), spec_rounds=len(spec),
        mean_gamma=_mean([v.gamma for v in rounds]),
        proposed=proposed, accepted=accepted,
        acceptance_rate=_div(accepted, proposed),
        alpha_hat=_div(accepted, accepted + early),
        mean_accepted_len=_div(accepted, len(spec)),
        tokens_per_round=_div(sum(v.tokens for v in rounds), len(rounds)),
        rtt_mean_s=_mean([v.rtt_s for v in verdicts]),
        queue_mean_s=_mean([v.queue_s for v in verdicts]),
        verify_mean_s=_mean([v.verify_s for v in verdicts]),
        hits=sum(v.hit for v in spec),
        wasted=sum(v.wasted for v in verdicts),
    )
    r["hit_rate"] = _div(r["hits"], len(spec))
    lat = [d.latencies() for d in ds]
    for i, m in enumerate(("ttft", "tpot", "e2e")):
        xs = [x for l in lat for x in l[i]]
        r[f"{m}_mean_s"] = _mean(xs)
        for p in PCTS:
            r[f"{m}_p{p}_s"] = percentile(xs, p)
    counts = [d.slo(slo["ttft_ms"] / 1e3, slo["tpot_ms"] / 1e3) for d in ds]
    started, ttft_ok, tpot_n, tpot_ok, both = (sum(c[i] for c in counts) for i in range(5))
    r.update(slo_ttft_attainment=_div(ttft_ok, started), slo_tpot_attainment=_div(tpot_ok, tpot_n),
             slo_attainment=_div(both, started),
             slo_goodput_rps=both / window if window and window > 0 else None)
    b_out = sum(d.bytes()[0] for d in ds)
    b_in = sum(d.bytes()[1] for d in ds)
    r.update(bytes_out=b_out, bytes_in=b_in, bytes_per_token=_div(b_out + b_in, tokens))
    return r


def _drafter_row(d: _Drafter, slo: dict) -> dict:
    r = _row([d], d.t_first, d.t_last, slo)
    r["complete"] = d.done and not d.crashes and set(d.starts) <= set(d.finishes)
    if r["rounds"]:
        r["mu"] = mu(r["mean_gamma"], r["alpha_hat"])
        times = d.round_times()
        r["t_round_s"] = median(times)
        r["bound_session_tps"] = _div(r["mu"], r["t_round_s"])
    if r["window_s"] and r["window_s"] > 0:
        r["concurrency"] = d.session_time(d.t_last) / r["window_s"]
    if r["bound_session_tps"] is not None and r["concurrency"] is not None:
        r["bound_tps"] = r["bound_session_tps"] * r["concurrency"]
        r["measured_over_bound"] = _div(r["goodput_tps"], r["bound_tps"])
    return r


def _verifier(events: list[Event], t_first) -> dict:
    verifies = of_type(events, Verify)
    batches: dict[tuple[str, int], Verify] = {}
    for e in verifies:     # batch ids count per verifier: with routing there are several
        batches.setdefault((e.node, e.batch_id), e)
    n_verifiers = max(1, len({e.node for e in verifies}))
    out = {"verifier_batches": len(batches), "verifier_tokens": sum(e.tokens for e in verifies),
           "verifier_mean_batch": _mean([e.batch for e in batches.values()]),
           "verifier_busy_fraction": None, "verifier_fused_rounds": sum(1 for e in verifies if e.fused)}
    if batches:
        # the co-located draft model shares the verifier's device: its drafting is busy time too
        busy = sum(e.verify_s for e in batches.values()) + sum(e.draft_s for e in verifies if e.fused)
        begin = min(e.t - e.verify_s for e in batches.values())
        if t_first is not None:
            begin = min(begin, t_first)
        span = max(e.t for e in verifies) - begin
        out["verifier_busy_fraction"] = busy / (span * n_verifiers) if span > 0 else None   # mean per verifier
    return out


# ---------------------------------------------------------------------------------------------- API

def compute(run_dir: str | Path) -> dict:
    """Metrics of the run in `run_dir`: {"complete", "issues", "t0", "drafters": {name: row}, "total": row};
    every row has the keys COLUMNS (see the module docstring)."""
    run = load_run(run_dir)
    issues = list(run.issues)
    ds = [_Drafter(name, evs) for name, evs in sorted(run.drafters.items())]
    slo = _slo(run_dir)
    drafters = {}
    for d in ds:
        row = _drafter_row(d, slo)
        drafters[d.name] = row
        if not d.done:
            issues.append(f"{d.name}: no 'done' event (interrupted)")
        for c in d.crashes:
            issues.append(f"{d.name}: crashed: {c.error}")
        unfinished = set(d.starts) - set(d.finishes)
        if unfinished:
            issues.append(f"{d.name}: {len(unfinished)} session(s) started but not finished")
    for c in of_type(run.verifiers, Crash):
        issues.append(f"{c.node}: crashed: {c.error}")
    if not ds:
        issues.append("no drafter event logs")
    t_first = min((d.t_first for d in ds if d.t_first is not None), default=None)
    t_last = max((d.t_last for d in ds if d.t_last is not None), default=None)
    total = _row(ds, t_first, t_last, slo)
    total.update(_verifier(run.verifiers, t_first))
    complete = not issues
    total["complete"] = complete
    goodputs = [r["goodput_tps"] or 0.0 for r in drafters.values()]
    total["jain"] = jain(goodputs)
    total["sum_log_goodput"] = sum(math.log(x) for x in goodputs) if goodputs and all(x > 0 for x in goodputs) else None
    # The bound's tokens over the run's window: each drafter's bound rate over its own active window (drafters
    # start and stop at different times; Σ bound_tps alone would claim every drafter ran the whole window)
    bounds = [(r["bound_tps"], r["window_s"]) for r in drafters.values()]
    if bounds and all(b is not None and w is not None for b, w in bounds) and total["window_s"]:
        total["bound_tps"] = sum(b * w for b, w in bounds) / total["window_s"]
        total["measured_over_bound"] = _div(total["goodput_tps"], total["bound_tps"])
    total["concurrency"] = sum(d.session_time(d.t_last) for d in ds if d.t_last is not None) / total["window_s"] \
        if total["window_s"] else None
    pace = pacing(run)
    if _backend(run_dir) == "sim":        # simulated time: compute takes exactly its profile, nothing to pace
        pace.update(compute="simulated", distorted=False, why=None)
    for name, row in drafters.items():
        row["pace_p50"], row["pace_p95"] = pace["per_drafter"][name]["p50"], pace["per_drafter"][name]["p95"]
    total["pace_p50"], total["pace_p95"], total["cpu_busy_mean"] = pace["p50"], pace["p95"], pace["cpu_busy_mean"]
    total.update(_clients(run, issues))
    complete = total["complete"] = not issues
    faults = _faults(run_dir, ds, t_first, t_last)
    # nothing here names the run directory or the wall clock, so a simulated run's file repeats byte for byte
    return {"complete": complete, "issues": issues, "t0": t_first, "slo": slo,
            "columns": COLUMNS, "drafters": drafters, "total": total, "pacing": pace,
            **({"faults": faults} if faults is not None else {})}


def _faults(run_dir, ds: list[_Drafter], t_first, t_last) -> dict | None:
    """Each logged fault's goodput dip, recovery time and sessions hit (testbed/channels/faults.py impact); None
    when the experiment has no faults."""
    from testbed.channels import faults as F
    config = _manifest(run_dir).get("config")
    if not isinstance(config, dict) or not config.get("faults"):
        return None
    marks = fault_marks(run_dir)
    if _backend(run_dir) == "local":        # node faults apply there; link faults do not
        marks = [e for e in marks if e.kind in F.NODE_KINDS]
        if not marks:
            return {"applied": False, "why": "backend local has no shaped links: the faults were not applied"}
    ends = {(e.fault, e.repeat): e.t for e in marks if e.edge == "end"}
    occurrences = [(e.fault, e.repeat, e.kind, e.link or e.target, e.t, ends.get((e.fault, e.repeat)))
                   for e in marks if e.edge == "start"]
    tokens_at = [(v.t, v.tokens) for d in ds for v in d.verdicts if v.tokens]
    # a session is active from its start to its finish (an unfinished one: to the run's last verdict)
    sessions = [(f"{d.name}/{sid}", d.first_start[sid], d.finishes[sid].t if sid in d.finishes
                 else max(st.t, t_last or st.t)) for d in ds for sid, st in d.starts.items()]
    rows = []
    for occ in occurrences:          # a crashed drafter's fault hits its own sessions; any other fault, all
        mine = [x for x in sessions if x[0].startswith(occ[3] + "/")] if occ[2] == "drafter_crash" else sessions
        rows += F.impact([occ], tokens_at, mine, t_first, t_last)
    return {"applied": True, "pre_window_s": F.PRE_WINDOW_S, "recovery_window_s": F.RECOVERY_WINDOW_S,
            "recovered_fraction": F.RECOVERED, "occurrences": rows,
            "sessions_resumed": sum(d.resumed for d in ds), "sessions_rerun": sum(d.reruns for d in ds),
            "sessions_failed": sum(len(set(d.starts) - set(d.finishes)) for d in ds)}


def _clients(run, issues: list[str]) -> dict:
    """The users' clients' columns (None without clients); a client without `done` or with a crash is an issue."""
    if not run.clients:
        return {}
    asked = {e.request: e.t for evs in run.clients.values() for e in of_type(evs, Ask)}
    arrived = {e.request: e.t for evs in run.drafters.values() for e in of_type(evs, Ask)}
    lat = [e.latency_s for evs in run.clients.values() for e in of_type(evs, Answer)]
    for name, evs in sorted(run.clients.items()):
        if not of_type(evs, Done):
            issues.append(f"{name}: no 'done' event (interrupted)")
        for c in of_type(evs, Crash):
            issues.append(f"{name}: crashed: {c.error}")
    uploads = [arrived[r] - t for r, t in asked.items() if r in arrived]
    return {"client_requests": len(lat), "client_latency_mean_s": _mean(lat),
            "client_latency_p50_s": percentile(lat, 50), "client_latency_p95_s": percentile(lat, 95),
            "client_total_latency_s": sum(lat) if lat else None, "upload_mean_s": _mean(uploads)}


def _manifest(run_dir) -> dict:
    try:
        man = json.loads((Path(run_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return man if isinstance(man, dict) else {}


def _backend(run_dir) -> str | None:
    return _manifest(run_dir).get("backend")


def _slo(run_dir) -> dict:
    """The run's SLO thresholds (its config's `slo`), DSD-Sim's where the manifest has none."""
    config = _manifest(run_dir).get("config")
    got = config.get("slo") if isinstance(config, dict) else None
    out = dict(SLO_DEFAULT)
    if isinstance(got, dict):
        out.update({k: float(v) for k, v in got.items()
                    if k in out and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0})
    return out


def write(run_dir: str | Path, metrics: dict) -> tuple[Path, Path]:
    """metrics.json (all of it) and metrics.csv (one row per drafter, then `total`; the columns COLUMNS)."""
    run_dir = Path(run_dir)
    jpath, cpath = run_dir / "metrics.json", run_dir / "metrics.csv"
    jpath.write_text(json.dumps(metrics, indent=2) + "\n")
    with open(cpath, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["drafter", *COLUMNS])
        rows = [*metrics["drafters"].items(), ("total", metrics["total"])]
        for name, row in rows:
            w.writerow([name, *("" if row.get(c) is None else row[c] for c in COLUMNS)])
    return jpath, cpath


def read_csv(path: str | Path) -> dict[str, dict]:
    """metrics.csv back as {row name: {column: int | float | bool | None}}."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            name = row.pop("drafter")
            out[name] = {k: _parse(v) for k, v in row.items()}
    return out


def _parse(v: str):
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return int(v)
    except ValueError:
        return float(v)


def _fmt(x, digits=3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.0f}"


def _flatten(d, prefix="") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flatten(v, key + ".")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for i, x in enumerate(v):
                out += _flatten(x, f"{key}[{i}].") if isinstance(x, dict) else [(f"{key}[{i}]", x)]
        else:
            out.append((key, v))
    return out


SUMMARY_COLUMNS = [  # (header, key, unit scale)
    ("tokens", "tokens", 1), ("req done", "requests_completed", 1), ("goodput tok/s", "goodput_tps", 1),
    ("accept", "acceptance_rate", 1), ("α̂", "alpha_hat", 1), ("acc len", "mean_accepted_len", 1),
    ("γ̄", "mean_gamma", 1), ("TTFT p50 ms", "ttft_p50_s", 1e3), ("TTFT p95 ms", "ttft_p95_s", 1e3),
    ("TPOT p50 ms", "tpot_p50_s", 1e3), ("e2e p95 s", "e2e_p95_s", 1), ("B/token", "bytes_per_token", 1),
    ("hit rate", "hit_rate", 1), ("bound tok/s", "bound_tps", 1), ("meas/bound", "measured_over_bound", 1),
    ("pace p50", "pace_p50", 1),
]


_FRAME_COSTS = {"emulator": "this host's emulator (testbed/sim/frames.py; sim.frame_costs emulator)",
                "none": "none, the network model alone (sim.frame_costs none)"}


def write_summary(run_dir: str | Path, manifest: dict | None, metrics: dict, plots: list[str] = ()) -> Path:
    """summary.md: settings, a table per drafter + total, fairness and verifier figures, and links to `plots`
    (file names under RUN/plots/: the runner passes plots.plot_names, so the summary may be written first)."""
    run_dir = Path(run_dir)
    manifest = manifest or {}
    t = metrics["total"]
    lines = [f"# {manifest.get('experiment', run_dir.name)} — {manifest.get('label', '')}".rstrip(" —"), ""]
    lines.append(f"- run: `{run_dir.name}`; config hash `{manifest.get('config_hash', '?')}`"
                 + (f"; seed {manifest['seed']}" if "seed" in manifest else "")
                 + (f"; status {manifest['status']}" if "status" in manifest else ""))
    lines.append(f"- complete: {'yes' if metrics['complete'] else 'NO'}")
    for issue in metrics["issues"][:20]:
        lines.append(f"  - {issue}")
    if manifest.get("backend") == "sim":
        sim = manifest.get("sim") or {}
        lines.append(f"- **simulated** (backend sim): network model and compute on a simulated clock; compute from the "
                     f"nodes' latency profiles (a real model: the time its compute took here); "
                     f"{sim.get('simulated_s', '?')} s simulated in {sim.get('wall_s', '?')} s; frame costs beyond the "
                     f"network: {_FRAME_COSTS.get((sim.get('frame_costs') or {}).get('modelled'), 'not recorded')}")
    elif metrics.get("pacing"):
        lines += pacing_mod.summary_lines(metrics["pacing"])
    if t.get("client_requests") is not None:
        lines.append(f"- users' clients: {t['client_requests']} requests answered; latency mean "
                     f"{_fmt(t['client_latency_mean_s'])} s, p95 {_fmt(t['client_latency_p95_s'])} s; total latency "
                     f"(sum) {_fmt(t['client_total_latency_s'])} s; upload mean {_fmt(t['upload_mean_s'])} s")
    # The topology is summarised by its name and file; its every node and link are in manifest.json.
    settings = [(k, v) for k, v in _flatten(manifest.get("config") or {})
                if (not isinstance(v, (dict, list)) or v == [])
                and (not k.startswith("topology.") or k == "topology.name")]
    if settings:
        lines += ["", "## Settings", ""]
        for k, v in settings[:40]:
            lines.append(f"- {k}: {v}")
        if len(settings) > 40:
            lines.append(f"- … {len(settings) - 40} more in manifest.json")
    lines += ["", "## Per drafter", "", "| drafter | " + " | ".join(h for h, _, _ in SUMMARY_COLUMNS) + " |",
              "|---" * (len(SUMMARY_COLUMNS) + 1) + "|"]
    for name, row in [*metrics["drafters"].items(), ("**total**", t)]:
        cells = [_fmt(row.get(k) * s if row.get(k) is not None and s != 1 else row.get(k)) for _, k, s in SUMMARY_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Totals", "",
              f"- total goodput {_fmt(t['goodput_tps'])} tokens/s over {_fmt(t['window_s'])} s; "
              f"{t['tokens']} tokens, {t['requests_completed']}/{t['requests_started']} requests completed",
              f"- fairness: Jain's index {_fmt(t['jain'])}, Σ log goodput {_fmt(t['sum_log_goodput'])}",
              f"- latency: TTFT p50/p95/p99 {_ms(t, 'ttft')} ms; TPOT p50/p95/p99 {_ms(t, 'tpot')} ms; "
              f"e2e p50/p95/p99 {_fmt(t['e2e_p50_s'])}/{_fmt(t['e2e_p95_s'])}/{_fmt(t['e2e_p99_s'])} s",
              f"- SLO (TTFT <= {_fmt(metrics.get('slo', SLO_DEFAULT)['ttft_ms'])} ms, TPOT <= "
              f"{_fmt(metrics.get('slo', SLO_DEFAULT)['tpot_ms'])} ms): {_fmt(t['slo_attainment'])} of requests within "
              f"both (TTFT {_fmt(t['slo_ttft_attainment'])}, TPOT {_fmt(t['slo_tpot_attainment'])}); "
              f"{_fmt(t['slo_goodput_rps'])} SLO-meeting requests/s",
              f"- verifier: {t['verifier_batches']} batches, mean batch {_fmt(t['verifier_mean_batch'])}, "
              f"busy {_fmt(t['verifier_busy_fraction'])} of the time",
              f"- air: {_fmt(t['bytes_per_token'])} bytes per generated token",
              f"- analytic bound Σ μ(γ̄, α̂)/T_round × concurrency = {_fmt(t['bound_tps'])} tokens/s; "
              f"measured/bound {_fmt(t['measured_over_bound'])}"]
    lines += _fault_lines(metrics.get("faults"))
    if plots:
        lines += ["", "## Plots", ""] + [f"- [plots/{n}](plots/{n})" for n in plots]
    lines += ["", "Definitions: see the docstring of `testbed/run/metrics.py`; metrics.csv has every column.", ""]
    path = run_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _fault_lines(faults: dict | None) -> list[str]:
    if not faults:
        return []
    if not faults.get("applied"):
        return ["", "## Faults", "", f"- not applied: {faults.get('why', '')}"]
    lines = ["", "## Faults", "",
             f"Goodput before (mean over up to {_fmt(faults['pre_window_s'])} s) and during each fault; recovery: "
             f"from its end until {_fmt(faults['recovery_window_s'])} s of goodput are back to "
             f"{_fmt(100 * faults['recovered_fraction'])} % of before (– never). Times since the first start.", "",
             "| fault | kind | link | start s | end s | before tok/s | during tok/s | dip | recovery s | sessions |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for o in faults["occurrences"]:
        lines.append(f"| {o['fault']}.{o['repeat']} | {o['kind']} | {o['link']} | {_fmt(o['start_s'])} | "
                     f"{_fmt(o['end_s'])}{'' if o['ended'] else ' (run ended)'} | {_fmt(o['pre_goodput_tps'])} | "
                     f"{_fmt(o['during_goodput_tps'])} | {_fmt(o['dip'])} | {_fmt(o['recovery_s'])} | "
                     f"{o['sessions_affected']} |")
    if not faults["occurrences"]:
        lines.append("| – | no fault started during the run | | | | | | | | |")
    return lines


def _ms(t, m):
    return "/".join(_fmt(None if t[f"{m}_p{p}_s"] is None else t[f"{m}_p{p}_s"] * 1e3) for p in PCTS)
