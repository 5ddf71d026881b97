"""Link faults as experiment features (`faults:` in an experiment): what they are, when they act, what they did.

    faults:
      - {kind: outage, link: ap1-verifier, at_s: 10, duration_s: 2}
      - {kind: flap, link: d1-ap1, at_s: 20, duration_s: 6, down_s: 0.5, up_s: 1.5}
      - {kind: rate_collapse, link: d2-ap1, at_s: 5, duration_s: 3, rate_mbps: 0.5, direction: up}
      - {kind: loss_burst, link: d3-ap1, at_s: 5, duration_s: 2, loss_pct: 20, every_s: 10, count: 3}

Time. `at_s` counts from the channel clock's tick 0: when the network's links are in place (the emulator's
channel driver starts; the simulator's t = 0), the same clock a channel model or trace runs on. On the emulator
the nodes then still start (processes, models) before the first session, so a fault meant to hit sessions needs
at_s past that; the `fault` events record when each fault really began and ended, and the metrics use those.
Faults act on the channel plan's intervals (channel_interval_ms, 100 ms by default): every edge is rounded to
the nearest interval boundary, and every phase (duration_s, down_s, up_s) must last at least one interval.

What each does to its link, both directions unless `direction` says (rate_collapse and loss_burst):
- outage: the link is down. The emulator drops everything (loss 99.99 %, the most a LinkState carries: at the
  few packets TCP sends while backing off, none gets through in practice); the simulator drops every segment
  that reaches the link's delay element while it is down (testbed/sim/network.py), and TCP recovers them as it
  recovers any loss, by RACK/TLP/RTO with exponential RTO backoff, so a frame sent during an outage arrives
  after the outage ends, up to one backed-off RTO later, as on the emulator.
- flap: down for down_s, up for up_s, again and again for duration_s (a last down phase is cut at the end).
- rate_collapse: the rate becomes rate_mbps (if lower than the link's own rate at that moment).
- loss_burst: the loss becomes loss_pct (if higher than the link's own).
Overlapping faults on one link combine, the most severe wins on each quantity: down beats everything, then the
lowest rate and the highest loss in each direction. A fault overlapping its own repeat (every_s < duration_s) is
refused. A faulted link is driven by the channel plan every interval even without a channel model.

This module is pure: the spec and its checks, the schedule (ticks → the overlay on a LinkState, fault edges,
the simulator's outage windows), and the impact of each fault on goodput, computed from given events.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from testbed.common.strict import StrictModel
from testbed.net.linkstate import LinkState

DOWN_LOSS_PCT = 99.99           # an outage on the emulator: the most loss a LinkState can carry (it takes [0, 100))
PRE_WINDOW_S = 5.0              # the goodput a fault is compared with: the mean over this long before it
RECOVERY_WINDOW_S = 1.0         # recovered: goodput over a window this long back to RECOVERED of the pre-fault mean
RECOVERED = 0.9
LINK_KINDS = ("outage", "flap", "rate_collapse", "loss_burst")
NODE_KINDS = ("verifier_restart", "verifier_stall", "drafter_crash")     # testbed/run/nodefaults.py
KINDS = LINK_KINDS + NODE_KINDS
FIELDS_OF = {"outage": set(), "flap": {"down_s", "up_s"}, "rate_collapse": {"rate_mbps", "direction"},
             "loss_burst": {"loss_pct", "direction"}, "verifier_restart": set(), "verifier_stall": set(),
             "drafter_crash": {"restart"}}
REQUIRED = {"flap": ("down_s", "up_s"), "rate_collapse": ("rate_mbps",), "loss_burst": ("loss_pct",)}


class FaultSpec(StrictModel):
    """One entry of `faults:`. Which fields a kind takes is checked by check_faults (one error per field)."""
    kind: Literal["outage", "flap", "rate_collapse", "loss_burst", "verifier_restart", "verifier_stall",
                  "drafter_crash"]
    link: str | None = Field(None, min_length=1, max_length=200)   # link kinds: a link name of the topology
    # node kinds: a drafter (drafter_crash) or a verifier host (verifier_*; the one verifier: its host or "verifier")
    node: str | None = Field(None, min_length=1, max_length=200)
    restart: bool | None = None                               # drafter_crash: restarted after duration_s (default)
    at_s: float = Field(ge=0, le=7 * 86_400)                  # start, seconds after the channel clock's tick 0
    duration_s: float = Field(gt=0, le=7 * 86_400)
    down_s: float | None = Field(None, gt=0, le=86_400)       # flap: each down phase
    up_s: float | None = Field(None, gt=0, le=86_400)         # flap: each up phase between them
    rate_mbps: float | None = Field(None, gt=0, le=10_000)    # rate_collapse: the rate while it lasts
    loss_pct: float | None = Field(None, gt=0, lt=100)        # loss_burst: the loss while it lasts
    direction: Literal["both", "up", "down"] | None = None     # rate_collapse, loss_burst; default both
    every_s: float | None = Field(None, gt=0, le=7 * 86_400)  # repeat: a new start every every_s ...
    count: int | None = Field(None, ge=1, le=10_000)          # ... count times in all (with every_s)


def check_faults(faults: list[FaultSpec], link_names: list[str], interval_s: float) -> list[tuple[tuple, str]]:
    """(field path, message) for each problem: a field the kind does not take or lacks, an unknown link, a
    phase shorter than one channel interval, a fault overlapping its own repeat."""
    found = []
    for i, f in enumerate(faults):
        loc = ("faults", i)
        if f.kind in NODE_KINDS:
            if f.link is not None:
                found.append((loc + ("link",), f"not a field of kind {f.kind} (a node fault names its `node`)"))
            if f.node is None:
                found.append((loc + ("node",), f"required for kind {f.kind}"))
        elif f.node is not None:
            found.append((loc + ("node",), f"not a field of kind {f.kind} (a link fault names its `link`)"))
        elif f.link is None:
            found.append((loc + ("link",), f"required for kind {f.kind}"))
        if f.kind in NODE_KINDS or f.link is None:
            pass
        elif f.link not in link_names:
            shown = ", ".join(link_names[:12]) + (", ..." if len(link_names) > 12 else "")
            found.append((loc + ("link",), f"no link named {f.link!r} in the topology; links: {shown}"))
        for name in ("down_s", "up_s", "rate_mbps", "loss_pct", "direction", "restart"):
            if getattr(f, name) is not None and name not in FIELDS_OF[f.kind]:
                found.append((loc + (name,), f"not a field of kind {f.kind} (it takes: "
                                             f"{', '.join(sorted(FIELDS_OF[f.kind])) or 'no extra fields'})"))
        for name in REQUIRED.get(f.kind, ()):
            if getattr(f, name) is None:
                found.append((loc + (name,), f"required for kind {f.kind}"))
        if (f.every_s is None) != (f.count is None):
            name = "count" if f.count is None else "every_s"
            found.append((loc + (name,), "every_s and count go together (a repeat every every_s, count times)"))
        if f.every_s is not None and f.every_s < f.duration_s:
            found.append((loc + ("every_s",), f"{f.every_s:g} s is shorter than duration_s ({f.duration_s:g} s): "
                                              "the fault would overlap its own repeat"))
        for name in ("duration_s", "down_s", "up_s"):
            v = getattr(f, name)
            if v is not None and v < interval_s * (1 - 1e-9):
                found.append((loc + (name,), f"{v:g} s is shorter than one channel interval ({interval_s:g} s, "
                                             "channel_interval_ms): faults act on whole intervals"))
    return found


@dataclass(frozen=True)
class Occurrence:
    """One occurrence of a fault (a repeat is another), in ticks [start, end) of the channel plan."""
    index: int                  # the fault's position in `faults:`
    repeat: int                 # 0 for the first occurrence
    spec: FaultSpec
    start: int
    end: int
    downs: tuple[tuple[int, int], ...] = ()   # outage and flap: the ticks [a, b) the link is down


@dataclass(frozen=True)
class Edge:
    """A fault starting or ending at a tick (the events the channel driver and the simulator log)."""
    tick: int
    edge: str                   # "start" | "end"
    occ: Occurrence


class FaultSchedule:
    """The faults of an experiment on the channel plan's ticks: pure, a function of k only."""

    def __init__(self, faults: list[FaultSpec], interval_s: float):
        self.interval_s = interval_s
        tick = lambda s: int(round(s / interval_s))
        self.occurrences: list[Occurrence] = []
        for i, f in enumerate(faults):
            if f.kind in NODE_KINDS:              # the runner's (nodefaults.py), not the links'
                continue
            for r in range(f.count or 1):
                t = f.at_s + r * (f.every_s or 0.0)
                start, end = tick(t), max(tick(t) + 1, tick(t + f.duration_s))
                downs: tuple = ()
                if f.kind == "outage":
                    downs = ((start, end),)
                elif f.kind == "flap":
                    down, period = max(1, tick(f.down_s)), max(1, tick(f.down_s)) + max(1, tick(f.up_s))
                    downs = tuple((a, min(a + down, end)) for a in range(start, end, period))
                self.occurrences.append(Occurrence(i, r, f, start, end, downs))
        self.by_link: dict[str, list[Occurrence]] = {}
        for o in self.occurrences:
            self.by_link.setdefault(o.spec.link, []).append(o)

    def links(self) -> list[str]:
        return list(self.by_link)

    def loss_links(self) -> list[str]:
        """Links whose loss a fault changes: on the emulator they need a delay element from the start."""
        return [l for l, occ in self.by_link.items() if any(o.spec.kind != "rate_collapse" for o in occ)]

    def active(self, link: str, k: int) -> list[Occurrence]:
        return [o for o in self.by_link.get(link, ()) if o.start <= k < o.end]

    def is_down(self, link: str, k: int) -> bool:
        return any(a <= k < b for o in self.active(link, k) for a, b in o.downs)

    def overlay(self, link: str, k: int, state: LinkState) -> tuple[LinkState, LinkState]:
        """(the state to apply at tick k, the same without any outage): the most severe of the active faults wins
        on each quantity. The second is what the simulator takes, as it models an outage itself (outage_windows)."""
        rate = {"up": state.rate_up_mbps, "down": state.rate_down_mbps}
        loss = {"up": state.loss("up"), "down": state.loss("down")}
        active = self.active(link, k)
        for o in active:
            f = o.spec
            dirs = ("up", "down") if f.direction in (None, "both") else (f.direction,)
            for d in dirs:
                if f.kind == "rate_collapse":
                    rate[d] = min(rate[d], f.rate_mbps)
                elif f.kind == "loss_burst":
                    loss[d] = max(loss[d], f.loss_pct)
        if not active:
            return state, state
        up = state
        if (rate["up"], rate["down"]) != (state.rate_up_mbps, state.rate_down_mbps) or \
                (loss["up"], loss["down"]) != state.losses:      # unchanged: the very same state, not an equal one
            up = state.with_(rate_up_mbps=rate["up"], rate_down_mbps=rate["down"], loss_pct=loss["up"],
                             loss_down_pct=None if loss["down"] == loss["up"] else loss["down"])
        if self.is_down(link, k):
            return up.with_(loss_pct=DOWN_LOSS_PCT, loss_down_pct=DOWN_LOSS_PCT), up
        return up, up

    def edges(self, k_from: int, k_to: int) -> list[Edge]:
        """Every fault start and end at a tick in [k_from, k_to], in tick order (starts before ends at a tick
        only for different faults: an occurrence lasts at least one tick)."""
        out = [Edge(o.start, "start", o) for o in self.occurrences if k_from <= o.start <= k_to]
        out += [Edge(o.end, "end", o) for o in self.occurrences if k_from <= o.end <= k_to]
        return sorted(out, key=lambda e: (e.tick, e.edge == "start", e.occ.index, e.occ.repeat))

    def outage_windows(self) -> dict[str, list[tuple[float, float]]]:
        """Per link, the [start, end) seconds of the channel clock while it is down (outage and flap)."""
        out: dict[str, list[tuple[float, float]]] = {}
        for o in self.occurrences:
            for a, b in o.downs:
                out.setdefault(o.spec.link, []).append((a * self.interval_s, b * self.interval_s))
        return {l: sorted(ws) for l, ws in out.items()}


