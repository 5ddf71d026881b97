"""`NetPlan`: a validated topology resolved into the names this run will use.

Hosts keep their YAML names (each lives in its own network namespace, so `d1-eth0` cannot clash with
another run). Switches and APs become Linux bridges in the root namespace, so they and their ports carry
the run prefix (`sn<run>s<i>`), which is also how `testbed clean` recognises what a dead run left behind.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from testbed.net.topology import LinkSpec, Topology

DIRECTIONS = ("up", "down")


def bridge_name(run_id: str, index: int) -> str:
    return f"sn{run_id}s{index}"


@dataclass(frozen=True)
class Endpoint:
    node: str                 # YAML name
    intf: str                 # interface name as seen in its namespace
    host: str | None          # host whose namespace holds the interface; None = root namespace (a bridge port)

    @property
    def where(self) -> str:
        return self.host or "root"


@dataclass(frozen=True)
class LinkPlan:
    name: str
    spec: LinkSpec
    a: Endpoint
    b: Endpoint

    def ends(self, direction: str) -> tuple[Endpoint, Endpoint]:
        """(sender, receiver) for 'up' (a → b) or 'down' (b → a)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
        return (self.a, self.b) if direction == "up" else (self.b, self.a)


class NetPlan:
    def __init__(self, topo: Topology, run_id: str):
        self.topo, self.run_id = topo, run_id
        self.bridges = {n: bridge_name(run_id, i + 1) for i, n in enumerate(topo.switches())}
        self.addresses = topo.addresses()
        self.prefixlen = topo.addressing.subnet.prefixlen
        ports = {n: 0 for n in self.bridges}
        links = []
        for spec in topo.links:
            ends = []
            for node in (spec.a, spec.b):
                if node in self.bridges:
                    ports[node] += 1
                    ends.append(Endpoint(node, f"{self.bridges[node]}-eth{ports[node]}", None))
                else:
                    ends.append(Endpoint(node, f"{node}-eth0", node))
            links.append(LinkPlan(spec.link_name, spec, ends[0], ends[1]))
        self.links = links
        # node -> (link, direction traversed, neighbour); built once, paths are asked for N^2 times
        self.adjacent: dict[str, list[tuple[LinkPlan, str, str]]] = {}
        for link in links:
            self.adjacent.setdefault(link.a.node, []).append((link, "up", link.b.node))
            self.adjacent.setdefault(link.b.node, []).append((link, "down", link.a.node))

        self._by_name = {link.name: link for link in links}
        # the tree rooted at each component's first node: node -> (link, direction parent -> node, parent), and
        # depth; a path climbs both ends to their common ancestor, O(depth) for each of the N^2 pairs
        self._parent: dict[str, tuple[LinkPlan, str, str]] = {}
        self._depth: dict[str, tuple[str, int]] = {}       # node -> (root, depth)
        for root in topo.nodes:
            if root in self._depth:
                continue
            self._depth[root] = (root, 0)
            frontier = [root]
            while frontier:
                node = frontier.pop()
                for link, direction, nxt in self.adjacent.get(node, []):
                    if nxt not in self._depth:
                        self._depth[nxt] = (root, self._depth[node][1] + 1)
                        self._parent[nxt] = (link, direction, node)
                        frontier.append(nxt)

    def link(self, name: str) -> LinkPlan:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no link named {name!r}; links: {', '.join(l.name for l in self.links)}") from None

    def ip(self, host: str) -> ipaddress.IPv4Address:
        return self.addresses[host]

    def path(self, src: str, dst: str) -> list[tuple[LinkPlan, str]]:
        """The links (with the direction traversed) from node `src` to node `dst`; the network is a tree."""
        if src not in self._depth or dst not in self._depth or self._depth[src][0] != self._depth[dst][0]:
            raise KeyError(f"no path from {src} to {dst}")
        up: list[tuple[LinkPlan, str]] = []       # src climbing: each link against its parent -> child direction
        down: list[tuple[LinkPlan, str]] = []     # dst climbing, reversed at the end
        a, b = src, dst
        da, db = self._depth[a][1], self._depth[b][1]
        while a != b:
            if da >= db:
                link, direction, a = self._parent[a]
                up.append((link, "down" if direction == "up" else "up"))
                da -= 1
            else:
                link, direction, b = self._parent[b]
                down.append((link, direction))
                db -= 1
        return up + down[::-1]

    def describe(self) -> str:
        rows = [f"topology {self.topo.name} (run {self.run_id}), subnet {self.topo.addressing.subnet}", "nodes:"]
        for name, spec in self.topo.nodes.items():
            where = f"bridge {self.bridges[name]}" if name in self.bridges else f"host, {self.addresses[name]}"
            rows.append(f"  {name:<10} {spec.role:<9} {where}")
        rows.append("links (up = a -> b; delay/jitter one-way per direction):")
        for link in self.links:
            s = link.spec
            extra = f" jitter ±{s.jitter_ms:g} ms" if s.jitter_ms else ""
            rows.append(f"  {link.name:<16} {s.kind:<8} {link.a.intf} <-> {link.b.intf}: "
                        f"up {s.rate_up_mbps:g} / down {s.rate_down_mbps:g} Mbit/s, delay {s.delay_ms:g} ms"
                        f"{extra}, loss {s.loss_pct:g} %, queue {s.queue_pkts} pkts")
        return "\n".join(rows)
