"""DSD's fused mode against distributed SD as the drafter-target RTT grows (testbed/reproduce/dsd.py's part for it).

Fused: every round after the prefill is drafted by the draft model beside the target, on the target's GPU
(fleet.yaml `verifier.draft`), so no round crosses the network but every draft takes the target's time.
Distributed: the edge drafter drafts and sends its window over the WAN. Both run the JSQ+LAB+static stack
(gamma 4) on the 80 x 20 fleet, one seed, at each RTT; DSD-Sim's RTT sweep draws throughput, TTFT and TPOT
against RTT for both modes, and so does fig_fused.png here. The crossover is where fused's TPOT p50 (the
user-facing per-token latency) meets distributed's, interpolated linearly in RTT between the swept points.
"""
from __future__ import annotations

import json

from testbed.reproduce.suite import Claim, Point

RTTS, QUICK_RTTS = (2, 10, 30, 60, 100), (2, 30, 100)
STACK = ("jsq", "length", "static")
MODES = ("distributed", "fused")


def wan_delay_ms(rtt: float) -> float:
    """fleet-80x20.yaml: RTT = 2 x (0.5 ms edge + the WAN link's delay)."""
    return rtt / 2 - 0.5


def points(file, quick: bool, backend: str, duration: list[str], drafters: int) -> list[Point]:
    out = []
    for mode in MODES:
        for rtt in (QUICK_RTTS if quick else RTTS):
            sweep = {"routing.policy": [STACK[0]], "batching.rule": [STACK[1]], "speculation.policy": [STACK[2]],
                     "links.wan.delay_ms": [wan_delay_ms(rtt)], "seed": [0], "speculation.mode": [mode]}
            out.append(Point(f"xover/{mode}/rtt{rtt}/seed0", file, ("sweep=" + json.dumps(sweep), *duration),
                             drafters, backend))
    return out


def _series(cells: dict, mode: str, field: str) -> list[tuple[int, float]]:
    out = []
    for key, c in cells.items():
        fleet, m, rtt = key.split("/")
        if fleet == "xover" and m == mode and c.get(field):
            out.append((int(rtt[3:]), c[field]["mean"]))
    return sorted(out)


def crossover(cells: dict, field: str = "tpot_p50_s") -> tuple[list[tuple[int, float]], list[float]]:
    """fused / distributed - 1 of `field` at each RTT both modes ran, and the RTTs (interpolated) where it
    changes sign."""
    dist = dict(_series(cells, "distributed", field))
    both = [(r, f, dist[r]) for r, f in _series(cells, "fused", field) if dist.get(r)]
    rel = [(r, f / d - 1) for r, f, d in both]
    gap = [(r, f - d) for r, f, d in both]      # the curves' own difference: linear between points where both are
    cross = [r0 + (r1 - r0) * g0 / (g0 - g1) for (r0, g0), (r1, g1) in zip(gap, gap[1:]) if g0 * g1 < 0]
    return rel, cross


def claims(cells: dict, quick: bool) -> list[Claim]:
    rel, cross = crossover(cells)
    if len(rel) < 2:
        return [Claim("fused mode (draft beside the target) beats distributed SD below some RTT; the crossover",
                      "§IV (AWC's switch to fused); DSD-Sim's fused-vs-distributed RTT sweep", "–", None, "–",
                      "fewer than two RTTs ran both modes")]
    g_rel, g_cross = crossover(cells, "goodput_tps")
    by_rtt = "; ".join(f"RTT {r} ms: TPOT {d:+.0%}" + (f", goodput {g:+.0%}" if g is not None else "")
                       for (r, d), g in zip(rel, [dict(g_rel).get(r) for r, _ in rel]))
    fused_wins_low = rel[0][1] < 0
    if cross:
        side = "below" if fused_wins_low else "above"
        measured = (f"TPOT p50 of fused vs distributed crosses at RTT ≈ {cross[0]:.0f} ms; fused is faster {side} "
                    f"it" + (f"; goodput crosses at ≈ {g_cross[0]:.0f} ms" if g_cross else "") + f" ({by_rtt})")
        holds = fused_wins_low
        why = "" if holds else ("fused is faster at long RTTs here, not short ones: it takes the network out of every "
                                "round, which saves more the longer the RTT, while its drafts take the target's GPU "
                                "time at any RTT; DSD does not publish its sweep, so the paper's direction is its "
                                "wording, not a figure")
    else:
        better = "fused" if rel[0][1] < 0 else "distributed"
        measured = f"no crossover between RTT {rel[0][0]} and {rel[-1][0]} ms: {better} is faster throughout ({by_rtt})"
        holds = False
        why = ("the swept RTTs do not reach the crossover: the target's GPU time for fused drafts and the network's "
               "time per distributed round do not meet in this range")
    config = (f"80 drafters x 20 targets (fleet.yaml), JSQ+LAB+static (gamma 4), RTT "
              f"{', '.join(str(r) for r, _ in rel)} ms, seed 0; fused drafts with the target's co-located draft "
              "model on its GPU, time-shared with its verification (unbatched drafts)" + (", --quick" if quick else ""))
    return [Claim("fused mode (draft beside the target) beats distributed SD below some RTT; the crossover",
                  "§IV (AWC's switch to fused); DSD-Sim's fused-vs-distributed RTT sweep", measured, holds, config, why)]


PANELS = (("goodput_tps", "goodput (tokens/s)", 1), ("ttft_p50_s", "TTFT p50 (ms)", 1e3),
          ("tpot_p50_s", "TPOT p50 (ms)", 1e3))


def figure(cells: dict, path):
    from testbed.common.figures import Figure, finish_axis, save
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    _, cross = crossover(cells)
    for ax, (field, label, scale) in zip(axes, PANELS):
        for i, mode in enumerate(MODES):
            s = _series(cells, mode, field)
            ax.plot([r for r, _ in s], [v * scale for _, v in s], marker="os"[i], color=f"C{i}", label=mode)
        for x in cross:
            ax.axvline(x, color="0.5", linestyle=":", linewidth=1)
        ax.set(xlabel="drafter-target RTT (ms)", ylabel=label, title=f"{label} vs RTT (JSQ+LAB+static)")
        finish_axis(ax, True, loc="best")
    return save(fig, path)
