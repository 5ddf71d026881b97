"""DSD (arXiv 2511.21669) at DSD-Sim's scale on the simulator: 80 edge drafters in device tiers and 20 cloud targets
of four kinds (experiments/papers/dsd/fleet.yaml), DSD's policy stacks built up one piece at a time, RTT 10 and
30 ms, 3 seeds (1 with --quick); plus the 800-drafter point (fleet-800x20.yaml) for random vs the full stack; plus
AWC's switch to fused mode (JSQ+LAB+AWC+fused: hybrid mode, gamma = 1 means fused) and the fused-vs-distributed
RTT sweep (dsd_fused.py).

Each point is one point of fleet.yaml's sweep, run as `testbed run experiments/papers/dsd/fleet.yaml --set ...`.
Claims come from ../shared/research/papers.md §3. A claim of an effect size "holds" when the effect measured here
has the paper's sign and lies within a factor of two of the paper's size (half to double the improvement): the
setups differ (profiles, acceptance traces, substitutes), so an exact match would be luck, not reproduction.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from testbed.reproduce import dsd_fused
from testbed.reproduce.suite import PAPERS_DIR, Claim, Point, effect_holds

FILE = PAPERS_DIR / "dsd" / "fleet.yaml"
LARGE_TOPOLOGY = "fleet-800x20.yaml"
STACKS = (("random", "fifo", "static"), ("round-robin", "fifo", "static"), ("jsq", "fifo", "static"),
          ("jsq", "length", "static"), ("jsq", "length", "backoff"), ("jsq", "length", "awc"),
          ("jsq", "length", "awc", "hybrid"))
NAMES = {"random+fifo+static": "Random+FIFO+static", "round-robin+fifo+static": "RR+FIFO+static",
         "jsq+fifo+static": "JSQ+FIFO+static", "jsq+length+static": "JSQ+LAB+static",
         "jsq+length+backoff": "JSQ+LAB+dynamic", "jsq+length+awc": "JSQ+LAB+AWC",
         "jsq+length+awc+hybrid": "JSQ+LAB+AWC+fused"}
BASELINE, FULL, LAB_STATIC, JSQ_ONLY = "random+fifo+static", "jsq+length+awc", "jsq+length+static", "jsq+fifo+static"
HYBRID = "jsq+length+awc+hybrid"
AWC_WEIGHTS = {
    "jsq+length+awc": "AWC's generic weights: trained on samples of the closed-form model (experiments/train_awc.py "
                      "--generate), not on DSD's data",
    "jsq+length+awc+hybrid": "AWC trained on an oracle's labels from simulated sweeps of an 8 x 2 cut of this fleet "
                             "(awc-oracle.yaml: per drafter the window of most goodput, not DSD's per-arrival lowest "
                             "latency within the SLOs), not on DSD's data"}
WAN_DELAY_MS = {10: 4.5, 30: 14.5}          # RTT = 2 x (0.5 ms edge + WAN delay)
# AWC as DSD trains it, for the stack that switches to fused mode: on an oracle's labels from simulator sweeps in
# which gamma = 1 is fused (experiments/papers/dsd/awc-oracle.yaml has the sweep and the command that rebuilds the
# file). The stack without the switch keeps the policy's generic weights: to it a 1 is a one-token window, which the
# oracle's 1 is not.
AWC_ORACLE = {"policy": "awc", "weights_path": "awc_oracle.json"}     # relative to the experiment file
SEEDS, QUICK_SEEDS = (0, 1, 2), (0,)
QUICK_DURATION_S = 12                       # --quick: seconds of sessions started (fleet.yaml: 60)
LARGE_DRAFTERS, DRAFTERS = 800, 80
MODELLED = ("compute from roofline profiles (nodes/compute) of named substitutes for DSD-Sim's models (the "
            "fleet.yaml header lists them); acceptance replayed from SmolLM2-135M traces recorded here (HumanEval, "
            "MT-Bench: none is published for DSD-Sim's pairs; GSM8K and CNN/DailyMail have no offline package); "
            "edge rates a placeholder; routing decided by each drafter on the loads its verdicts report (DSD-Sim's "
            "router is central); fused mode: the draft model beside each target (DSD-Sim's pairing, substitutes) drafts on "
            "the target's GPU, time-shared with verification and unbatched (DSD-Sim runs it beside the batches, "
            "uncontended); only JSQ+LAB+AWC+fused switches to it (elsewhere AWC's gamma = 1 is a one-token "
            "window); AWC's weights: with the switch, trained on an oracle's labels from simulated sweeps of an 8 x 2 "
            "cut of the fleet (awc-oracle.yaml); without it, the policy's generic weights (trained on the closed-form "
            "model's samples, experiments/train_awc.py --generate); simulated (backend sim)")


def stack_key(stack: tuple[str, str, str]) -> str:
    return "+".join(stack)


def points(quick: bool, backend: str = "sim") -> list[Point]:
    out = []
    seeds = QUICK_SEEDS if quick else SEEDS
    duration = [f"workload.duration_s={QUICK_DURATION_S}"] if quick else []
    for stack in STACKS:
        for rtt, delay in WAN_DELAY_MS.items():
            for seed in seeds:
                out.append(Point(f"80x20/{stack_key(stack)}/rtt{rtt}/seed{seed}", FILE,
                                 (_sweep(stack, delay, seed), *duration), DRAFTERS, backend))
    out += dsd_fused.points(FILE, quick, backend, duration, DRAFTERS)
    if not quick:        # the large point: minutes per run, so only the two ends of the stack at RTT 10
        for stack in (STACKS[0], STACKS[-2]):
            out.append(Point(f"800x20/{stack_key(stack)}/rtt10/seed0", FILE,
                             (_sweep(stack, WAN_DELAY_MS[10], 0), f"topology={LARGE_TOPOLOGY}"),
                             LARGE_DRAFTERS, backend))
    return out


SMALL_TOPOLOGY = "fleet-8x2.yaml"
# t1 keeps the default target (Llama-2-70B int8 on an A100), t2 is one of DSD-Sim's H100s: still heterogeneous
SMALL_OVERRIDES = {"t2": {"profile": {"device": "h100-sxm", "model": "llama-3.1-70b", "dtype": "fp8"}}}


def crosscheck_points(quick: bool) -> list[Point]:
    """The two ends of the stack on 8 drafters x 2 targets at RTT 10 ms (run on mininet and sim)."""
    duration = 15 if quick else 60
    return [Point(f"8x2/{stack_key(stack)}/rtt10/seed0", FILE,
                  (_sweep(stack, WAN_DELAY_MS[10], 0), f"topology={SMALL_TOPOLOGY}",
                   "verifier.overrides=" + json.dumps(SMALL_OVERRIDES), f"workload.duration_s={duration}"), 8)
            for stack in (STACKS[0], STACKS[-1])]


def _sweep(stack, delay: float, seed: int) -> str:
    routing, batching, policy, *mode = stack
    return "sweep=" + json.dumps({"routing.policy": [routing], "batching.rule": [batching],
                                  "speculation.policy": [AWC_ORACLE if (policy, mode) == ("awc", ["hybrid"])
                                                         else policy],
                                  "links.wan.delay_ms": [delay], "seed": [seed],
                                  **({"speculation.mode": mode} if mode else {})})


def _split(key: str) -> tuple[str, str, int, int]:
    fleet, stack, rtt, seed = key.split("/")
    return fleet, stack, int(rtt[3:]), int(seed[4:])


def point_numbers(run_dir: Path) -> dict:
    t = json.loads((run_dir / "metrics.json").read_text())["total"]
    window = t.get("window_s") or 0.0
    return {"goodput_tps": t["goodput_tps"], "tpot_p50_s": t["tpot_p50_s"], "ttft_p50_s": t["ttft_p50_s"],
            "e2e_mean_s": t["e2e_mean_s"], "slo_attainment": t["slo_attainment"],
            "conversations_per_s": t["requests_completed"] / window if window else None,
            "requests_completed": t["requests_completed"], "verifier_busy": t["verifier_busy_fraction"],
            "mean_batch": t.get("verifier_mean_batch"), "fused_rounds": t.get("verifier_fused_rounds")}


def analyse(runs: dict[str, Path], out: Path, quick: bool) -> tuple[list[Claim], dict]:
    per_point = {k: point_numbers(d) for k, d in runs.items()}
    cells = aggregate(per_point)
    figures = [_fig_stacks(cells, out / "fig_stacks.png")]
    if any(k.startswith("800x20/") for k in cells):
        figures.append(_fig_large(cells, out / "fig_800x20.png"))
    if any(k.startswith("xover/") for k in cells):
        figures.append(dsd_fused.figure(cells, out / "fig_fused.png"))
    return claims(cells, quick), {"figures": [f.name for f in figures], "points_numbers": per_point,
                                  "cells": cells}


def aggregate(per_point: dict[str, dict]) -> dict[str, dict]:
    """(fleet, stack, RTT) over seeds: mean, min and max of each number; key "80x20/jsq+length+awc/rtt10"."""
    groups: dict[str, list[dict]] = {}
    for key, nums in per_point.items():
        fleet, stack, rtt, _ = _split(key)
        groups.setdefault(f"{fleet}/{stack}/rtt{rtt}", []).append(nums)
    cells = {}
    for key, rows in groups.items():
        cell = {"seeds": len(rows)}
        for field in rows[0]:
            vals = [r[field] for r in rows if r[field] is not None]
            cell[field] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals)} if vals else None
        cells[key] = cell
    return cells


def _mean(cells, fleet, stack, rtt, field):
    c = cells.get(f"{fleet}/{stack}/rtt{rtt}")
    return None if c is None or c.get(field) is None else c[field]["mean"]


def claims(cells: dict, quick: bool) -> list[Claim]:
    out: list[Claim] = []
    rtts = sorted({int(k.split("/")[2][3:]) for k in cells if k.startswith("80x20/")})
    seeds = min((c["seeds"] for k, c in cells.items() if k.startswith("80x20/")), default=0)
    rule = "[rule: holds within half to double the paper's effect, same sign]"

    def config(rtt, extra=""):
        return f"80 drafters x 20 targets (fleet.yaml), RTT {rtt} ms, mean of {seeds} seed(s){extra}" + \
            (", --quick" if quick else "")

    for rtt in rtts:
        for stack in (FULL, HYBRID):      # DSD's stack without and with AWC's switch to fused mode
            name = NAMES[stack]
            base, full = (_mean(cells, "80x20", s, rtt, "goodput_tps") for s in (BASELINE, stack))
            if base and full:
                g = full / base - 1
                out.append(Claim("+9.7 % throughput of the full DSD stack over the SD baseline", "abstract, §V",
                                 f"{name} {g:+.1%} goodput vs Random+FIFO+static ({full:.0f} vs {base:.0f} tok/s) "
                                 + rule, effect_holds(g, 0.097), config(rtt),
                                 _parts(cells, rtt) if stack == FULL else "the stack above plus AWC's switch to "
                                 "fused mode (AWC trained on the oracle's labels): a fused round drafts on the target's "
                                 "GPU, several times faster than the fleet's slow edge tiers (an L4 drafting a 7-8B "
                                 "model), which is most of the gain beyond DSD's"))
            base, full = (_mean(cells, "80x20", s, rtt, "e2e_mean_s") for s in (BASELINE, stack))
            if base and full:
                x = base / full
                out.append(Claim("1.1x speed-up over SD baselines", "abstract",
                                 f"mean end-to-end latency per conversation {x:.2f}x shorter with {name} than "
                                 f"Random+FIFO+static ({full:.1f} vs {base:.1f} s) {rule}", effect_holds(x - 1, 0.1),
                                 config(rtt)))
        lab = _mean(cells, "80x20", LAB_STATIC, rtt, "tpot_p50_s")
        for stack, how in ((FULL, "gamma = 1 is a one-token window there (no switch to fused)"),
                           (HYBRID, "with AWC's switch to fused mode")):
            awc = _mean(cells, "80x20", stack, rtt, "tpot_p50_s")
            if lab and awc:
                d = awc / lab - 1
                out.append(Claim("AWC lowers TPOT by 11 % (vs the same stack with a static window)",
                                 "secondary source (papers.md §3)",
                                 f"TPOT p50 {d:+.1%} with {NAMES[stack]} vs JSQ+LAB+static ({1e3 * awc:.1f} vs "
                                 f"{1e3 * lab:.1f} ms) " + rule, effect_holds(d, -0.11), config(rtt),
                                 how + ("" if effect_holds(d, -0.11) else "; " + AWC_WEIGHTS[stack])))
        jsq = _mean(cells, "80x20", JSQ_ONLY, rtt, "conversations_per_s")
        for other in (BASELINE, "round-robin+fifo+static"):
            o = _mean(cells, "80x20", other, rtt, "conversations_per_s")
            if jsq and o:
                r = jsq / o
                out.append(Claim(f"JSQ serves about 2x the conversations per second of "
                                 f"{'random' if other == BASELINE else 'round-robin'} routing in a heterogeneous "
                                 "fleet", "secondary source: DSD-Sim design notes (~300 vs ~155 conversations/s)",
                                 f"JSQ+FIFO+static {r:.2f}x {NAMES[other]} ({jsq:.2f} vs {o:.2f} conversations/s) "
                                 + rule, effect_holds(r - 1, 300 / 155 - 1), config(rtt),
                                 "" if effect_holds(r - 1, 300 / 155 - 1) else _why_jsq(cells, rtt)))
    base, full = (_mean(cells, "800x20", s, 10, "goodput_tps") for s in (BASELINE, FULL))
    if base and full:
        g = full / base - 1
        out.append(Claim("the stack's gain holds at DSD-Sim's large fleet", "DSD-Sim scenario (600-1000 drafters)",
                         f"JSQ+LAB+AWC {g:+.1%} goodput vs Random+FIFO+static at 800 drafters ({full:.0f} vs "
                         f"{base:.0f} tok/s)", g > 0, "800 drafters x 20 targets (fleet-800x20.yaml), RTT 10 ms, "
                         "seed 0"))
    for rtt in rtts:
        awc, hyb = (_mean(cells, "80x20", s, rtt, "goodput_tps") for s in (FULL, HYBRID))
        tpot_awc, tpot_hyb = (_mean(cells, "80x20", s, rtt, "tpot_p50_s") for s in (FULL, HYBRID))
        fused = _mean(cells, "80x20", HYBRID, rtt, "fused_rounds")
        if awc and hyb:
            out.append(Claim("AWC switches a session to fused mode when its window is 1", "§IV (AWC)",
                             f"JSQ+LAB+AWC+fused {hyb / awc - 1:+.1%} goodput, TPOT p50 {tpot_hyb / tpot_awc - 1:+.1%} "
                             f"vs JSQ+LAB+AWC without the switch ({hyb:.0f} vs {awc:.0f} tok/s)"
                             + (f"; {fused:.0f} rounds drafted at the targets" if fused is not None else ""),
                             None, config(rtt), "DSD gives no number for the switch alone: reported, not judged; "
                             "one step of dwell (fused_dwell 1) as in DSD's code"))
    out += dsd_fused.claims(cells, quick)
    return out


def _parts(cells, rtt) -> str:
    """Where the full stack's goodput gain comes from: each piece added, and how loaded the targets were."""
    g = {s: _mean(cells, "80x20", s, rtt, "goodput_tps") for s in (BASELINE, JSQ_ONLY, LAB_STATIC, FULL)}
    if None in g.values():
        return ""
    busy = _mean(cells, "80x20", BASELINE, rtt, "verifier_busy")
    batch = _mean(cells, "80x20", BASELINE, rtt, "mean_batch")
    return (f"by piece: JSQ routing {g[JSQ_ONLY] / g[BASELINE] - 1:+.1%}, length-aware batching "
            f"{g[LAB_STATIC] / g[JSQ_ONLY] - 1:+.1%}, AWC {g[FULL] / g[LAB_STATIC] - 1:+.1%}"
            + (f"; under the baseline the targets were busy {busy:.0%} of the time" if busy is not None else "")
            + (f" with batches of {batch:.1f} on average (length-aware batching only differs when it has "
               "several drafts to choose among)" if batch is not None else ""))


