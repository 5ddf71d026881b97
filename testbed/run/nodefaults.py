"""Node faults of an experiment's `faults:` (testbed/channels/faults.py has the link faults), carried out by the runner
on the node processes of a mininet or local run:

    faults:
      - {kind: verifier_restart, node: verifier, at_s: 8, duration_s: 2}   # SIGKILL, started again 2 s later
      - {kind: verifier_stall, node: verifier, at_s: 8, duration_s: 3}     # SIGSTOP, SIGCONT 3 s later
      - {kind: drafter_crash, node: d2, at_s: 5, duration_s: 1}            # SIGKILL, started again 1 s later
      - {kind: drafter_crash, node: d3, at_s: 5, duration_s: 1, restart: false}   # stays dead

Time. A node fault's `at_s` counts from the workload's start (when the runner opens the drafters' start gates),
not from the network's tick 0 as a link fault's does: processes start after the network, at a time the machine
decides. Repeats (every_s, count) work as for link faults. Each start and end is a `fault` event (target: the
node) in events/faults.jsonl, and metrics and plots treat it as they treat a link fault's.

What the nodes do about it (nodes/core/recovery.py): drafters probe a silent verifier; a restarted verifier is
recognised by its new incarnation and every session resumes there from its committed tokens; a stalled one is
waited for. A restarted drafter keeps the sessions it finished (its outputs file is written as each finishes),
starts the ones it had not finished again from their prompts under the same session ids, and the verifier drops
what its predecessor had open. A drafter that is not restarted leaves its unfinished sessions failed: the run
ends without them and says so. The simulator carries out the same faults on its cores (testbed/sim/nodefaults.py).
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

from nodes.events import FAULTS_FILE, EventLog, Fault
from testbed.channels.faults import NODE_KINDS, FaultSpec, fault_steps


def check_node_faults(faults: list[FaultSpec], drafters: list[str], verifiers: list[str], backend: str,
                      single_verifier: bool) -> list[tuple[tuple, str]]:
    """(field path, message) for node faults naming no such node, or on a backend that cannot carry them out."""
    found = []
    for i, f in enumerate(faults):
        if f.kind not in NODE_KINDS or f.node is None:
            continue
        loc = ("faults", i)
        names = drafters if f.kind == "drafter_crash" else verifiers + (["verifier"] if single_verifier else [])
        if f.node not in names:
            what = "drafter" if f.kind == "drafter_crash" else "verifier"
            found.append((loc + ("node",), f"no {what} named {f.node!r}; {what}s: {', '.join(names) or 'none'}"))
    return found


@dataclass
class NodeFaults:
    """The node faults' steps in time order; `poll` carries out the due ones on the runner's `Nodes` (nodeprocs.py)."""
    faults: list[FaultSpec]
    events_dir: object
    steps: list[_Step] = field(default_factory=list)
    down: set = field(default_factory=set)           # nodes killed by a fault and not (yet) started again
    t0: float | None = None

    def __post_init__(self):
        self.steps = fault_steps(self.faults)
        self.log = EventLog(os.path.join(str(self.events_dir), FAULTS_FILE), "runner") if self.steps else None

    def begin(self, now: float) -> None:
        self.t0 = now

    def pending(self) -> bool:
        return any(not s.done for s in self.steps)

    def expected_dead(self, name: str) -> bool:
        return name in self.down

    def restart_pending(self, nodes, name: str) -> bool:
        """A node a fault killed that a later step starts again (so the run is not over without it)."""
        return any(not s.done and s.what == "start" and nodes.name_of(s.spec.node) == name for s in self.steps)

    def poll(self, nodes, now: float) -> None:
        if self.t0 is None:
            return
        for s in self.steps:
            if s.done or now - self.t0 < s.t:
                continue
            s.done = True
            name = nodes.name_of(s.spec.node)
            p = nodes.procs.get(name)
            if s.what == "kill" and p is not None and p.poll() is None:
                self.down.add(name)
                p.send_signal(signal.SIGKILL)
                p.wait()
            elif s.what == "stop" and p is not None and p.poll() is None:
                p.send_signal(signal.SIGSTOP)
            elif s.what == "cont" and p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
            elif s.what == "start" and name in self.down:
                nodes.restart(name, now - self.t0)
                self.down.discard(name)
            if s.edge is not None:
                f = s.spec
                self.log.write(Fault(t=time.time(), node="runner", fault=s.fault, repeat=s.repeat, kind=f.kind,
                                     link="", edge=s.edge, duration_s=f.duration_s, target=name))

    def resume_stopped(self, nodes) -> None:
        """A run that ends mid-stall must not leave a stopped process behind (it could not even take SIGTERM)."""
        for s in self.steps:
            if s.what == "cont" and not s.done:
                p = nodes.procs.get(nodes.name_of(s.spec.node))
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
