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
from nodes.core.actions import Compute, DraftWork, Output, Record, Send, VerifyWork, WakeAt, Work


def run_work(backend, work: Work):
    """Run a core's compute on the backend for real; return (result, wall seconds). A profiled backend (the
    synthetic one: `cost_s` gives a duration) returns at once and is paced here to its profile, so its compute
    takes as long as the profile says; a real one (`cost_s` None) takes what it takes."""
    cost = backend.cost_s(work)          # before running it: verifying advances the sessions
    start = time.perf_counter()
    if isinstance(work, DraftWork):
        result = backend.extend(work.session, work.tokens)
    else:
        result = backend.verify(list(work.requests))
    if cost is not None:
        remaining = cost - (time.perf_counter() - start)
        if remaining > 0:
            time.sleep(remaining)
    elapsed = time.perf_counter() - start
    if isinstance(work, VerifyWork):
        for r in result:                 # each request's share of the batch's compute time, as measured
            r.compute_s = elapsed / len(result)
    return result, elapsed


class Shell:
    """Carries out a core's actions on the wall clock: frames go out through `send`, events to the log,
    computes run here on the backend (and feed the core again). Subclasses own the sockets."""

    def __init__(self, core, backend, log):
        self.core, self.backend, self.log = core, backend, log

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
                result, elapsed = run_work(self.backend, a.work)
                pending += self.core.on_compute_done(result, elapsed, time.time())
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


def exit_on_sigterm(code: int) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(code))


def log_error(node: str, message: str) -> None:
    print(f"{node}: {message}", file=sys.stderr, flush=True)
