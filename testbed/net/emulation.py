"""`Emulation`: a topology brought up on real Mininet with verified shaping. The only module importing Mininet.

    with Emulation(load_topology("topologies/star-wifi-4.yaml")) as emu:
        emu.run("d1", ["ping", "-c1", str(emu.net_plan.ip("verifier"))])
        emu.set_link("d1-ap1", LinkState(5, 5, delay_ms=20))

Hosts are Mininet hosts (one network namespace each), APs and switches are Linux bridges (no controller).
Mininet's TCLink is not used: its delay/loss fail silently on kernels without netem, and it prints rather
than raises when tc fails. Shaping comes from `shaping.ShapingPlan`, run here command by command, each
checked, then verified by reading the qdiscs back.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import zlib
from collections.abc import Collection
from typing import Callable

from testbed.net.capabilities import choose_delay_backend
from testbed.net.delayd import DelayDaemon
from testbed.common.errors import ShapingError
from testbed.net.linkstate import LinkState
from testbed.net.netplan import NetPlan
from testbed.net.runs import Run, die_with_parent, links_of
from testbed.net.shaping import Cmd, ShapingPlan
from testbed.net.tcbatch import TcBatch
from testbed.net.topology import Topology


class EmulationError(RuntimeError):
    pass


class Emulation:
    def __init__(self, topo: Topology, delay_backend: str | None = "auto",
                 delay_elements: str | Collection[str] = "needed",
                 seed: int = 0, log: Callable[[str], None] | None = None, run: Run | None = None):
        self.topo = topo
        self.given_run = run         # the runner's, registered with its results directory; else a new one
        self.seed = seed             # jitter and loss draws depend on this and the host name only
        self.log = log or (lambda msg: None)
        self.backend, self.backend_reason = choose_delay_backend(delay_backend)
        self.delay_elements = delay_elements
        self.run_info: Run | None = None
        self.net = None
        self.net_plan: NetPlan | None = None
        self.shaping: ShapingPlan | None = None
        self.daemons: dict[str, DelayDaemon] = {}
        self.batches: dict[str | None, TcBatch] = {}
        self.procs: list[subprocess.Popen] = []
        self.final_daemon_stats: dict[str, dict] = {}

    # -- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> "Emulation":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise EmulationError("bringing up a topology needs root (Mininet, tc, iptables): run it with sudo")
        self.run_info = self.given_run or Run.new(self.topo.name)
        self.run_info.register()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.node import Host
        from mininet.nodelib import LinuxBridge
        setLogLevel("error")
        run = self.run_info
        self.net_plan = plan = NetPlan(self.topo, run.id)
        self.shaping = ShapingPlan(plan, self.backend, self.delay_elements)
        self.log(f"run {run.id}: building {self.topo.name} ({len(self.topo.hosts())} hosts, "
                 f"{len(plan.bridges)} bridges), delay backend {self.backend}")
        # Mininet starts each node's shell as it is added; tag them all so cleanup finds this run's processes.
        saved = os.environ.get("SPECNET_RUN")
        os.environ["SPECNET_RUN"] = run.id
        try:
            net = Mininet(topo=None, build=False, controller=None, switch=LinuxBridge, host=Host,
                          waitConnected=False, autoSetMacs=False)
            self.net = net
            for host in self.topo.hosts():
                net.addHost(host, ip=f"{plan.ip(host)}/{plan.prefixlen}")
            for node, bridge in plan.bridges.items():
                net.addSwitch(bridge, stp=False)
            node = lambda n: net.get(plan.bridges.get(n, n))
            for link in plan.links:
                net.addLink(node(link.a.node), node(link.b.node), intfName1=link.a.intf, intfName2=link.b.intf)
            net.build()
            net.start()
        finally:
            if saved is None:
                os.environ.pop("SPECNET_RUN", None)
            else:
                os.environ["SPECNET_RUN"] = saved
        for host in self.topo.hosts():
            # IPv6 would bypass the IPv4 delay rules (router solicitations, ND): keep the links to our traffic.
            self.run(host, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        for cmd in self.shaping.setup_commands():
            self.exec(cmd)
        self._verify_qdiscs()
        for host, queues in self.shaping.daemons().items():
            d = DelayDaemon(queues, netns_prefix=self.prefix(host), seed=hash_seed(self.seed, host), env=run.env())
            d.start()
            self.daemons[host] = d
        self.log(f"run {run.id}: up; shaping verified on {len(self.shaping.shaped_interfaces())} interface "
                 f"directions, {len(self.daemons)} delay daemon(s)")

    def stop(self) -> None:
        for host, d in list(self.daemons.items()):
            try:
                self.final_daemon_stats[host] = d.stop()
            except Exception as e:   # keep stopping the rest; report what failed
                self.log(f"delay daemon on {host}: {e}")
        self.daemons.clear()
        for b in self.batches.values():
            b.close()
        self.batches.clear()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.procs.clear()
        if self.net is not None:
            from mininet.log import setLogLevel
            setLogLevel("critical")   # Mininet's stop complains about interfaces already gone
            try:
                self.net.stop()
            finally:
                self.net = None
        if self.run_info is not None:
            for name in sorted(links_of(self.run_info.id), key=lambda n: "-eth" in n):
                subprocess.run(["ip", "link", "del", name], capture_output=True)
            self.run_info.unregister()

    # -- running things in hosts ---------------------------------------------------------------------
    def host(self, name: str):
        if self.net is None or name not in self.topo.nodes or not self.topo.nodes[name].is_host:
            raise KeyError(f"no running host {name!r}; hosts: {', '.join(self.topo.hosts())}")
        return self.net.get(name)

    def prefix(self, where: str | None) -> list[str]:
        """Argv prefix that runs a command in host `where`'s namespace (root namespace for None)."""
        return [] if where is None else ["mnexec", "-a", str(self.host(where).pid)]

    def exec(self, cmd: Cmd, timeout: float = 10) -> str:
        argv = self.prefix(cmd.where) + list(cmd.argv)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.run_info.env())
        if r.returncode != 0:
            raise ShapingError(str(cmd), r.returncode, r.stderr or r.stdout)
        return r.stdout

    def run(self, host: str, argv: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(self.prefix(host) + argv, capture_output=True, text=True, timeout=timeout,
                           env=self.run_info.env())
        if check and r.returncode != 0:
            raise EmulationError(f"[{host}] {' '.join(argv)} failed (exit {r.returncode}): {r.stderr.strip()}")
        return r

    def popen(self, host: str, argv: list[str], **kw) -> subprocess.Popen:
        """Start a process in `host`; it is killed at stop() if still running, and gets SIGTERM if this process
        dies first (the runner killed by SIGKILL)."""
        kw.setdefault("env", self.run_info.env())
        kw.setdefault("preexec_fn", die_with_parent())
        p = subprocess.Popen(self.prefix(host) + argv, **kw)
        self.procs.append(p)
        return p

    # -- live changes and counters -------------------------------------------------------------------
    def set_link(self, name: str, state: LinkState) -> None:
        """Move a running link to `state`: HTB rate in place through a persistent tc batch (no qdisc rebuild),
        delay/jitter/loss through the delay daemon or `tc qdisc change` on the netem leaf."""
        update = self.shaping.update(name, state)
        for where, lines in update.tc_lines.items():
            self._batch(where).apply(lines)
        for host, params in update.daemon_sets:
            self.daemons[host].set(params.queue, params.delay_ms, params.jitter_ms, params.loss)

    def _batch(self, where: str | None) -> TcBatch:
        if where not in self.batches:
            intf = next(i for w, i in self.shaping.shaped_interfaces() if w == where)
            self.batches[where] = TcBatch(self.prefix(where), intf, env=self.run_info.env())
        return self.batches[where]

    def sent_bytes(self, link: str, direction: str) -> int:
        """Bytes the link's shaper has sent in `direction` (HTB class counter, Ethernet header included)."""
        ds = self.shaping.directions[(link, direction)]
        out = self.exec(Cmd(ds.sender.host, ("tc", "-s", "class", "show", "dev", ds.sender.intf, "classid", "5:1")))
        m = re.search(r"Sent (\d+) bytes", out)
        if not m:
            raise EmulationError(f"cannot read the shaper counters of {link} ({direction}): {out!r}")
        return int(m.group(1))

    def interact(self) -> None:
        """Mininet's CLI on this network (`d1 ping verifier`, `d1 iperf3 -s &`, ...)."""
        from mininet.cli import CLI
        from mininet.log import setLogLevel
        setLogLevel("output")   # the CLI prints through Mininet's logger; quiet it again afterwards
        try:
            CLI(self.net)
        finally:
            setLogLevel("error")

    def daemon_stats(self) -> dict[str, dict]:
        return {host: d.stats() for host, d in self.daemons.items()}

    def info(self) -> dict:
        return {"run": self.run_info.id if self.run_info else None, "topology": self.topo.name, "seed": self.seed,
                "delay_backend": self.backend, "delay_backend_reason": self.backend_reason,
                "bridges": dict(self.net_plan.bridges) if self.net_plan else {}}

    def _verify_qdiscs(self) -> None:
        """Read every shaped interface's qdiscs back: a shaper that is not there must stop the run."""
        leaf = self.shaping.expected_leaf()
        for where, intf in self.shaping.shaped_interfaces():
            qdiscs = json.loads(self.exec(Cmd(where, ("tc", "-j", "qdisc", "show", "dev", intf))) or "[]")
            kinds = {(q.get("kind"), q.get("parent", "root" if q.get("root") else None)) for q in qdiscs}
            if ("htb", "root") not in kinds or (leaf, "5:1") not in kinds:
                raise ShapingError(f"[{where or 'root'}] tc qdisc show dev {intf}", 0,
                                   f"expected htb at root and {leaf} under 5:1, found {sorted(map(str, kinds))}")


def hash_seed(seed: int, host: str) -> int:
    """Per-host daemon seed: the same emulation seed draws the same jitter and losses in every run."""
    return zlib.crc32(f"{seed}/{host}".encode())

