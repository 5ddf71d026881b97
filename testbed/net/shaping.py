"""Shaping as data: turn link states into the exact tc / iptables / ethtool commands for every interface.

Nothing here runs a command, so plans can be printed (`testbed check`) and tested without root.

Per link direction (sender → receiver):
- rate: an HTB class on the sender's egress interface, with an explicit leaf queue (a default HTB leaf
  holds 1000 packets, 12 s of buffer at 1 Mbit/s);
- delay, jitter, loss, by backend:
  - `netem`: the HTB leaf is a netem qdisc (where the kernel has netem);
  - `nfqueue`: delay is applied per *path*, at the destination host's ingress: an iptables raw-table rule per
    source host sends its packets to an NFQUEUE queue of the delay daemon (testbed/net/nfqdelay.py) in the
    destination's namespace, with the summed delay, compounded loss and combined jitter of every link
    direction on the path. Never on egress: a packet held there still counts against the sending socket's
    TCP small-queue budget, which capped a 20 Mbit/s link with 5 ms delay at 9.3 Mbit/s (netem orphans its
    packets and has no such problem). Constant delays commute with the FIFO rate shapers, so moving them to
    the path's end keeps every flow's timing. Bridged frames never reach iptables, which is why the element
    cannot sit at a bridge port. The rules have no --queue-bypass: if a daemon dies its traffic stops
    (fail closed) rather than running on silently undelayed.
- TSO/GSO/GRO off on every shaped interface: otherwise HTB lets a 64 KB super-packet out at line rate.
"""
from __future__ import annotations

import math
import shlex
from collections.abc import Collection
from dataclasses import dataclass

from testbed.net.delayd import QueueParams
from testbed.net.linkstate import LinkState
from testbed.net.netplan import DIRECTIONS, Endpoint, NetPlan

BACKENDS = ("netem", "nfqueue")
FRAME = 1514                      # bytes of a full Ethernet frame as tc counts it (no FCS)


@dataclass(frozen=True)
class Cmd:
    where: str | None             # host whose namespace runs it; None = root namespace
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"[{self.where or 'root'}] {shlex.join(self.argv)}"


def burst_bytes(rate_mbps: float) -> int:
    """HTB bucket: 1 ms of traffic, at least two frames. Small, so a lone message is serialised at the
    configured rate instead of leaving in one burst."""
    return max(2 * FRAME, int(rate_mbps * 1e6 / 8 * 1e-3))


def htb_class(verb: str, intf: str, rate_mbps: float) -> tuple[str, ...]:
    kbit = max(1, round(rate_mbps * 1000))
    burst = burst_bytes(rate_mbps)
    return ("class", verb, "dev", intf, "parent", "5:", "classid", "5:1", "htb", "rate", f"{kbit}kbit",
            "ceil", f"{kbit}kbit", "burst", str(burst), "cburst", str(burst), "quantum", str(FRAME))


def pfifo_leaf(verb: str, intf: str, queue_pkts: int) -> tuple[str, ...]:
    return ("qdisc", verb, "dev", intf, "parent", "5:1", "handle", "10:", "pfifo", "limit", str(queue_pkts))


def netem_leaf(verb: str, intf: str, state: LinkState, direction: str = "up") -> tuple[str, ...]:
    # netem's jitter is uniform like the daemon's, but netem may reorder jittered packets; the daemon does not.
    delay = ("delay", f"{state.delay_ms:g}ms") + ((f"{state.jitter_ms:g}ms",) if state.jitter_ms else ())
    return ("qdisc", verb, "dev", intf, "parent", "5:1", "handle", "10:", "netem", "limit",
            str(state.queue_pkts)) + delay + ("loss", f"{state.loss(direction):g}%")


@dataclass(frozen=True)
class PathDelay:
    """NFQUEUE delay element for all packets from host `src` arriving at host `dst`: the delay, jitter and loss
    of every link direction on the path, applied at once at the destination's ingress."""
    src: str
    dst: str
    src_ip: str
    intf: str                                  # dst's interface
    queue: int                                 # NFQUEUE number in dst's namespace (the source's host index)
    hops: tuple[tuple[str, str], ...]          # (link name, direction) from src to dst

    def rule(self) -> tuple[str, ...]:
        return ("iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-i", self.intf, "-s", f"{self.src_ip}/32",
                "-j", "NFQUEUE", "--queue-num", str(self.queue))

    def params(self, states: dict[str, LinkState]) -> QueueParams:
        """Delays add; losses compound; jitters (independent uniforms) become one uniform of equal variance."""
        hop_states = [states[link] for link, _ in self.hops]
        delay = sum(s.delay_ms for s in hop_states)
        jitter = math.sqrt(sum(s.jitter_ms ** 2 for s in hop_states))
        keep = math.prod(1 - states[link].loss(d) / 100 for link, d in self.hops)
        return QueueParams(self.queue, round(delay, 6), round(jitter, 6), round(1 - keep, 9))


@dataclass(frozen=True)
class DirectionShaping:
    link: str
    direction: str
    sender: Endpoint              # its egress carries the HTB class (and the netem leaf)
    receiver: Endpoint


@dataclass
class Update:
    """What a live change needs: tc batch lines per namespace and daemon settings per host."""
    tc_lines: dict[str | None, list[str]]
    daemon_sets: list[tuple[str, QueueParams]]


