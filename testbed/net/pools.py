"""Pools: one topology entry standing for many hosts, so a 1000-drafter scenario is a short file.

    seed: 0                                  # top level, default 0: the seed of every draw below
    nodes:
      d: {role: drafter, count: 1000}        # hosts d1 ... d1000 (role drafter or user only; no ip)
    links:
      - {a: d, b: core, rate_up_mbps: {uniform: [5, 40]}, rate_down_mbps: {uniform: [5, 40]},
         delay_ms: {normal: {mean: 8, std: 3, min: 1}}, queue_pkts: 100}

A link naming a pool at one end becomes one link per member (the member in place of the pool); a link
`name:` on a pool link gets the member's index appended (`name: up` -> up1 ... up1000), so names stay unique
and still say which member. Link fields rate_up_mbps, rate_down_mbps, delay_ms, jitter_ms, loss_pct and
queue_pkts of a pool link may be a distribution (testbed/common/distributions.py), drawn for each member from
its own stream `topology/<seed>/<pool>/<index>/<field>`: adding a pool, a member or a field changes no other
draw. Expansion runs before the schema and the topology checks, so LinkSpec's limits apply to drawn values;
a problem of an expanded member is reported once, at the pool's entry in the file, naming the first member
and how many more share it (a bad distribution could otherwise print 1000 lines).
"""
from __future__ import annotations

import re
from typing import Any

import pydantic

from testbed.common.distributions import Distribution, looks_like, parse, stream
from testbed.common.yamlconf import Loc, _describe
from testbed.net.topology import NODE_NAME, Topology, check_topology

MAX_COUNT = 100_000
POOL_ROLES = ("drafter", "user")                 # hosts that come in numbers; verifiers are few and named
DRAWN = ("rate_up_mbps", "rate_down_mbps", "delay_ms", "jitter_ms", "loss_pct", "queue_pkts")
INTEGER = ("queue_pkts",)
MAX_NAME = 10                                    # NODE_NAME: a letter then up to 9 more

Found = list[tuple[Loc, str]]


class Origin:
    """Where each expanded node and link came from in the file, to report problems there."""

    def __init__(self) -> None:
        self.links: list[tuple[int, str | None]] = []        # expanded index -> (file index, member or None)
        self.members: dict[str, tuple[str, int]] = {}        # member -> (pool, pool size)
        self.drawn: dict[tuple[int, str], Distribution] = {}  # (file link index, field) -> its distribution

    def remap(self, found: Found) -> Found:
        """Problems of the expanded topology as problems of the file; one line per (place, kind of problem)."""
        groups: dict[tuple, list] = {}
        for loc, msg in found:
            member, dist = None, None
            if len(loc) >= 2 and loc[0] == "links" and isinstance(loc[1], int) and loc[1] < len(self.links):
                j, member = self.links[loc[1]]
                dist = self.drawn.get((j, loc[2])) if len(loc) > 2 else None
                loc = ("links", j) + loc[2:]
            elif len(loc) >= 2 and loc[0] == "nodes" and loc[1] in self.members:
                member = loc[1]
                loc = ("nodes", self.members[member][0]) + loc[2:]
            msg = re.sub(r"links\[(\d+)\]", lambda m: f"links[{self._file_index(int(m.group(1)))}]", msg)
            # members' messages differ only in the member's name and its drawn numbers: one group
            key = (loc, re.sub(r"[\d.]+", "#", msg.replace(member, "@")) if member else msg)
            groups.setdefault(key, []).append((loc, msg, member, dist))
        out: Found = []
        for items in groups.values():
            loc, msg, member, dist = items[0]
            if member:
                pool, size = self.members[member]
                more = f" and {len(items) - 1} more of pool {pool}'s {size} members" if len(items) > 1 else ""
                if dist:
                    msg += (f" (drawn for {member}{more} from {dist.describe()}; narrow the distribution or "
                            "clip it with min/max)")
                else:
                    msg += f" (member {member}{more})"
            out.append((loc, msg))
        return out

    def _file_index(self, k: int) -> int:
        return self.links[k][0] if k < len(self.links) else k


def _count_problem(name: str, spec: dict) -> Found:
    loc = ("nodes", name)
    count = spec["count"]
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        return [(loc + ("count",), f"expected a whole number of hosts from 1 to {MAX_COUNT}, got {count!r}")]
    found: Found = []
    role = spec.get("role")
    if role not in POOL_ROLES:
        found.append((loc + ("count",), f"count (a pool of hosts) is for role drafter or user, got role {role!r}"))
    if "ip" in spec:
        found.append((loc + ("ip",), "a pool's members get the next free addresses of addressing.subnet; "
                                     "give no ip"))
    if not re.match(NODE_NAME, f"{name}{count}"):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            found.append((loc, f"pool name {name!r}: expected a letter then letters, digits or '_'"))
        else:
            left = max(0, MAX_NAME - len(name))
            found.append((loc, f"pool {name!r} of {count} hosts: member names run up to {name}{count} "
                               f"({len(name) + len(str(count))} characters, at most {MAX_NAME}); the prefix "
                               f"{name!r} leaves {left} character{'' if left == 1 else 's'} for the index "
                               f"and {count} needs {len(str(count))}: shorten the pool's name"))
    return found


