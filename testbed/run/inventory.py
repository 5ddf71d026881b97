"""An inventory: which topology hosts run their node on a real machine, and how to reach it.

    # hosts.yaml                       testbed run EXP --inventory hosts.yaml
    cluster: ray                       # the Ray cluster the real hosts joined: ray | ray://HOST:PORT (default ray)
    curve: true                        # CURVE between drafters and verifiers (default: on when a host is real)
    hosts:
      v0:                              # a host of the experiment's topology that runs a verifier or a drafter
        resource: gpu_server           # the Ray resource its machine advertises: ray start --resources '{"gpu_server": 1}'
        address: 192.168.1.20          # how this machine reaches it (default: the IP its Ray node reports)
        python: /opt/specnet/.venv/bin/python   # the interpreter for the node (default: the Ray worker's)
        shape: eth0                    # shape the host's link by tc on this interface of it, not in Mininet
        curve_public_key: "..."        # its CURVE keypair, Z85 (default: drawn for the run)
        curve_secret_key: "..."

Checked before anything starts (exit 2, one line per problem, naming the file, the field and what was expected):
unknown hosts, hosts that run no node, bad or mismatched keys, bad labels and addresses.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from testbed.common.errors import ConfigError, Problem
from testbed.common.strict import StrictModel
from testbed.common.yamlconf import load_document, validate

Label = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]


def z85_key_problem(key: str) -> str | None:
    """Why `key` is not a CURVE key in Z85 (40 characters decoding to 32 bytes), or None."""
    from zmq.utils import z85
    if not isinstance(key, str) or len(key) != 40:
        return f"expected a CURVE key: 40 Z85 characters, got {len(key) if isinstance(key, str) else type(key).__name__}"
    try:
        if len(z85.decode(key.encode("ascii"))) == 32:
            return None
    except (ValueError, KeyError, UnicodeEncodeError, IndexError):
        pass
    return "expected a CURVE key in Z85 (characters 0-9 a-z A-Z .-:+=^!/*?&<>()[]{}@%$#), got other characters"


class RealHost(StrictModel):
    resource: Label
    address: str | None = None
    python: str | None = None
    shape: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,15}$")] | None = None   # its interface: see realhosts
    curve_public_key: str | None = None
    curve_secret_key: str | None = None

    @field_validator("address")
    @classmethod
    def _ip(cls, v):
        if v is not None:
            ipaddress.IPv4Address(v)       # ValueError → "does not appear to be an IPv4 address"
        return v

    @field_validator("python")
    @classmethod
    def _abs(cls, v):
        if v is not None and not v.startswith("/"):
            raise ValueError("expected an absolute path to a Python interpreter on that host")
        return v


class Inventory(StrictModel):
    cluster: str = "ray"
    curve: bool | None = None
    hosts: dict[str, RealHost] = Field(..., min_length=1)

    _source: str = ""
    _doc: object = None           # the parsed file, for line numbers in check_against's problems

    @property
    def source(self) -> str:
        return self._source


def _checks(inv: Inventory) -> list[tuple[tuple, str]]:
    found = []
    from testbed.common.raycluster import ClusterError, parse
    try:
        parse(inv.cluster)
    except ClusterError as e:
        found.append((("cluster",), str(e).split(": ", 1)[-1]))
    for name, h in inv.hosts.items():
        keys = (h.curve_public_key, h.curve_secret_key)
        if (keys[0] is None) != (keys[1] is None):
            found.append((("hosts", name), "curve_public_key and curve_secret_key come together (or neither)"))
            continue
        for field, key in zip(("curve_public_key", "curve_secret_key"), keys):
            if key is not None and (why := z85_key_problem(key)):
                found.append((("hosts", name, field), why))
        if keys[0] is not None and not any(loc[:2] == ("hosts", name) for loc, _ in found):
            import zmq
            if zmq.curve_public(keys[1].encode()).decode() != keys[0]:
                found.append((("hosts", name, "curve_public_key"),
                              "is not the public key of curve_secret_key (zmq.curve_public gives another)"))
    return found


def load_inventory(path: str | Path) -> Inventory:
    doc = load_document(path)
    inv = validate(doc, Inventory, _checks)
    inv._source = str(path)
    inv._doc = doc
    return inv


def check_against(inv: Inventory, exp) -> None:
    """The inventory's hosts must be hosts of `exp`'s topology that run a verifier or a drafter, on mininet."""
    doc = inv._doc
    problems = []
    if exp.backend != "mininet":
        problems.append(Problem(inv.source, "", f"real hosts join an emulated network: the experiment's backend is "
                                                f"{exp.backend}, expected mininet (--set backend=mininet)"))
    topo = exp.topology_obj()
    nodes = set(exp.verifier_nodes()) | set(exp.drafter_nodes())
    for name in inv.hosts:
        if name not in topo.hosts():
            problems.append(doc.problem(("hosts", name), f"not a host of topology {topo.name} "
                                                         f"(hosts: {', '.join(sorted(topo.hosts())[:12])})"))
        elif name not in nodes:
            problems.append(doc.problem(("hosts", name), "runs no verifier or drafter in this experiment "
                                                         "(only those can run on a real host)"))
    for name, h in inv.hosts.items():
        if h.shape is None or name not in topo.hosts():
            continue
        links = [l for l in topo.links if name in (l.a, l.b)]
        faulted = {f.link for f in exp.faults if f.link is not None}
        if len(links) != 1:
            problems.append(doc.problem(("hosts", name, "shape"), f"shaping on the host takes a host with one link; "
                                                                  f"{name} has {len(links)}"))
        elif links[0].channel is not None or links[0].link_name in faulted:
            problems.append(doc.problem(("hosts", name, "shape"), f"shaping on the host takes a link with a fixed "
                                        f"state; {links[0].link_name} is driven by a channel model or link faults "
                                        f"(leave shape out: the emulator shapes it)"))
    if exp.clients is not None and any(h in inv.hosts for h in exp.drafter_nodes()):
        problems.append(Problem(inv.source, "hosts", "a drafter that serves users' clients (clients:) cannot be "
                                                      "real: its clients are emulated hosts"))
    if problems:
        raise ConfigError(problems)


def prepare(path: str | Path, points: list) -> Inventory:
    """`testbed run --inventory FILE`: the file checked against every point, the Ray cluster joined and a live
    node found for every host's resource, all before anything starts (ConfigError / ClusterError: exit 2)."""
    from testbed.common.raycluster import ClusterError, connect, nodes_with
    inv = load_inventory(path)
    for p in points:
        check_against(inv, p)
    connect(inv.cluster)
    for name, h in inv.hosts.items():
        if not nodes_with(h.resource):
            raise ClusterError(f"{inv.source}: hosts.{name}.resource: no live node of the Ray cluster advertises "
                               f"{h.resource!r} (on that machine: ray start --address=HEAD:6379 --resources "
                               f"'{{\"{h.resource}\": 1}}')")
    return inv
