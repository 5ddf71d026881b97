"""Topology YAML schema (`topologies/*.yaml`) and the checks that span fields.

Every YAML field of a topology is declared here; `load_topology` is the one entry point.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from testbed.common.strict import StrictModel

from testbed.channels.spec import ChannelSpec, RadioSpec
from testbed.common.errors import ConfigError, Problem
from testbed.net.linkstate import MAX_RATE_MBPS, LinkState
from testbed.common.yamlconf import Loc, load_document

HOST_ROLES = ("verifier", "drafter", "user")
SWITCH_ROLES = ("ap", "switch")
# Host interfaces are "<node>-eth0" and Linux caps interface names at 15 characters.
NODE_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,9}$"

Rate = Annotated[float, Field(gt=0, le=MAX_RATE_MBPS)]


class _Strict(StrictModel):            # unknown fields and booleans for numbers refused (testbed/common/strict.py)
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSpec(_Strict):
    role: Literal["verifier", "drafter", "user", "ap", "switch"]
    ip: ipaddress.IPv4Address | None = None        # hosts only; default: next free address of the subnet
    band_up_mbps: Rate | None = None               # ap only: total band stations → AP, shared by its stations
    band_down_mbps: Rate | None = None             # ap only: total band AP → stations
    radio: RadioSpec | None = None                 # ap only: shared band split among stations every interval

    @property
    def is_host(self) -> bool:
        return self.role in HOST_ROLES


class LinkSpec(_Strict):
    a: str                                          # "up" is the direction a → b
    b: str
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,40}$")  # default "<a>-<b>"
    kind: Literal["wired", "wireless"] = "wired"
    rate_up_mbps: Rate
    rate_down_mbps: Rate
    delay_ms: float = Field(default=0.0, ge=0, le=10_000)    # one-way, each direction
    jitter_ms: float = Field(default=0.0, ge=0, le=10_000)   # uniform ±, order-preserving
    loss_pct: float = Field(default=0.0, ge=0, lt=100)       # Bernoulli, each direction
    queue_pkts: int = Field(default=100, ge=1, le=100_000)   # leaf queue of each direction's shaper
    channel: ChannelSpec | None = None                       # time-varying rate/delay/loss (testbed/channels/spec.py)

    @property
    def link_name(self) -> str:
        return self.name or f"{self.a}-{self.b}"

    def state(self) -> LinkState:
        return LinkState(self.rate_up_mbps, self.rate_down_mbps, self.delay_ms, self.jitter_ms,
                         self.loss_pct, self.queue_pkts)


class Addressing(_Strict):
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.0.0/24")


class Topology(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    seed: int = Field(0, ge=0, le=2**31 - 1)   # of the pools' drawn link fields (testbed/net/pools.py)
    addressing: Addressing = Addressing()
    nodes: dict[str, NodeSpec] = Field(min_length=2)   # pools (`count: N`) already expanded: testbed/net/pools.py
    links: list[LinkSpec] = Field(min_length=1)
    _source: str = PrivateAttr("")   # the file it came from; set by load_topology

    @property
    def source(self) -> str:
        return self._source

    def hosts(self) -> list[str]:
        return [n for n, spec in self.nodes.items() if spec.is_host]

    def switches(self) -> list[str]:
        return [n for n, spec in self.nodes.items() if not spec.is_host]

    def link(self, name: str) -> LinkSpec:
        for link in self.links:
            if link.link_name == name:
                return link
        raise KeyError(f"no link named {name!r} in topology {self.name!r}; "
                       f"links: {', '.join(l.link_name for l in self.links)}")

    def addresses(self) -> dict[str, ipaddress.IPv4Address]:
        """Host → IPv4 address: the YAML's `ip` where given, else the next free address in node order."""
        taken = {spec.ip for spec in self.nodes.values() if spec.ip}
        free = (ip for ip in self.addressing.subnet.hosts() if ip not in taken)
        return {n: (self.nodes[n].ip or next(free)) for n in self.hosts()}


def name_list(names, limit: int = 12) -> str:
    """Names for a message; a pool's thousand members are summarised, not listed."""
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit - 2]) + f", ... {names[-1]} ({len(names)} in all)"