def _why_jsq(cells, rtt) -> str:
    busy = _mean(cells, "80x20", JSQ_ONLY, rtt, "verifier_busy")
    return ("each drafter routes on the loads reported in its own verdicts (a target it has not used reads 0), so "
            "JSQ places like random until it has seen the targets; DSD-Sim's router is central with exact queues"
            + (f"; targets busy {busy:.0%} of the time under JSQ" if busy is not None else "")
            + "; and a closed loop of 80 drafters answering ~420 tokens after 1.7 s of thought completes at most ~3 "
            "conversations/s whatever the routing, so DSD-Sim's ~300 vs ~155 must count something else or a far "
            "larger load")


# ---------------------------------------------------------------------------------------------- figures

PANELS = (("goodput_tps", "goodput (tokens/s)", 1), ("tpot_p50_s", "TPOT p50 (ms)", 1e3),
          ("ttft_p50_s", "TTFT p50 (ms)", 1e3), ("slo_attainment", "SLO attainment (TTFT and TPOT)", 1))


def _bars(ax, cells, fleet, stacks, rtts, field, scale):
    width = 0.8 / max(1, len(rtts))
    for j, rtt in enumerate(rtts):
        xs, ys, lo, hi = [], [], [], []
        for i, s in enumerate(stacks):
            c = cells.get(f"{fleet}/{s}/rtt{rtt}")
            if not c or not c.get(field):
                continue
            v = c[field]
            xs.append(i + (j - (len(rtts) - 1) / 2) * width)
            ys.append(v["mean"] * scale)
            lo.append((v["mean"] - v["min"]) * scale)
            hi.append((v["max"] - v["mean"]) * scale)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=f"C{j}", label=f"RTT {rtt} ms")
    ax.set_xticks(range(len(stacks)), [NAMES[s].replace("+", "+\n") for s in stacks], fontsize="x-small")


