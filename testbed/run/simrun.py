"""`backend: sim`: an experiment's own node cores on a simulated clock (SimPy), joined by a model of the network.

    stats = run_sim(exp, run_dir)      # the runner calls it for backend sim; raises SimFailed

The same configs as the emulator's processes (testbed/run/node_configs.py), the same cores (nodes/core/), the same
backends and policies; only the drivers differ. Where a ZeroMQ shell sends a frame, the simulator asks the network
model (testbed/sim/network.py) when it reaches the other host; where a shell runs a compute and paces it, the
simulator advances its clock by the backend's profiled time (or, for a real model, the time the compute took
here); channel models step at the same ticks as the emulator's driver. Events carry simulated seconds (t = 0 at
the start), and the results directory is the emulator's: events, outputs, metrics, plots.

Drafter telemetry for demand-driven and joint AP band allocation comes from the drafters' events as they are
recorded (the emulator's driver reads the same events from the logs), so the channel plan sees the same demand.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import simpy

from nodes.client import prompt_texts
from nodes.core.actions import ClientAddr, Compute, DraftWork, Output, Record, Send, WakeAt
from nodes.core.client import ClientCore
from nodes.core.drafter import DrafterCore
from nodes.core.verifier import VerifierCore
from nodes.events import Connect, EventLog, Link, Verify
from testbed.run.clients import client_config, demands, served_drafter, users
from testbed.run.node_configs import drafter_config, verifier_config
from testbed.sim.frames import FrameCosts, ReceiveStage


class SimFailed(RuntimeError):
    pass


# What a frame costs beyond the network model (the emulator host's frame handling, or nothing with
# sim.frame_costs none): testbed/sim/frames.py, where the constants and their measurements are.


def run_sim(exp, run_dir: Path) -> dict:
    """Simulate one experiment point into run_dir (events, outputs); its statistics for the manifest."""
    from testbed.channels.plan import ChannelPlan
    from testbed.sim.network import SimNetwork
    plan = ChannelPlan(exp.topology_obj(), exp.channel_interval_ms / 1e3, exp.seed, exp.faults)
    plan.known_demand = demands(exp)
    # an outage (or a flap's down phase) is a window in which the network model drops every segment, known up
    # front: TCP's retransmissions then land after it, RTO backoff and all (testbed/sim/network.py)
    network = SimNetwork(exp.topology_obj(), seed=exp.seed, outages=plan.faults.outage_windows())
    sim = SimRun(exp, run_dir, network, plan if plan.driven_links() else None)
    stats = sim.run(until_s=exp.limits.run_timeout_s)
    if stats["unfinished"]:
        raise SimFailed(f"drafter(s) {', '.join(stats['unfinished'])} had not finished after "
                        f"{exp.limits.run_timeout_s:g} simulated seconds (limits.run_timeout_s)")
    return stats


class _Node:
    """One core with what its shell would hold: its host, backend, event log, wake-up and compute state."""

    def __init__(self, name: str, host: str, core, backend, log: EventLog):
        self.name, self.host, self.core, self.backend, self.log = name, host, core, backend, log
        self.wake: float | None = None
        self.computing = False
        self.finished = False        # a drafter whose core said done (counted once)
        self.cpu_free = 0.0          # when its CPU is done with the frames it sends and (verifier) receives
        self.inq = 0                 # a verifier's frames that arrived and wait for its CPU
        self.deciding = False        # a verifier's decision is scheduled after this instant's frames
        self.down: str | None = None     # a node fault's: "stopped" | "dead" (testbed/sim/nodefaults.py)
        self.held: list = []             # what happens when a stopped node continues (or a dead verifier restarts)
        self.epoch = 0                   # its process: what the killed one scheduled is void
        self.died_at = 0.0               # when a node fault last killed it
        self.restarting = False          # a restarted drafter: begins once welcomed, not at the start gate


class SimRun:
    def __init__(self, exp, run_dir: Path, network, plan=None):
        from testbed.net.netplan import NetPlan
        self.exp, self.run_dir, self.net, self.plan = exp, Path(run_dir), network, plan
        self.last_at: dict[tuple[str, str], float] = {}   # (sender, receiver) -> its last frame's delivery
        self.costs = FrameCosts(exp.sim.frame_costs)       # beyond the network: this host's frame handling, or none
        self.receiving = ReceiveStage()                    # the receiving hosts' per-byte work, a frame at a time
        topo = exp.topology_obj()
        self.net_plan = NetPlan(topo, "sim")
        self.states = {l.link_name: l.state() for l in topo.links}   # as applied: the link view reads them
        self.env = simpy.Environment()
        self.nodes: dict[str, _Node] = {}
        self.outputs: dict[str, list[dict]] = {}
        self.endpoint_of: dict[str, str] = {}        # drafter-facing endpoint -> verifier name
        self.welcomed: dict[str, set[str]] = {}       # drafter -> verifier names that answered HELLO
        self.frames = self.computes = self.rounds = 0     # rounds: drafted windows verified
        self.link_log = EventLog(self.run_dir / "events" / "links.jsonl", "channel")
        self.telemetry = None                          # drafter demand for the AP band split, when a radio asks
        if plan is not None and plan.uses_telemetry():
            from testbed.channels.driver import Telemetry
            self.telemetry = Telemetry(None, exp.drafter_nodes())
        self._build()

    # -- set-up ----------------------------------------------------------------------------------------
    def _build(self) -> None:
        from nodes.drafter import load_prompts, load_trace, make_backend as draft_backend
        from nodes.verifier import make_backend as verify_backend
        exp, here = self.exp, self.run_dir.resolve()
        vnames = {h: (h if exp.routing.policy else "verifier") for h in exp.verifier_nodes()}
        endpoints = []
        for vhost, vname in vnames.items():
            endpoint = f"sim://{vhost}:{exp.verifier.port}"
            config = verifier_config(exp, vname, endpoint, here, None)
            backend = verify_backend(config, clock=lambda: self.env.now)
            node = _Node(vname, vhost, VerifierCore(config, backend), backend, EventLog(config.log, vname, True))
            self.nodes[vname] = node
            self.endpoint_of[endpoint] = vname
            endpoints.append(endpoint)
        serves = served_drafter(exp) if exp.clients is not None else None
        for i, d in enumerate(exp.drafter_nodes()):
            config = drafter_config(exp, d, i, endpoints, here,
                                    f"sim://{d}:{exp.clients.port}" if d == serves else None)
            backend = draft_backend(config, clock=lambda: self.env.now)
            core = DrafterCore(config, backend, load_prompts(config, backend), load_trace(config))
            self.nodes[d] = _Node(d, d, core, backend, EventLog(config.log, d, True))
            self.outputs[d] = []
            self.welcomed[d] = set()
        for i, u in enumerate(users(exp) if exp.clients is not None else []):
            config = client_config(exp, u, i, f"sim://{serves}:{exp.clients.port}", here)
            self.nodes[u] = _Node(u, u, ClientCore(config, prompt_texts(config.prompts)), None,
                                  EventLog(config.log, u, True))
            self.nodes[u].log.write(Connect(t=0.0, node=u, endpoint=config.connect, requests=len(config.requests)))
            self.outputs[u] = []
        self.serves = serves
        self._drafters = [n for n in self.nodes.values() if isinstance(n.core, DrafterCore)]
        self._verifiers = [n for n in self.nodes.values() if isinstance(n.core, VerifierCore)]
        self._clients = [n for n in self.nodes.values() if isinstance(n.core, ClientCore)]
        self.running = len(self._drafters) + len(self._clients)     # drafters and clients not done yet
        self.gated: list[_Node] = []                  # drafters connected to every verifier, waiting to begin
        from testbed.sim.nodefaults import SimNodeFaults
        self.node_faults = SimNodeFaults(self, exp.faults)

    # -- the run ---------------------------------------------------------------------------------------
    def run(self, until_s: float) -> dict:
        """Simulate until every drafter is done or `until_s` simulated seconds; the run's statistics."""
        started = time.perf_counter()
        if self.plan is not None:
            self.env.process(self._channels())
        else:                                 # the network-aware policies' view, as the emulator publishes it
            from testbed.channels.driver import link_view
            view = link_view(self.net_plan, self.states, [d.name for d in self.drafters()], self.exp.verifier.node)
            for v in self.verifiers():
                v.core.set_links(view)
        for node in self.verifiers():
            self._handle(node, node.core.on_ready(f"sim://{node.host}", self.env.now))
        for d in self.drafters():
            for endpoint, vname in self.endpoint_of.items():
                self._send(d, vname, d.core.hello_frame())
        done = self.env.event()
        self._all_done = done
        from nodes.protocol import in_process_frames
        try:
            with in_process_frames():
                self.env.run(until=simpy.AnyOf(self.env, [done, self.env.timeout(until_s)]))
        finally:                               # buffered logs: written out whatever ended the run (Ctrl-C too)
            for node in self.nodes.values():
                node.log.close()
            self.link_log.close()
            self.node_faults.close()
        wall = time.perf_counter() - started
        for d, results in self.outputs.items():
            with open(self.nodes[d].core.config.out, "w") as f:
                for r in results:
                    f.write(json.dumps(r) + "\n")
        unfinished = [d.name for d in self.drafters() + self._clients if not d.core.done]
        return {"simulated_s": round(self.env.now, 6), "wall_s": round(wall, 3),
                "speed_x": round(self.env.now / wall, 2) if wall > 0 else None, "frames": self.frames,
                "verified_rounds": self.rounds,
                "frame_costs": self.costs.manifest(),
                "rounds_per_wall_s": round(self.rounds / wall, 1) if wall > 0 else None,
                "computes": self.computes, "unfinished": unfinished, "network": self.net.stats()}

    def drafters(self) -> list[_Node]:
        return self._drafters

    def verifiers(self) -> list[_Node]:
        return self._verifiers

    # -- frames ----------------------------------------------------------------------------------------
    def _send(self, src: _Node, to: str, frame: bytes) -> None:
        dst = self.nodes[to]
        self.frames += 1
        now = self.env.now
        # the sender's CPU sends one frame at a time; the network sees the frame at `now` (the wait is added
        # after it, which only differs where the frame would have queued behind another sender's at a shared hop);
        # the receiving host then does the frame's per-byte work, one frame at a time (testbed/sim/frames.py)
        costs = self.costs
        src.cpu_free = max(now, src.cpu_free) + costs.send_s
        recv = 0.0 if isinstance(dst.core, VerifierCore) else costs.recv_s   # a drafter's: latency (_arrive)
        ready = self.net.deliver_at(src.host, dst.host, len(frame), now) + (src.cpu_free - now)
        at = self.receiving.admit(dst.host, ready, costs.work_s(len(frame)), now) + recv + costs.latency_s
        key = (src.name, dst.name)
        at = max(at, self.last_at.get(key, 0.0))       # one connection, one byte stream: in order
        self.last_at[key] = at
        epoch = src.epoch
        self._at(at, lambda: self._arrive(src.name, dst, frame, now, epoch))

    def _arrive(self, sender: str, node: _Node, frame: bytes, sent: float = 0.0, epoch: int = 0,
                held: bool = False) -> None:
        now = self.env.now
        if held and self.nodes[sender].epoch != epoch:
            return      # it waited in the sender's queue, and the sender was killed since
        if node.down == "dead" and (sent < node.died_at or not isinstance(node.core, VerifierCore)):
            return      # on the wire when the process died (its connections reset), or to a dead drafter
        if node.down is not None:                    # stopped, or sent to a dead verifier after it died: it waits
            node.held.append(lambda: self._arrive(sender, node, frame, sent, epoch, True))   # (sender's queue)
            return
        if isinstance(node.core, VerifierCore):      # its CPU takes frames one at a time (costs.recv_s)
            node.inq += 1
            node.cpu_free = max(now, node.cpu_free) + self.costs.recv_s
            epoch = node.epoch
            self._at(node.cpu_free, lambda: self._take(sender, node, frame, epoch))
            return
        core = node.core
        if isinstance(core, ClientCore):
            self._handle(node, core.on_frames([(sender, frame)], now))
            return
        if isinstance(self.nodes[sender].core, ClientCore):      # a user's request to its drafter
            self._handle(node, core.on_client_frames([(sender, frame)], now))
            return
        if len(self.welcomed[node.name]) < len(self.endpoint_of) and sender not in self.welcomed[node.name]:
            if core.before_welcome(frame):           # a restarted drafter: an answer to its predecessor
                return
            endpoint = next(e for e, v in self.endpoint_of.items() if v == sender)
            _, actions = core.on_welcome(endpoint, frame, now)
            self.welcomed[node.name].add(sender)
            self._handle(node, actions)
            if len(self.welcomed[node.name]) == len(self.endpoint_of) and node.restarting:
                node.restarting = False
                self._handle(node, core.begin(now))
            elif len(self.welcomed[node.name]) == len(self.endpoint_of):
                self.gated.append(node)
                if len(self.gated) == len(self._drafters):   # the emulator's start gate: all begin together
                    for d in self.gated + self._clients:
                        self._handle(d, d.core.begin(now))
                    self.node_faults.begin(now)
            return
        self._handle(node, core.on_frames([(sender, frame)], now))

    # -- actions ---------------------------------------------------------------------------------------
    def _handle(self, node: _Node, actions) -> None:
        for a in actions:
            if isinstance(a, Send):
                to = a.to.name if isinstance(a.to, ClientAddr) else self.serves if isinstance(node.core, ClientCore) \
                    else a.to if isinstance(a.to, str) else str(a.to)
                self._send(node, to, a.frame)
            elif isinstance(a, Record):
                node.log.write(a.event)
                if self.telemetry is not None and isinstance(node.core, DrafterCore):
                    self.telemetry.feed(node.name, a.event)
                if type(a.event) is Verify and a.event.round:
                    self.rounds += 1
            elif isinstance(a, Output):
                self.outputs[node.name].append(a.result)
            elif isinstance(a, WakeAt):
                node.wake = a.t
                if a.t == float("inf"):         # a client with nothing to send and nothing awaited
                    continue
                self._at(max(a.t, self.env.now), lambda n=node, t=a.t: self._timer(n, t))
            elif isinstance(a, Compute):
                self._compute(node, a.work)
        if not node.finished and isinstance(node.core, (DrafterCore, ClientCore)) and node.core.done:
            node.finished = True
            self.running -= 1
            self._check_done()

    def _check_done(self) -> None:
        if self.running == 0 and not self._all_done.triggered:
            self._all_done.succeed()

    def _take(self, sender: str, node: _Node, frame: bytes, epoch: int) -> None:
        if epoch != node.epoch:                  # in the receive queue of a process that was killed
            return
        if node.down == "stopped":
            node.held.append(lambda: self._take(sender, node, frame, epoch))
            return
        now = self.env.now
        node.inq -= 1
        self._handle(node, node.core.on_frame(sender, frame, now))
        if node.inq == 0 and not node.computing and not node.deciding:
            # decide once no frame waits (and after this instant's events), as the shell drains its socket before
            # it decides: drafts that arrive while it handles one are one batch, not the first alone and a wait
            node.deciding = True
            self._at(now, lambda: self._decide(node))

    def _decide(self, node: _Node) -> None:
        if node.down == "stopped":
            node.held.append(lambda: self._decide(node))
            return
        node.deciding = False
        if node.down == "dead":
            return
        if not node.computing:
            self._handle(node, node.core.decide(self.env.now))

    def _timer(self, node: _Node, t: float) -> None:
        if node.down == "stopped":
            node.held.append(lambda: self._timer(node, t))
            return
        if node.wake != t or node.computing or node.down == "dead":   # replaced, busy (the compute's end re-runs
            return                                                      # it) or its process killed
        node.wake = None
        if isinstance(node.core, VerifierCore):
            self._handle(node, node.core.decide(self.env.now))
        else:
            self._handle(node, node.core.on_timer(self.env.now))

    def _compute(self, node: _Node, work) -> None:
        """Run the work on the backend now (its result is known at once); the clock says it ends after its
        profiled time, or the time it took here for a real model. A DraftBatch (speculation.batch_drafting) is
        one compute: its cost is the batched passes' (asked before running it)."""
        from nodes.backends import draft_batch
        from nodes.core.actions import DraftBatch, VerifyWork
        cost = node.backend.cost_s(work)
        t = time.perf_counter()
        result = node.backend.extend(work.session, work.tokens) if isinstance(work, DraftWork) else \
            draft_batch(node.backend, work) if isinstance(work, DraftBatch) else \
            node.backend.verify(list(work.requests))
        if cost is None:
            cost = time.perf_counter() - t
        node.computing = True
        self.computes += 1
        if isinstance(work, VerifyWork):
            for r in result:
                r.compute_s = cost / len(result)

        epoch = node.epoch

        def done():
            if epoch != node.epoch:              # killed while computing: the result is lost with the process
                return
            if node.down == "stopped":
                node.held.append(done)
                return
            node.computing = False
            self._handle(node, node.core.on_compute_done(result, cost, self.env.now))
            if isinstance(node.core, VerifierCore):
                self._handle(node, node.core.decide(self.env.now))
            elif node.wake is not None and node.wake <= self.env.now:
                self._timer(node, node.wake)
        self._at(self.env.now + cost, done)

    def _restart(self, node: _Node, incarnation: int, elapsed_s: float) -> None:
        """A node fault's restart (testbed/sim/nodefaults.py): a new core and backend under the node's config."""
        from nodes.drafter import load_prompts, load_trace, make_backend as draft_backend
        from nodes.verifier import make_backend as verify_backend
        config, now = node.core.config, self.env.now
        node.down, node.computing, node.inq, node.deciding, node.wake = None, False, 0, False, None
        if isinstance(node.core, VerifierCore):
            node.backend = verify_backend(config, clock=lambda: self.env.now)
            node.core = VerifierCore(config, node.backend, incarnation=incarnation)
            self._handle(node, node.core.on_ready(f"sim://{node.host}", now))
            held, node.held = node.held, []
            for fn in held:                      # what the drafters sent while it was down
                fn()
            return
        w = config.workload
        if w.duration_s is not None:             # a timed workload: only what is left of it
            config = config.model_copy(update={"workload": w.model_copy(
                update={"duration_s": max(1e-3, w.duration_s - elapsed_s)})})
        node.backend = draft_backend(config, clock=lambda: self.env.now)
        finished = {r["session"] for r in self.outputs[node.name]}
        node.core = DrafterCore(config, node.backend, load_prompts(config, node.backend), load_trace(config),
                                incarnation=incarnation, finished=finished)
        node.restarting, node.held = True, []
        self.welcomed[node.name] = set()
        for vname in self.endpoint_of.values():
            self._send(node, vname, node.core.hello_frame())

    def _at(self, t: float, fn) -> None:
        ev = self.env.timeout(max(0.0, t - self.env.now))
        ev.callbacks.append(lambda _e: fn())

    # -- channels --------------------------------------------------------------------------------------
    def _channels(self):
        """The channel plan's states at its ticks, as the emulator's driver applies them (no late ticks here),
        and the link faults' starts and ends (testbed/channels/faults.py) after their tick's states."""
        from testbed.channels.driver import link_view
        from testbed.channels.faults import fault_event
        k = 0
        while True:
            hints = {}
            tele = self.telemetry
            for a in self.plan.step(k, dict(tele.demand) if tele else None, tele.drafter_stats() if tele else None):
                if "gamma_joint" in a.info:
                    hints[a.info["station"]] = a.info["gamma_joint"]
                self.net.set_link(a.link, a.state_for_sim, self.env.now)
                self.states[a.link] = a.state
                self.link_log.write(Link(t=self.env.now, node="channel", link=a.link, rate_up_mbps=a.state.rate_up_mbps,
                                         rate_down_mbps=a.state.rate_down_mbps, delay_ms=a.state.delay_ms,
                                         jitter_ms=a.state.jitter_ms, loss_pct=a.state.loss_pct,
                                         loss_down_pct=a.state.loss("down"), tick=k,
                                         t_model_s=round(k * self.plan.interval_s, 6), **a.info))
            for edge in self.plan.fault_edges(k, k):
                self.link_log.write(fault_event("channel", self.env.now, edge, self.plan.interval_s))
            view = link_view(self.net_plan, self.states, [d.name for d in self.drafters()],
                             self.exp.verifier.node, hints)
            for v in self.verifiers():
                v.core.set_links(view)
            k += 1
            yield self.env.timeout(self.plan.interval_s)