def _check_nodes(topo: Topology) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    subnet = topo.addressing.subnet
    seen_ips: dict[ipaddress.IPv4Address, str] = {}
    for name, spec in topo.nodes.items():
        loc = ("nodes", name)
        if not re.match(NODE_NAME, name):
            found.append((loc, f"node name {name!r}: expected a letter then up to 9 letters, digits or '_' "
                               "(it becomes part of a 15-character interface name)"))
        if spec.role != "ap":
            for band in ("band_up_mbps", "band_down_mbps", "radio"):
                if getattr(spec, band) is not None:
                    found.append((loc + (band,), f"only nodes with role 'ap' have a band; {name} is a {spec.role}"))
        if not spec.is_host and spec.ip is not None:
            found.append((loc + ("ip",), f"only hosts (verifier, drafter, user) have an address; {name} is a {spec.role}"))
        if spec.ip is not None:
            if spec.ip not in subnet or spec.ip in (subnet.network_address, subnet.broadcast_address):
                what = {subnet.network_address: " (the subnet's network address)",
                        subnet.broadcast_address: " (the subnet's broadcast address)"}.get(spec.ip, "")
                found.append((loc + ("ip",), f"expected a host address inside addressing.subnet {subnet}, "
                                             f"got {spec.ip}{what}"))
            elif spec.ip in seen_ips:
                found.append((loc + ("ip",), f"address {spec.ip} is already used by {seen_ips[spec.ip]}"))
            seen_ips[spec.ip] = name
        if spec.role == "ap" and (spec.band_up_mbps is None) != (spec.band_down_mbps is None):
            found.append((loc, "give both band_up_mbps and band_down_mbps, or neither"))
        if spec.role == "ap" and spec.radio is not None and spec.band_up_mbps is not None:
            found.append((loc + ("radio",), "give either band_up_mbps/band_down_mbps (a fixed capacity that "
                                            "station rates must fit) or radio (a band split among stations "
                                            "every interval), not both"))
    if not topo.hosts():
        found.append((("nodes",), "expected at least one host (verifier, drafter or user)"))
    hosts = len(topo.hosts())
    if hosts > subnet.num_addresses - 2:
        prefix = max(0, 32 - (hosts + 1).bit_length())      # the longest prefix holding hosts + 2 addresses
        wider = ipaddress.IPv4Network(f"{subnet.network_address}/{prefix}", strict=False)
        found.append((("addressing", "subnet"), f"subnet {subnet} has {max(0, subnet.num_addresses - 2)} host "
                                                f"addresses, too few for {hosts} hosts: widen addressing.subnet, "
                                                f"e.g. to {wider} ({wider.num_addresses - 2} hosts)"))
    return found


def _check_links(topo: Topology) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    names: dict[str, int] = {}
    pairs: dict[frozenset, int] = {}
    degree: dict[str, int] = {n: 0 for n in topo.nodes}
    for i, link in enumerate(topo.links):
        loc = ("links", i)
        ok = True
        for end in ("a", "b"):
            node = getattr(link, end)
            if node not in topo.nodes:
                found.append((loc + (end,), f"unknown node {node!r}; nodes are: {name_list(topo.nodes)}"))
                ok = False
        for node in {link.a, link.b} & topo.nodes.keys():   # counted even on a bad link: no "h has 0" echo
            degree[node] += 1
        if link.a == link.b:
            found.append((loc, f"a link needs two different nodes, got {link.a!r} twice"))
            ok = False
        if link.link_name in names:
            found.append((loc + ("name",), f"link name {link.link_name!r} is already used by links[{names[link.link_name]}]"))
        names[link.link_name] = i
        if link.jitter_ms > link.delay_ms:
            found.append((loc + ("jitter_ms",), f"expected jitter_ms <= delay_ms ({link.delay_ms:g}), got {link.jitter_ms:g}"))
        if not ok:
            continue
        pair = frozenset((link.a, link.b))
        if pair in pairs:
            found.append((loc, f"{link.a} and {link.b} are already linked by links[{pairs[pair]}]"))
        pairs[pair] = i
        found += _check_channel(topo, link, loc)
        if link.kind == "wireless":
            aps = [n for n in (link.a, link.b) if topo.nodes[n].role == "ap"]
            hosts = [n for n in (link.a, link.b) if topo.nodes[n].is_host]
            if len(aps) != 1 or len(hosts) != 1:
                found.append((loc + ("kind",), "a wireless link joins a station (verifier, drafter or user) to an ap"))
            elif topo.nodes[aps[0]].radio is None:
                ap = topo.nodes[aps[0]]
                # the field holding the station's uplink (station -> ap) and downlink, by which end the station is
                fields = ("rate_up_mbps", "rate_down_mbps") if link.a == hosts[0] else ("rate_down_mbps", "rate_up_mbps")
                for field, band_field in zip(fields, ("band_up_mbps", "band_down_mbps")):
                    rate, band = getattr(link, field), getattr(ap, band_field)
                    if band is not None and rate > band:
                        found.append((loc + (field,), f"expected at most {aps[0]}'s {band_field} ({band:g} Mbit/s), "
                                                      f"got {rate:g}"))
    for name, spec in topo.nodes.items():
        if spec.is_host and degree[name] != 1:
            found.append((("nodes", name), f"a host has exactly one link (hosts share one flat subnet; "
                                            f"connect them through an ap or switch); {name} has {degree[name]}"))
    if not found:
        found += _check_tree(topo)
    return found


