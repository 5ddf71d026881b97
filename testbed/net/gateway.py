"""Gateways between the emulated network and real hosts: a topology host whose node runs on a real machine.

The topology keeps its host (the *stand-in*): its links, shaping, delay daemon and address stay exactly as for
an emulated node, so every emulated path to and from it is shaped as before. What changes is that nothing runs
in it; instead it forwards its node's traffic to the real machine over a veth into the root namespace, and the
root namespace routes that out of a real interface:

    drafter ─(shaped links)─ AP ─(shaped links)─ stand-in v0 ══veth══ root namespace ── eth0 ── real verifier

- A real *server* (a verifier): the stand-in DNATs connections to its own address and port on to the real
  host's, and masquerades them out of the veth; the root namespace masquerades them again out of its real
  interface. The emulated drafters are configured exactly as usual (they connect to the stand-in's address),
  and the real host needs no route back into the emulated subnet.
- A real *client* (a drafter): it connects to this machine's address toward it, on a port of its own; the root
  namespace DNATs that to the stand-in over the veth, and the stand-in DNATs it to the verifier's emulated
  address and masquerades it out of its own links, so the verifier sees the drafter's emulated address and the
  delay rules keyed by it apply.

Each run's veths are `sn<run>g<i>` (root side) and `sn<run>g<i>-eth0` (stand-in side), so `testbed clean` finds
them like the run's bridges; its root-namespace iptables rules carry the comment `specnet:<run>` and are removed
by that comment (`drop_rules`). Addresses: 100.64.0.0/10 (shared address space, RFC 6598), 64 per run id, one
/30 per gateway: concurrent runs never overlap. Every command is data (`Cmd`) and checked when run.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass, field

from testbed.common.errors import ShapingError
from testbed.net.shaping import Cmd

SPACE = ipaddress.IPv4Network("100.64.0.0/10")
PER_RUN = 64                  # addresses per run id (16 bits of run id x 64 = the whole /10)
MAX_GATEWAYS = PER_RUN // 4   # one /30 each


class GatewayError(RuntimeError):
    pass


def comment(run_id: str) -> str:
    return f"specnet:{run_id}"


def veth_names(run_id: str, index: int) -> tuple[str, str]:
    return f"sn{run_id}g{index}", f"sn{run_id}g{index}-eth0"


def subnet(run_id: str, index: int) -> ipaddress.IPv4Network:
    if not 0 <= index < MAX_GATEWAYS:
        raise GatewayError(f"at most {MAX_GATEWAYS} real hosts per run (gateway {index})")
    base = int(SPACE.network_address) + int(run_id, 16) * PER_RUN + 4 * index
    return ipaddress.IPv4Network((base, 30))


def source_toward(address: str) -> str:
    """This machine's own address on the route to `address` (what a real client connects to)."""
    r = subprocess.run(["ip", "-j", "route", "get", address], capture_output=True, text=True)
    try:
        return json.loads(r.stdout)[0]["prefsrc"]
    except (ValueError, LookupError, TypeError):
        raise GatewayError(f"no route from this machine to real host {address}: "
                           f"{(r.stderr or r.stdout).strip() or 'ip route get gave no source address'}") from None


@dataclass(frozen=True)
class Forward:
    """A real client's way in: it connects to `public` (this machine's address toward it) : `port`; the stand-in
    forwards that to `target` (a verifier's emulated address:port)."""
    port: int
    target: str               # "10.0.0.5:5555"


