"""Node faults (`faults:` kinds verifier_restart, verifier_stall, drafter_crash; testbed/run/nodefaults.py) on the
simulator, as the runner carries them out on processes, at simulated times counted from the workload's start
(when the drafters begin):

- stall (SIGSTOP): the node does nothing until it continues: frames that reach it, the end of its compute and its
  timers wait, then happen in order;
- kill (SIGKILL): the node's state is gone: what it was computing, its timers, the frames in its receive queue
  and those on the wire to it (its connections reset). Frames sent to a dead verifier after it died wait in
  their senders' queues (ZeroMQ keeps them while it reconnects) and reach the restarted one; frames to a dead
  drafter are dropped (the verifier's ROUTER drops what it cannot route);
- restart: a new core with a new incarnation and a new backend, under the same config; a drafter keeps the
  sessions its predecessor finished (as `--resume` does), in a timed workload starts sessions only for what is
  left of duration_s, and begins as soon as its verifiers welcome it.
Not modelled: a process's start-up time (a restart is immediate at the end of `duration_s`) and a connection
reset losing frames in flight.
"""
from __future__ import annotations

from nodes.events import FAULTS_FILE, EventLog, Fault
from testbed.channels.faults import fault_steps


class SimNodeFaults:
    def __init__(self, run, faults):
        self.run = run
        self.steps = fault_steps(faults)
        self.log = EventLog(run.run_dir / "events" / FAULTS_FILE, "runner", True) if self.steps else None
        self.incarnations = 1
        self.t0 = 0.0

    def begin(self, now: float) -> None:
        self.t0 = now
        for step in self.steps:
            self.run._at(now + step.t, lambda s=step: self._step(s))

    def _name(self, node: str) -> str:
        run = self.run
        return node if node in run.nodes else next((n.name for n in run.nodes.values() if n.host == node), node)

    def _step(self, step) -> None:
        run, what, spec = self.run, step.what, step.spec
        node = run.nodes[self._name(spec.node)]
        if what == "stop" and node.down is None:
            node.down = "stopped"
        elif what == "cont" and node.down == "stopped":
            node.down = None
            held, node.held = node.held, []
            for fn in held:
                fn()
        elif what == "kill" and node.down != "dead":
            node.down, node.held, node.computing, node.wake = "dead", [], False, None
            node.died_at = run.env.now
            node.epoch += 1                       # whatever the old process had scheduled is void
            node.inq = 0
            if spec.restart is False and not node.finished:     # left dead: the run ends without it
                node.finished = True
                run.running -= 1
                run._check_done()
        elif what == "start" and node.down == "dead":
            self.incarnations += 1
            run._restart(node, self.incarnations, run.env.now - self.t0)
        if self.log is not None:
            self.log.write(Fault(t=run.env.now, node="runner", fault=step.fault, repeat=step.repeat, kind=spec.kind,
                                 link="", edge=step.edge, duration_s=spec.duration_s, target=node.name))

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
