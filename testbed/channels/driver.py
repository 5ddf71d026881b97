"""`ChannelDriver`: applies a `ChannelPlan` to a running emulation every interval, and logs every applied state.

A background thread wakes at t0 + k·interval, asks the plan for tick k's states, pushes the changed ones through
the emulation's live-update path (a line into a persistent `tc -batch`, a line to a delay daemon) and logs
every link's state (`events/links.jsonl`, a `Link` event of node "channel"), and every start and end of an
experiment's link fault (a `Fault` event, testbed/channels/faults.py) once its tick's states are applied. The states
depend on k only, so a run that falls behind skips ticks (counted, and logged as a `ChannelLate` event) instead of
stretching time; a fault edge in a skipped tick is logged at the tick that catches up.

`Telemetry` turns the drafters' own event logs into each station's demand: bytes per round, up (DRAFT frames)
and down (VERDICT frames), smoothed; a drafter that is done demands nothing.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

from nodes.events import ChannelLate, Crash, Done, Draft, EventLog, EventTail, Fault, Link, Verdict
from testbed.channels.plan import ChannelPlan
from testbed.net.linkstate import LinkState


class Telemetry:
    """Demand per (station, "up"|"down") in bytes per round, from the drafters' event logs as they grow."""

    def __init__(self, events_dir: Path | None, drafters: list[str], smoothing: float = 0.3):
        """events_dir: where the drafters' logs grow (the emulator); None: events are given to feed() (the
        simulator, which sees them as they are recorded)."""
        self.tail = EventTail({d: Path(events_dir) / f"{d}.jsonl" for d in drafters}) if events_dir else None
        self.smoothing = smoothing           # EWMA weight of the newest frame
        self.demand: dict[tuple[str, str], float] = {}
        # per drafter, for the joint band + γ allocation: EWMAs of accepted, rejections, bytes per drafted
        # token, draft time per token and round-trip time
        self.stats: dict[str, dict[str, float]] = {}

    def _stat(self, drafter: str, key: str, value: float) -> None:
        st = self.stats.setdefault(drafter, {})
        old = st.get(key)
        st[key] = value if old is None else (1 - self.smoothing) * old + self.smoothing * value

    def drafter_stats(self) -> dict[str, dict[str, float]]:
        """alpha (accepted / (accepted + rejections): unbiased for any window), bytes_per_token, per_token_s,
        rtt_s, for drafters with at least one verified round."""
        out = {}
        for d, st in self.stats.items():
            if "acc" in st and "rtt_s" in st:
                tested = st["acc"] + st["rej"]
                out[d] = {"alpha": min(0.99, max(0.01, st["acc"] / tested if tested > 0 else 0.5)),
                          "bytes_per_token": st.get("bytes_per_token", 24.0),
                          "per_token_s": st.get("per_token_s", 0.0), "rtt_s": st["rtt_s"]}
        return out

    def _ewma(self, key: tuple[str, str], value: float) -> None:
        old = self.demand.get(key)
        self.demand[key] = value if old is None else (1 - self.smoothing) * old + self.smoothing * value

    def poll(self) -> dict[tuple[str, str], float]:
        for d, e in (self.tail.new_events() if self.tail else ()):
            self.feed(d, e)
        return dict(self.demand)

    def feed(self, d: str, e) -> None:
        """One event of drafter d."""
        if isinstance(e, Draft):
            self._ewma((d, "up"), float(e.bytes_out))
            if e.gamma:
                self._stat(d, "bytes_per_token", e.bytes_out / e.gamma)
                self._stat(d, "per_token_s", e.draft_s / e.gamma)
        elif isinstance(e, Verdict):
            self._ewma((d, "down"), float(e.bytes_in))
            if e.gamma:
                self._stat(d, "acc", e.accepted)
                self._stat(d, "rej", float(e.accepted < e.gamma))
                self._stat(d, "rtt_s", e.rtt_s)
        elif isinstance(e, (Done, Crash)):
            self.demand[(d, "up")] = self.demand[(d, "down")] = 0.0


def link_view(net_plan, states: dict[str, LinkState], drafters: list[str], verifier: str,
              gamma_hints: dict[str, int] | None = None) -> dict[str, dict]:
    """What the verifier's network-aware policies are told per drafter: the bottleneck rate of its path each way
    and the path's base round-trip delay (no queueing), and a joint allocation's window if there is one."""
    view = {}
    for d in drafters:
        up, down = net_plan.path(d, verifier), net_plan.path(verifier, d)
        view[d] = {"uplink_mbps": min(states[l.name].rate_mbps(dr) for l, dr in up),
                   "downlink_mbps": min(states[l.name].rate_mbps(dr) for l, dr in down),
                   "rtt_s": round(sum(states[l.name].delay_ms for l, _ in up + down) / 1e3, 6)}
        if gamma_hints and d in gamma_hints:
            view[d]["gamma"] = gamma_hints[d]
    return view


