"""What the ZeroMQ shells of the drafter and the verifier share: running a core's compute on the wall clock,
the link state file, and how a node reports a bad config and stops on SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from nodes.config import NodeConfigError, build_config, load_config
from nodes.backends import draft_batch
from nodes.core.actions import Compute, DraftBatch, DraftWork, Output, Record, Send, VerifyWork, WakeAt, Work
from nodes.events import Pace


class Pacer:
    """Sleeps until a compute's profiled end. time.sleep overshoots by tens of microseconds (timer slack, wake-up
    latency), which is 2-5 % of a 2 ms draft step: the pacer learns the usual overshoot (EWMA) and wakes that much
    early, and asks the kernel for 1 µs timer slack. What it cannot hide (an overloaded CPU) shows in the Pace
    events as realised > profile."""

    def __init__(self):
        self.overshoot_s = 0.0
        _set_timer_slack_ns(1000)

    def sleep_until(self, deadline: float) -> None:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        target = remaining - self.overshoot_s
        if target > 0:
            before = time.perf_counter()
            time.sleep(target)
            over = (time.perf_counter() - before) - target
            self.overshoot_s = min(0.9 * self.overshoot_s + 0.1 * max(over, 0.0), 2e-4)   # spin 0.2 ms at most
        while time.perf_counter() < deadline:    # the last few tens of microseconds
            pass


def _set_timer_slack_ns(ns: int) -> None:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(29, ns, 0, 0, 0)    # PR_SET_TIMERSLACK (Linux)
    except (OSError, AttributeError):
        pass


def paced_work(backend, work: Work, pacer: Pacer | None = None):
    """Run a core's compute on the backend for real; return (result, wall seconds, profiled seconds or None).
    A profiled backend (the synthetic one: `cost_s` gives a duration) returns at once and is paced here to its
    profile, so its compute takes as long as the profile says; a real one (`cost_s` None) takes what it takes."""
    cost = backend.cost_s(work)          # before running it: verifying advances the sessions
    start = time.perf_counter()
    if isinstance(work, DraftWork):
        result = backend.extend(work.session, work.tokens)
    elif isinstance(work, DraftBatch):       # several sessions, one batched pass per step by the profile
        result = draft_batch(backend, work)
    else:
        result = backend.verify(list(work.requests))
    if cost is not None:
        (pacer or Pacer()).sleep_until(start + cost)
    elapsed = time.perf_counter() - start
    if isinstance(work, VerifyWork):
        for r in result:                 # each request's share of the batch's compute time, as measured
            r.compute_s = elapsed / len(result)
    return result, elapsed, cost


def run_work(backend, work: Work):
    """paced_work without the profiled time: (result, wall seconds)."""
    result, elapsed, _ = paced_work(backend, work)
    return result, elapsed


def pace_event(node: str, work: Work, profile_s: float, realised_s: float, now: float) -> Pace:
    if isinstance(work, DraftWork):
        return Pace(t=now, node=node, work="draft", profile_s=profile_s, realised_s=realised_s, tokens=work.tokens)
    if isinstance(work, DraftBatch):
        return Pace(t=now, node=node, work="draft", profile_s=profile_s, realised_s=realised_s,
                    tokens=sum(i.tokens for i in work.items), batch=len(work.items))
    return Pace(t=now, node=node, work="verify", profile_s=profile_s, realised_s=realised_s,
                tokens=sum(len(r.draft) + 1 for r in work.requests), batch=len(work.requests))


class Shell:
    """Carries out a core's actions on the wall clock: frames go out through `send`, events to the log,
    computes run here on the backend (and feed the core again). Subclasses own the sockets."""

    def __init__(self, core, backend, log):
        self.core, self.backend, self.log = core, backend, log
        self.pacer = Pacer()

    def send(self, to, frame: bytes) -> None:
        raise NotImplementedError

    def record(self, event) -> None:
        self.log.write(event)

    def output(self, result: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no outputs")

    def execute(self, actions) -> tuple[float | None, bool]:
        """Returns when the core wants to be woken (None: on the next frame) and whether a compute ran."""
        wake, ran = None, False
        pending = list(actions)
        while pending:
            a = pending.pop(0)
            if isinstance(a, Send):
                self.send(a.to, a.frame)
            elif isinstance(a, Record):
                self.record(a.event)
            elif isinstance(a, Output):
                self.output(a.result)
            elif isinstance(a, WakeAt):
                wake = a.t
            elif isinstance(a, Compute):
                result, elapsed, profile_s = paced_work(self.backend, a.work, self.pacer)
                now = time.time()
                if profile_s is not None:
                    self.record(pace_event(self.log.node, a.work, profile_s, elapsed, now))
                pending += self.core.on_compute_done(result, elapsed, now)
                ran = True
        return wake, ran


class LinkView:
    """The drafters' link state as the runner publishes it (RUN/linkstate.json: per drafter uplink_mbps,
    downlink_mbps, rtt_s, optionally gamma); re-read when the file changes, checked at most every 50 ms."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.mtime = None
        self.checked = 0.0
        self.drafters: dict[str, dict] = {}

    def poll(self) -> dict[str, dict] | None:
        """The new view if the file changed since the last call, else None."""
        now = time.monotonic()
        if not self.path or now - self.checked <= 0.05:
            return None
        self.checked = now
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime == self.mtime:
                return None
            self.drafters = json.loads(self.path.read_text()).get("drafters", {})
            self.mtime = mtime
            return self.drafters
        except (OSError, ValueError):   # not written yet, or mid-replace: keep the last view
            return None

    def get(self, drafter: str) -> dict:
        self.poll()
        return self.drafters.get(drafter, {})


def node_config(model, args, from_flags):
    """The node's config: its --config file, or the model built from its manual flags (one set of defaults).
    A bad config prints one line per problem and exits with status 2."""
    try:
        if args.config:
            return load_config(model, args.config)
        return build_config(model, from_flags(args), "command line")
    except NodeConfigError as e:
        print(str(e), file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def cost_model(profile: dict | None):
    """A synthetic node's latency profile (config `profile`) as a nodes.compute cost model; None: the linear
    *_ms fields. A table path is absolute by now (the experiment's checks resolve it); a bad one stops the node
    with a one-line error and status 2."""
    if profile is None:
        return None
    from nodes.compute import ProfileError, cost_model_from_spec
    try:
        return cost_model_from_spec(profile, Path("."))
    except ProfileError as e:
        print(str(e), file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def wait_at_gate(path: str | None) -> None:
    """Wait at the runner's start gate (a FIFO, runner._open_gates) until it is closed: every node of a run starts
    its work at once, not as each process comes up. No gate (a node started by hand): start now."""
    if path and os.path.exists(path):
        with open(path, "rb") as gate:
            gate.read()


def exit_on_sigterm(code: int) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(code))


def log_error(node: str, message: str) -> None:
    print(f"{node}: {message}", file=sys.stderr, flush=True)


def crashed(log, node: str, message: str) -> int:
    """A node stopped on an error: said on stderr and as a `crash` event in its log; the exit status (1)."""
    from nodes.events import Crash
    log_error(node, message)
    log.write(Crash(t=time.time(), node=node, error=message))
    return 1
