"""Why a validation scenario misses: the emulator's and the simulator's runs taken apart round by round.

`testbed validate` compares end results (goodput, latency percentiles); when they differ, this module says which
part of a round differs, from the two runs' event logs:

- network: a round's time outside the verifier (drafter's rtt - queue - verify), median: the network model and
  the per-frame costs;
- recoveries: rounds whose network time exceeds its median by > 100 ms (a TCP loss recovery: a timeout of
  >= 200 ms). Loss is drawn independently in the two backends, so their counts differ by chance: with k expected,
  about +-2 sqrt(k) at 95 %;
- verify: the mean verify time of a batch (the emulator's pacing of the profile) and the mean batch size;
- draft: mean drafting time per window;
- start: how far apart the drafters' first sessions started;
- window: total goodput divides all tokens by first start to last verdict, so a run whose last session ends later
  has a lower total while every drafter's own goodput agrees.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from nodes.events import Draft, Start, Verdict, Verify, read_events

RECOVERY_S = 0.100          # a round this much slower than the median network time went through a TCP timeout
PART_TOL = 0.05             # parts within 5 % are not named


def rounds_of(run_dir: Path) -> dict:
    """The parts of a run's rounds (see the module docstring)."""
    net, draft, starts = [], [], []
    batches: dict[tuple[str, int], tuple[int, float]] = {}
    for f in sorted(Path(run_dir, "events").glob("*.jsonl")):
        if f.name == "links.jsonl":
            continue
        events, _ = read_events(f)
        first_start = None
        for e in events:
            if isinstance(e, Verdict) and e.round >= 1:
                net.append(e.rtt_s - e.queue_s - e.verify_s)
            elif isinstance(e, Draft):
                draft.append(e.draft_s)
            elif isinstance(e, Start) and first_start is None:
                first_start = e.t
            elif isinstance(e, Verify):
                batches[(e.node, e.batch_id)] = (e.batch, e.verify_s)
        if first_start is not None:
            starts.append(first_start)
    med = statistics.median(net) if net else None
    return {"rounds": len(net), "network_s": med,
            "recoveries": sum(1 for x in net if x > med + RECOVERY_S) if net else 0,
            "verify_s": statistics.fmean(v for _, v in batches.values()) if batches else None,
            "batch": statistics.fmean(b for b, _ in batches.values()) if batches else None,
            "draft_s": statistics.fmean(draft) if draft else None,
            "start_spread_s": (max(starts) - min(starts)) if len(starts) > 1 else 0.0}


def _window(run_dir: Path) -> float | None:
    try:
        return json.loads(Path(run_dir, "metrics.json").read_text())["total"]["window_s"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _rel(a, b):
    return None if a is None or b is None or b == 0 else (a - b) / b


def why(emu_dir: Path, sim_dir: Path) -> dict:
    """Both runs' parts, and the sentence that names the parts that differ."""
    e, s = rounds_of(emu_dir), rounds_of(sim_dir)
    said = []
    for key, name, unit in (("network_s", "network + frame costs per round", 1e3),
                            ("verify_s", "verify time per batch", 1e3), ("batch", "batch size", 1),
                            ("draft_s", "drafting per window", 1e3)):
        r = _rel(s[key], e[key])
        if r is not None and abs(r) > PART_TOL:
            u = " ms" if unit == 1e3 else ""
            said.append(f"{name} sim {unit * s[key]:.3g}{u} vs emu {unit * e[key]:.3g}{u} ({100 * r:+.0f} %)")
    if e["recoveries"] or s["recoveries"]:
        k = (e["recoveries"] + s["recoveries"]) / 2
        chance = abs(e["recoveries"] - s["recoveries"]) <= 2 * math.sqrt(max(k, 1))
        said.append(f"TCP recoveries sim {s['recoveries']} vs emu {e['recoveries']} in ~{e['rounds']} rounds"
                    + (" (within the loss draws' chance: +-2 sqrt(k))" if chance else " (more than chance)"))
    we, ws = _window(emu_dir), _window(sim_dir)
    if we and ws and abs(ws - we) / we > PART_TOL:
        said.append(f"the run's window (first start to last verdict) sim {ws:.2f} s vs emu {we:.2f} s: its last "
                    f"sessions end {'earlier' if ws < we else 'later'}, which moves total goodput, not each drafter's")
    if abs(e["start_spread_s"] - s["start_spread_s"]) > 0.02:
        said.append(f"drafters' first sessions spread over {1e3 * e['start_spread_s']:.0f} ms on the emulator, "
                    f"{1e3 * s['start_spread_s']:.0f} ms simulated")
    return {"emu": e, "sim": s, "why": "; ".join(said) or "no part of a round differs by more than 5 %: "
            "the difference is in how rounds interleave (few samples in a short run)"}