def _seed(data: dict) -> tuple[int, Found]:
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2**31 - 1:
        return 0, [(("seed",), f"expected a whole number from 0 to {2**31 - 1} (the seed of the pools' draws), "
                               f"got {seed!r}")]
    return seed, []


def expand(data: Any) -> tuple[Any, Found, Origin]:
    """The topology mapping with every pool expanded (a new mapping; `data` is left as it is), the problems
    of the pool and distribution specs, and where each expanded entry came from."""
    origin = Origin()
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict) or not isinstance(data.get("links"), list):
        return data, [], origin                   # the schema reports what is missing
    nodes, links = data["nodes"], data["links"]
    pools = {n: s for n, s in nodes.items() if isinstance(s, dict) and "count" in s}
    found: Found = []
    seed, sfound = _seed(data) if pools else (0, [])
    found += sfound
    for name, spec in pools.items():
        found += _count_problem(name, spec)
    new_nodes: dict[str, Any] = {}
    if not found:
        taken = {n for n in nodes if n not in pools}
        for name, spec in nodes.items():
            if name not in pools:
                new_nodes[name] = spec
                continue
            member_spec = {k: v for k, v in spec.items() if k != "count"}
            count = spec["count"]
            clash = None
            for i in range(1, count + 1):
                m = f"{name}{i}"
                if m in taken or m in new_nodes:
                    clash = clash or m
                new_nodes[m] = member_spec
                origin.members[m] = (name, count)
            if clash:
                found.append((("nodes", name), f"member {clash} of pool {name!r} clashes with another node "
                                               f"named {clash}: rename the pool or that node"))
    new_links: list[Any] = []
    members_ok = not found               # a bad count has no members to expand into: check the specs only
    for j, link in enumerate(links):
        lfound, expanded = _expand_link(j, link, pools, seed, origin, members_ok)
        found += lfound
        if not lfound:
            for item, member in expanded:
                origin.links.append((j, member))
                new_links.append(item)
    if found:
        return data, found, origin
    return {**data, "nodes": new_nodes, "links": new_links}, [], origin


def _expand_link(j: int, link: Any, pools: dict, seed: int, origin: Origin,
                 members_ok: bool) -> tuple[Found, list[tuple[Any, str | None]]]:
    loc: Loc = ("links", j)
    if not isinstance(link, dict):
        return [], [(link, None)]
    ends = [e for e in ("a", "b") if isinstance(link.get(e), str) and link[e] in pools]
    found: Found = []
    for f, v in link.items():
        if f not in DRAWN and looks_like(v):
            found.append((loc + (f,), f"{f} does not take a distribution; these do: {', '.join(DRAWN)}"))
    if len(ends) == 2:
        found.append((loc, f"a pool link joins a pool to one node; a ({link['a']}) and b ({link['b']}) are "
                           "both pools"))
    dists: dict[str, Distribution] = {}
    for f in DRAWN:
        if not isinstance(link.get(f), dict):
            continue
        if not ends:
            found.append((loc + (f,), "a distribution is drawn per member of a pool; this link joins no pool "
                                      "(a node with count): give a number"))
            continue
        dist, dfound = parse(link[f], integer=f in INTEGER)
        found += [(loc + (f,) + sub, msg) for sub, msg in dfound]
        if dist is not None:
            dists[f] = dist
    if found or not ends or not members_ok:
        return found, [(link, None)]
    end = ends[0]
    pool = link[end]
    for f, dist in dists.items():
        origin.drawn[(j, f)] = dist
    out = []
    name = link.get("name")
    for i in range(1, pools[pool]["count"] + 1):
        member = f"{pool}{i}"
        item = {**link, end: member}
        if isinstance(name, str):
            item["name"] = f"{name}{i}"
        for f, dist in dists.items():
            item[f] = dist.draw(stream("topology", seed, pool, i, f))
        out.append((item, member))
    return [], out


def build(data: Any) -> tuple[Topology | None, Found, Origin]:
    """A topology from its raw mapping: pools expanded, the schema validated, the checks across fields run;
    None and every problem (as paths of the file) when something is wrong. The origin maps later problems
    of the topology (trace files) back to the file."""
    expanded, found, origin = expand(data)
    if found:
        return None, found, origin
    try:
        topo = Topology.model_validate(expanded)
    except pydantic.ValidationError as e:
        errors = []
        for err in e.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            errors.append((loc, _describe(err)))
        return None, origin.remap(errors), origin
    found = check_topology(topo)
    if found:
        return None, origin.remap(found), origin
    return topo, [], origin