class LinkStatePublisher:
    """Keeps RUN/linkstate.json current for the verifier's network-aware policies: per drafter, the bottleneck
    rate of its path to the verifier each way and the path's base round-trip delay (no queueing)."""

    def __init__(self, path: Path, net_plan, drafters: list[str], verifier: str):
        self.path, self.net_plan, self.drafters, self.verifier = Path(path), net_plan, drafters, verifier
        self.last = None

    def publish(self, states: dict[str, LinkState], gamma_hints: dict[str, int] | None = None) -> None:
        view = link_view(self.net_plan, states, self.drafters, self.verifier, gamma_hints)
        if view == self.last:
            return
        self.last = view
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"t": time.time(), "drafters": view}))
        os.replace(tmp, self.path)               # readers see the old or the new file, never half of one


def link_event(node: str, link: str, state: LinkState, **info) -> Link:
    """The log record of a link's state as applied now, with what produced it (`info`: a channel model's
    figures, the tick), written by the runner at set-up (node "runner") and by the driver (node "channel")."""
    return Link(t=time.time(), node=node, link=link, rate_up_mbps=state.rate_up_mbps,
                rate_down_mbps=state.rate_down_mbps, delay_ms=state.delay_ms, jitter_ms=state.jitter_ms,
                loss_pct=state.loss_pct, loss_down_pct=state.loss("down"), **info)


class ChannelDriver:
    def __init__(self, plan: ChannelPlan, apply: Callable[[str, LinkState], None], log_path: Path | None = None,
                 telemetry: Telemetry | None = None, clock: Callable[[], float] = time.monotonic,
                 on_tick: Callable[["ChannelDriver"], None] | None = None):
        self.plan, self.apply, self.telemetry, self.clock, self.on_tick = plan, apply, telemetry, clock, on_tick
        self.log_path = Path(log_path) if log_path else None
        self.applied: dict[str, LinkState] = {}
        self.gamma_hints: dict[str, int] = {}      # station -> window chosen by a joint allocation
        self.ticks = self.late = self.changes = 0
        self.last_tick = -1                        # fault edges up to here are logged
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: EventLog | None = None

    def start(self) -> None:
        if self.log_path:
            self._log = EventLog(self.log_path, "channel")
        self.t0 = self.clock()
        self.tick(0)              # the first states are in place before start() returns
        self._thread = threading.Thread(target=self._loop, name="channel-driver", daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self._log:
            self._log.close()
            self._log = None
        return {"ticks": self.ticks, "late_ticks": self.late, "changes": self.changes,
                "interval_s": self.plan.interval_s}

    def _loop(self) -> None:
        dt, k = self.plan.interval_s, 0
        try:
            while not self._stop.is_set():
                k += 1
                due = self.t0 + k * dt
                if self._stop.wait(max(0.0, due - self.clock())):
                    return
                behind = int((self.clock() - self.t0) / dt)
                if behind > k:            # skip ticks we are too late for: states follow time, not our pace
                    self._write(ChannelLate(t=time.time(), node="channel", skipped=behind - k, tick=behind))
                    self.late += behind - k
                    k = behind
                self.tick(k)
        except BaseException as e:      # the runner checks .error and fails the run with it
            self.error = e

    def tick(self, k: int) -> None:
        demands = self.telemetry.poll() if self.telemetry else None
        stats = self.telemetry.drafter_stats() if self.telemetry else None
        for a in self.plan.step(k, demands, stats):
            if "gamma_joint" in a.info:
                self.gamma_hints[a.info["station"]] = a.info["gamma_joint"]
            if self.applied.get(a.link) != a.state:
                self.apply(a.link, a.state)
                self.applied[a.link] = a.state
                self.changes += 1
            self._write(link_event("channel", a.link, a.state, tick=k, t_model_s=round(k * self.plan.interval_s, 6),
                                   **a.info))
        from testbed.channels.faults import fault_event
        for edge in self.plan.fault_edges(self.last_tick + 1, k):
            self._write(fault_event("channel", time.time(), edge, self.plan.interval_s))
        self.last_tick = k
        if self.on_tick:
            self.on_tick(self)
        self.ticks += 1

    def _write(self, event: Link | ChannelLate | Fault) -> None:
        if self._log:
            self._log.write(event)