def fault_event(node: str, t: float, edge: Edge, interval_s: float):
    """The `fault` event of one edge, as the channel driver and the simulator write it to events/links.jsonl."""
    from nodes.events import Fault
    o = edge.occ
    f = o.spec
    return Fault(t=t, node=node, fault=o.index, repeat=o.repeat, kind=f.kind, link=f.link or "", edge=edge.edge,
                 tick=edge.tick, t_model_s=round(edge.tick * interval_s, 6),
                 duration_s=round((o.end - o.start) * interval_s, 6), down_s=f.down_s, up_s=f.up_s,
                 rate_mbps=f.rate_mbps, loss_pct=f.loss_pct, direction=f.direction)


# ---------------------------------------------------------------------------------------------- impact

def impact(faults: list, tokens_at: list[tuple[float, int]], sessions: list[tuple[str, float, float]],
           t_first: float | None, t_last: float | None, pre_window_s: float = PRE_WINDOW_S,
           recovery_window_s: float = RECOVERY_WINDOW_S) -> list[dict]:
    """Per fault occurrence (`faults`: (index, repeat, kind, link, start t, end t or None if the run ended
    first)): the goodput before it (mean over pre_window_s, or the time since the first session if shorter)
    and during it, the dip (1 - during/before), the time from its end until goodput over a
    recovery_window_s window is back to RECOVERED of the before mean (None if never within the run), and the
    sessions active during it. tokens_at: (verdict t, tokens); sessions: (name, start t, end t)."""
    tokens_at = sorted(tokens_at)
    times = [t for t, _ in tokens_at]
    cum = [0]
    for _, n in tokens_at:
        cum.append(cum[-1] + n)

    def tokens(a: float, b: float) -> int:       # tokens committed in [a, b)
        return cum[bisect.bisect_left(times, b)] - cum[bisect.bisect_left(times, a)]

    out = []
    for index, repeat, kind, link, start, end in faults:
        ended = end is not None
        stop = end if ended else (t_last if t_last is not None else start)
        row = {"fault": index, "repeat": repeat, "kind": kind, "link": link, "start_s": None, "end_s": None,
               "ended": ended, "pre_window_s": None, "pre_goodput_tps": None, "during_goodput_tps": None,
               "dip": None, "recovery_s": None, "sessions_affected": 0, "sessions": []}
        if t_first is not None:
            row["start_s"], row["end_s"] = round(start - t_first, 6), round(stop - t_first, 6)
        pre_from = max(start - pre_window_s, t_first) if t_first is not None else start
        if pre_from < start:
            row["pre_window_s"] = round(start - pre_from, 6)
            row["pre_goodput_tps"] = tokens(pre_from, start) / (start - pre_from)
        if stop > start:
            row["during_goodput_tps"] = tokens(start, stop) / (stop - start)
        pre, during = row["pre_goodput_tps"], row["during_goodput_tps"]
        if pre and during is not None:
            row["dip"] = 1 - during / pre
        if pre and ended and t_last is not None:
            target = RECOVERED * pre * recovery_window_s
            # the window may begin at the fault's end or at any verdict after it (a window's count only
            # changes there), and must lie within the run's tokens
            starts = [end] + times[bisect.bisect_left(times, end):]
            for s in starts:
                if s + recovery_window_s > t_last + 1e-9:
                    break
                if tokens(s, s + recovery_window_s) >= target - 1e-9:
                    row["recovery_s"] = round(s - end, 6)
                    break
        hit = sorted(name for name, a, b in sessions if a < stop and b > start)
        row["sessions_affected"], row["sessions"] = len(hit), hit[:50]
        out.append(row)
    return out


# ------------------------------------------------------------------------------ node faults' schedule

@dataclass
class _Step:
    t: float                     # seconds after the workload's start
    what: str                    # kill | stop | cont | start
    fault: int
    repeat: int
    spec: FaultSpec
    edge: str | None = None      # the fault event this step writes: start | end | None
    done: bool = False


def fault_steps(faults: list[FaultSpec]) -> list[_Step]:
    """What the node faults do, in time order (the runner's and the simulator's schedule alike)."""
    steps = []
    for i, f in enumerate(faults):
        if f.kind not in NODE_KINDS:
            continue
        for r in range(f.count or 1):
            t = f.at_s + r * (f.every_s or 0.0)
            if f.kind == "verifier_stall":
                steps += [_Step(t, "stop", i, r, f, "start"), _Step(t + f.duration_s, "cont", i, r, f, "end")]
            elif f.kind == "drafter_crash" and f.restart is False:
                steps += [_Step(t, "kill", i, r, f, "start")]
            else:
                steps += [_Step(t, "kill", i, r, f, "start"), _Step(t + f.duration_s, "start", i, r, f, "end")]
    return sorted(steps, key=lambda s: s.t)