class ShapingPlan:
    """The shaping of a whole NetPlan under one delay backend.

    delay_elements: 'needed' gives a path a delay element only if some link on it starts with delay, jitter or
    loss; 'all' gives one to every path, so any link can be given delay live; a collection of link names
    gives one to the paths that need it plus every path crossing those links (the ones a channel varies).
    """

    def __init__(self, net: NetPlan, backend: str, delay_elements: str | Collection[str] = "needed"):
        if backend not in BACKENDS:
            raise ValueError(f"delay backend must be one of {BACKENDS}, got {backend!r}")
        if isinstance(delay_elements, str) and delay_elements not in ("needed", "all"):
            raise ValueError(f"delay_elements must be 'needed', 'all' or link names, got {delay_elements!r}")
        live = set() if isinstance(delay_elements, str) else set(delay_elements)
        unknown = live - {l.name for l in net.links}
        if unknown:
            raise ValueError(f"delay_elements: no such link(s): {', '.join(sorted(unknown))}")
        self.net, self.backend = net, backend
        self.states: dict[str, LinkState] = {l.name: l.spec.state() for l in net.links}
        self.directions: dict[tuple[str, str], DirectionShaping] = {}
        for link in net.links:
            for d in DIRECTIONS:
                sender, receiver = link.ends(d)
                self.directions[(link.name, d)] = DirectionShaping(link.name, d, sender, receiver)
        self.paths: list[PathDelay] = []
        # Per link: the delay elements of paths through it, and how many host pairs cross it at all; kept
        # so that a live change touches only its own paths without walking the topology again.
        self.crossing: dict[str, list[PathDelay]] = {l.name: [] for l in net.links}
        self.pairs_through: dict[str, int] = {l.name: 0 for l in net.links}
        hosts = net.topo.hosts()
        for dst in hosts:
            for queue, src in enumerate(hosts):
                if src == dst:
                    continue
                hops = tuple((l.name, d) for l, d in net.path(src, dst))
                for name, _ in hops:
                    self.pairs_through[name] += 1
                if backend == "nfqueue" and (delay_elements == "all" or
                                             any(self.states[l].has_delay_element or l in live for l, _ in hops)):
                    path = PathDelay(src, dst, str(net.ip(src)), f"{dst}-eth0", queue, hops)
                    self.paths.append(path)
                    for name, _ in hops:
                        self.crossing[name].append(path)

    # -- set-up -------------------------------------------------------------------------------------
    def setup_commands(self) -> list[Cmd]:
        cmds: list[Cmd] = []
        for link in self.net.links:
            for end in (link.a, link.b):
                cmds.append(Cmd(end.host, ("ethtool", "-K", end.intf, "tso", "off", "gso", "off", "gro", "off")))
        for link in self.net.links:
            state = self.states[link.name]
            for d in DIRECTIONS:
                ds = self.directions[(link.name, d)]
                intf, where = ds.sender.intf, ds.sender.host
                cmds.append(Cmd(where, ("tc", "qdisc", "replace", "dev", intf, "root", "handle", "5:", "htb", "default", "1")))
                cmds.append(Cmd(where, ("tc",) + htb_class("add", intf, state.rate_mbps(d))))
                leaf = netem_leaf("add", intf, state, d) if self.backend == "netem" else pfifo_leaf("add", intf, state.queue_pkts)
                cmds.append(Cmd(where, ("tc",) + leaf))
        for path in self.paths:
            cmds.append(Cmd(path.dst, path.rule()))
        return cmds

    def daemons(self) -> dict[str, list[QueueParams]]:
        """Host → the NFQUEUE queues its delay daemon serves, with their starting parameters."""
        out: dict[str, list[QueueParams]] = {}
        for path in self.paths:
            out.setdefault(path.dst, []).append(path.params(self.states))
        return out

    def expected_leaf(self) -> str:
        return "netem" if self.backend == "netem" else "pfifo"

    def shaped_interfaces(self) -> list[tuple[str | None, str]]:
        """(namespace, interface) of every HTB, for verifying that set-up really took effect."""
        return [(ds.sender.host, ds.sender.intf) for ds in self.directions.values()]

    # -- live changes --------------------------------------------------------------------------------
    def update(self, link: str, state: LinkState) -> Update:
        """Commands that move `link` to `state` without rebuilding any qdisc; records the new state."""
        old = self.states[self.net.link(link).name]
        lines: dict[str | None, list[str]] = {}
        for d in DIRECTIONS:
            ds = self.directions[(link, d)]
            out = lines.setdefault(ds.sender.host, [])
            if state.rate_mbps(d) != old.rate_mbps(d):
                out.append(shlex.join(htb_class("change", ds.sender.intf, state.rate_mbps(d))))
            if self.backend == "netem" and (state.delay_ms, state.jitter_ms, state.loss(d), state.queue_pkts) != \
                    (old.delay_ms, old.jitter_ms, old.loss(d), old.queue_pkts):
                out.append(shlex.join(netem_leaf("change", ds.sender.intf, state, d)))
            elif self.backend == "nfqueue" and state.queue_pkts != old.queue_pkts:
                out.append(shlex.join(pfifo_leaf("change", ds.sender.intf, state.queue_pkts)))
        sets: list[tuple[str, QueueParams]] = []
        if self.backend == "nfqueue" and (state.delay_ms, state.jitter_ms, state.losses) != \
                (old.delay_ms, old.jitter_ms, old.losses):
            crossing = self.crossing[link]
            if state.has_delay_element and len(crossing) < self.pairs_through[link]:
                raise ValueError(f"link {link} was started without delay elements on every path through it, so "
                                 "its delay, jitter and loss cannot change live; give it delay, jitter or loss in "
                                 "the topology, or start the emulation with delay_elements='all'")
            new_states = {**self.states, link: state}
            sets = [(p.dst, p.params(new_states)) for p in crossing]
        self.states[link] = state
        return Update({k: v for k, v in lines.items() if v}, sets)