def station_and_ap(topo: Topology, link: LinkSpec) -> tuple[str, str] | None:
    """(station, ap) of a wireless link, None for any other link."""
    if link.kind != "wireless":
        return None
    ends = [n for n in (link.a, link.b) if n in topo.nodes]
    aps = [n for n in ends if topo.nodes[n].role == "ap"]
    hosts = [n for n in ends if topo.nodes[n].is_host]
    return (hosts[0], aps[0]) if len(aps) == 1 and len(hosts) == 1 else None


def _check_channel(topo: Topology, link: LinkSpec, loc: Loc) -> list[tuple[Loc, str]]:
    ch = link.channel
    if ch is None or ch.model != "snr":
        return []
    pair = station_and_ap(topo, link)
    if pair is None:
        return [(loc + ("channel", "model"), "model snr needs a wireless link between a station and an ap "
                                            "(the distance is the station's distance to the ap)")]
    if ch.band_mhz is None and topo.nodes[pair[1]].radio is None:
        return [(loc + ("channel", "band_mhz"), f"model snr needs a band: give channel.band_mhz, or "
                                               f"nodes.{pair[1]}.radio.band_mhz")]
    return []


def resolve_trace_paths(data: dict, base_dir: Path) -> None:
    """Make the trace files of every `links[i].channel` in raw YAML data absolute (relative to base_dir)."""
    links = data.get("links") if isinstance(data, dict) else None
    for link in links if isinstance(links, list) else []:
        ch = link.get("channel") if isinstance(link, dict) else None
        if isinstance(ch, dict):
            resolve_channel_paths(ch, base_dir)


def resolve_channel_paths(ch: dict, base_dir: Path) -> None:
    for key in ("up", "down"):
        if isinstance(ch.get(key), str) and not Path(ch[key]).is_absolute():
            ch[key] = str((base_dir / ch[key]).resolve())


def check_trace_files(topo: Topology, where: Callable[[Loc], Problem]) -> list[Problem]:
    """Load every trace a channel names: a missing file is blamed on the field, a malformed one on its line."""
    problems: list[Problem] = []
    for i, link in enumerate(topo.links):
        ch = link.channel
        if ch is None or ch.model != "trace":
            continue
        for key in ("up", "down"):
            path = getattr(ch, key)
            if path is None:
                continue
            if not Path(path).is_file():
                problems.append(where(("links", i, "channel", key), f"trace file not found: {path}"))
                continue
            from testbed.channels.traces import load_trace
            try:
                load_trace(path, ch.format, loop=ch.loop, interval_s=ch.interval_s)
            except ConfigError as e:
                problems += e.problems
    return problems


def _check_tree(topo: Topology) -> list[tuple[Loc, str]]:
    """The network must be connected and loop-free: LinuxBridge runs without STP, so a loop floods forever."""
    parent = {n: n for n in topo.nodes}

    def root(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n
    for i, link in enumerate(topo.links):
        ra, rb = root(link.a), root(link.b)
        if ra == rb:
            return [(("links", i), f"this link closes a loop through {link.a} and {link.b}; "
                                   "the network must be a tree (bridges run without spanning tree)")]
        parent[ra] = rb
    groups: dict[str, list[str]] = {}
    for n in topo.nodes:
        groups.setdefault(root(n), []).append(n)
    if len(groups) > 1:
        parts = sorted((sorted(g) for g in groups.values()), key=len)
        return [(("links",), f"the network is not connected: {', '.join(parts[0])} cannot reach the other nodes")]
    return []


def check_topology(topo: Topology) -> list[tuple[Loc, str]]:
    return _check_nodes(topo) + _check_links(topo)


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file; raises ConfigError listing every problem."""
    from testbed.net.pools import build        # pools.py builds on this module's schema and checks
    doc = load_document(path)
    resolve_trace_paths(doc.data, Path(path).resolve().parent)
    topo, found, origin = build(doc.data)
    if topo is None:
        raise ConfigError([doc.problem(loc, msg) for loc, msg in found])
    ours: list[tuple[Loc, str]] = []           # a pool's members share one channel: grouped by remap
    foreign = check_trace_files(topo, lambda loc, msg: ours.append((loc, msg)))
    problems = [doc.problem(loc, msg) for loc, msg in origin.remap(ours)]
    problems += [p for i, p in enumerate(foreign) if p is not None and p not in foreign[:i]]
    if problems:
        raise ConfigError(problems)
    topo._source = str(path)
    return topo