@dataclass
class Gateway:
    """One stand-in host ↔ one real host. `serves`: ports of a real server reached at the stand-in's address;
    `forwards`: a real client's connections, one per verifier it talks to."""
    run_id: str
    index: int
    stand_in: str             # the topology host
    stand_in_ip: str          # its emulated address
    stand_in_intfs: tuple[str, ...]    # its interfaces in the emulated network (masquerade for a real client)
    real_ip: str
    serves: tuple[int, ...] = ()
    forwards: tuple[Forward, ...] = ()
    public_ip: str = ""       # this machine's address toward the real host (filled by setup from the route)
    _changed_forwarding: bool = field(default=False, repr=False)

    @property
    def root_intf(self) -> str:
        return veth_names(self.run_id, self.index)[0]

    @property
    def inner_intf(self) -> str:
        return veth_names(self.run_id, self.index)[1]

    @property
    def outer_ip(self) -> str:
        return str(subnet(self.run_id, self.index)[1])

    @property
    def inner_ip(self) -> str:
        return str(subnet(self.run_id, self.index)[2])

    def endpoint_for(self, forward: Forward) -> str:
        """Where the real client connects for `forward`."""
        return f"tcp://{self.public_ip}:{forward.port}"

    def commands(self, stand_in_pid: int) -> list[Cmd]:
        """Everything that builds this gateway, in order (printable, testable without root)."""
        h, tag = self.stand_in, ["-m", "comment", "--comment", comment(self.run_id)]
        net = subnet(self.run_id, self.index)
        cmds = [
            Cmd(None, ("ip", "link", "add", self.root_intf, "type", "veth", "peer", "name", self.inner_intf,
                       "netns", str(stand_in_pid))),
            Cmd(None, ("ip", "addr", "add", f"{self.outer_ip}/30", "dev", self.root_intf)),
            Cmd(None, ("ip", "link", "set", self.root_intf, "up")),
            Cmd(h, ("ip", "addr", "add", f"{self.inner_ip}/30", "dev", self.inner_intf)),
            Cmd(h, ("ip", "link", "set", self.inner_intf, "up")),
            Cmd(h, ("sysctl", "-qw", "net.ipv4.ip_forward=1")),
            Cmd(h, ("ip", "route", "add", f"{self.real_ip}/32", "via", self.outer_ip)),
            # the root namespace forwards between the veth and the real interface (a FORWARD policy of DROP,
            # as Docker sets, would otherwise eat it) and masquerades the stand-in's packets out of it
            Cmd(None, ("iptables", "-w", "-I", "FORWARD", "-i", self.root_intf, "-j", "ACCEPT", *tag)),
            Cmd(None, ("iptables", "-w", "-I", "FORWARD", "-o", self.root_intf, "-j", "ACCEPT", *tag)),
            Cmd(None, ("iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", str(net), "!", "-o",
                       self.root_intf, "-j", "MASQUERADE", *tag)),
        ]
        for port in self.serves:
            cmds += [Cmd(h, ("iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-d", self.stand_in_ip, "-p", "tcp",
                             "--dport", str(port), "-j", "DNAT", "--to-destination", f"{self.real_ip}:{port}"))]
        if self.serves:
            cmds += [Cmd(h, ("iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-o", self.inner_intf,
                             "-j", "MASQUERADE"))]
        for f in self.forwards:
            cmds += [
                Cmd(None, ("iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-s", self.real_ip, "-d", self.public_ip,
                           "-p", "tcp", "--dport", str(f.port), "-j", "DNAT", "--to-destination",
                           f"{self.inner_ip}:{f.port}", *tag)),
                Cmd(h, ("iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-i", self.inner_intf, "-p", "tcp",
                        "--dport", str(f.port), "-j", "DNAT", "--to-destination", f.target)),
            ]
        if self.forwards:
            cmds += [Cmd(h, ("iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-o", intf, "-j", "MASQUERADE"))
                     for intf in self.stand_in_intfs]
        return cmds

    def setup(self, run_cmd, stand_in_pid: int) -> list[Cmd]:
        """Build it; `run_cmd(Cmd)` runs one command where it says and raises on failure."""
        if not self.public_ip:
            self.public_ip = source_toward(self.real_ip)
        if _read_forwarding() != "1":
            _write_forwarding("1")
            self._changed_forwarding = True
        cmds = self.commands(stand_in_pid)
        for c in cmds:
            run_cmd(c)
        return cmds

    def teardown(self) -> None:
        """The veth (its stand-in end and that namespace's rules go with the namespace) and the root rules."""
        subprocess.run(["ip", "link", "del", self.root_intf], capture_output=True)
        drop_rules(self.run_id)
        if self._changed_forwarding and not _other_gateways(self.run_id):
            _write_forwarding("0")


def drop_rules(run_id: str) -> list[str]:
    """Delete every root-namespace iptables rule commented `specnet:<run_id>` (a dead run's too)."""
    dropped = []
    for table in ("filter", "nat"):
        listing = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            if line.startswith("-A ") and f'--comment {comment(run_id)}' in line.replace('"', ""):
                argv = ["iptables", "-w", "-t", table, "-D", *_split(line[3:])]
                if subprocess.run(argv, capture_output=True).returncode == 0:
                    dropped.append(f"{table}: {line}")
    return dropped


def _split(rule: str) -> list[str]:
    import shlex
    return shlex.split(rule)


def _other_gateways(run_id: str) -> bool:
    from testbed.net.runs import BRIDGE_RE, link_names
    return any((m := BRIDGE_RE.match(n)) and n[6] == "g" and m.group(1) != run_id for n in link_names())


_FORWARDING = "/proc/sys/net/ipv4/ip_forward"


def _read_forwarding() -> str:
    with open(_FORWARDING) as f:
        return f.read().strip()


def _write_forwarding(value: str) -> None:
    try:
        with open(_FORWARDING, "w") as f:
            f.write(value)
    except OSError as e:
        raise ShapingError(f"echo {value} > {_FORWARDING}", 1, str(e)) from None