def _fig_stacks(cells: dict, path: Path) -> Path:
    from testbed.common.figures import Figure, finish_axis, save
    stacks = [stack_key(s) for s in STACKS if any(k.startswith(f"80x20/{stack_key(s)}/") for k in cells)]
    rtts = sorted({int(k.split("/")[2][3:]) for k in cells if k.startswith("80x20/")})
    fig = Figure(figsize=(13, 8))
    axes = fig.subplots(2, 2).ravel()
    for ax, (field, label, scale) in zip(axes, PANELS):
        _bars(ax, cells, "80x20", stacks, rtts, field, scale)
        ax.set(ylabel=label, title=f"{label}: mean over seeds (bars: min-max)")
        finish_axis(ax, bool(stacks), loc="upper left")
    return save(fig, path)


def _fig_large(cells: dict, path: Path) -> Path:
    from testbed.common.figures import Figure, finish_axis, save
    stacks = [stack_key(s) for s in STACKS if f"800x20/{stack_key(s)}/rtt10" in cells]
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 4)
    for ax, (field, label, scale) in zip(axes, PANELS):
        _bars(ax, cells, "800x20", stacks, [10], field, scale)
        ax.set(ylabel=label, title="800 drafters x 20 targets")
        finish_axis(ax, bool(stacks), loc="upper left")
    return save(fig, path)
