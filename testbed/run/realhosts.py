"""Nodes on real hosts: the runner's side of an inventory (testbed/run/inventory.py).

For each real host the runner
- places a `NodeHost` actor (testbed/run/hostactor.py) on the Ray node that advertises the host's resource
  label; the job ships this project to it (raycluster.project_env), so the real host runs this very code;
- joins it to the emulated network through a gateway in its stand-in host (testbed/net/gateway.py): the
  stand-in's links stay shaped as for an emulated node and its traffic is forwarded to the real machine;
- starts the node there with its config rewritten for that machine (paths into the actor's scratch directory,
  a verifier bound on all its addresses, a drafter's verifiers reached through the gateway);
- mirrors the node's events, outputs and log into the run directory as they grow (a thread, every 0.2 s), so
  progress, the start gates, node faults and metrics work as for a local process (`RemoteProcess`).

Clocks: events carry the real host's wall clock. The offset to this machine's clock, measured at the start
(half a round trip of uncertainty), goes to the manifest; a host without NTP shows up there.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from pathlib import Path

from testbed.net.gateway import Forward, Gateway
from testbed.net.shaping import htb_class, netem_leaf, pfifo_leaf
from testbed.run.inventory import Inventory

REPO = Path(__file__).resolve().parent.parent.parent
SYNC_S = 0.2
OPEN_MBPS = 10_000.0          # a link shaped on its real host is this open in Mininet: shaped once, not twice


class RealHostError(RuntimeError):
    pass


class RemoteProcess:
    """A node process on a real host, as the runner's loops use a Popen: poll, wait, signals, returncode."""

    def __init__(self, host: "RealHost", name: str, pid: int):
        self.host, self.name, self.pid = host, name, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import subprocess
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"{self.name}@{self.host.name}", timeout)
            self.host.sync_now()
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        import ray
        ray.get(self.host.actor.signal.remote(self.name, int(sig)))

    def terminate(self) -> None:
        import signal
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        import signal
        self.send_signal(signal.SIGKILL)


class RealHost:
    """One inventory host during a run: its actor, its gateway, its mirrored files."""

    def __init__(self, name: str, spec, actor, info: dict, run_dir: Path):
        self.name, self.spec, self.actor, self.info, self.run_dir = name, spec, actor, info, run_dir
        self.remote_dir = info["dir"]
        self.gateway: Gateway | None = None
        self.procs: dict[str, RemoteProcess] = {}
        self.offsets: dict[str, int] = {}        # remote relative path → bytes mirrored so far
        self.lock = threading.Lock()
        self.pushed_mtime = 0.0
        self.shaping: dict | None = None         # what `shape:` applied there (manifest)
        self.undo: list[list[str]] = []

    @property
    def address(self) -> str:
        return self.spec.address or self.info["node_ip"]

    def start_node(self, name: str, kind: str, config_path: Path, here: Path, mode: str,
                   endpoints: list[str] | None, bind_port: int | None, extra: list[str]) -> RemoteProcess:
        """Ship the node's config (paths rewritten) and the run files it names; start it there."""
        import ray
        text = config_path.read_text()
        config = json.loads(text.replace(str(here), self.remote_dir).replace(str(REPO), self.info["project"]))
        if bind_port is not None:
            config["bind"] = f"tcp://0.0.0.0:{bind_port}"
        if endpoints is not None:
            config["connect"] = endpoints
        for path in sorted(_run_files(json.loads(text), here)):
            ray.get(self.actor.put.remote(str(path.relative_to(here)), path.read_bytes()))
        gate = config.get("start_gate")
        if gate:
            ray.get(self.actor.mkfifo.remote(str(Path(gate).relative_to(self.remote_dir))))
        rel = f"nodes/{config_path.stem}.real.json"
        ray.get(self.actor.put.remote(rel, json.dumps(config, indent=1).encode()))
        pid = ray.get(self.actor.start.remote(name, f"nodes.{kind}", rel, f"logs/{name}.log",
                                              self.spec.python, extra, mode == "a"))
        for rel_file in (f"events/{name}.jsonl", f"outputs/{name}.jsonl", f"logs/{name}.log"):
            if mode != "a" or rel_file not in self.offsets:
                self.offsets[rel_file] = 0
                (here / rel_file).parent.mkdir(parents=True, exist_ok=True)
                if rel_file.startswith("logs/") and mode != "a":
                    (here / rel_file).write_bytes(b"")
        self.procs[name] = RemoteProcess(self, name, pid)
        return self.procs[name]

    def sync_now(self) -> None:
        """Mirror new bytes of the nodes' files, push a changed linkstate.json, read exit codes."""
        import ray
        with self.lock:
            state = self.run_dir / "linkstate.json"
            try:
                mtime = state.stat().st_mtime
            except OSError:
                mtime = 0.0
            if mtime > self.pushed_mtime:
                ray.get(self.actor.put.remote("linkstate.json", state.read_bytes()))
                self.pushed_mtime = mtime
            got = ray.get(self.actor.sync.remote(dict(self.offsets)))
            for rel, data in got["files"].items():
                with open(self.run_dir / rel, "ab") as f:
                    f.write(data)
                self.offsets[rel] += len(data)
            for name, rc in got["rc"].items():
                if name in self.procs and rc is not None:
                    self.procs[name].returncode = rc
            return bool(got["files"])


class RealHosts:
    """Every real host of one run: placement, gateways, nodes, mirroring, teardown."""

    def __init__(self, inventory: Inventory, exp, run_id: str, run_dir: Path, log=print):
        self.inv, self.exp, self.run_id, self.run_dir, self.log = inventory, exp, run_id, run_dir, log
        self.hosts: dict[str, RealHost] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.clock_offsets: dict[str, float] = {}

    def __contains__(self, host: str) -> bool:
        return host in self.hosts

    def place(self) -> None:
        """One actor per real host on the node with its label (waits up to limits.ready_timeout_s)."""
        import ray
        from testbed.run.hostactor import NodeHost
        cls = ray.remote(NodeHost)
        pending = {}
        for name, spec in self.inv.hosts.items():
            pending[name] = cls.options(num_cpus=0, resources={spec.resource: 0.001}, max_restarts=0,
                                        name=f"specnet-{self.run_id}-{name}").remote(self.run_id)
        for name, actor in pending.items():
            t0 = time.time()
            try:
                info = ray.get(actor.info.remote(), timeout=self.exp.limits.ready_timeout_s)
            except ray.exceptions.GetTimeoutError:
                raise RealHostError(f"real host {name}: no Ray node with resource {self.inv.hosts[name].resource!r} "
                                    f"took its actor within {self.exp.limits.ready_timeout_s:g} s") from None
            samples = []                 # the offset from the quickest of a few round trips (the first is slow)
            for _ in range(5):
                t0 = time.time()
                there = ray.get(actor.now.remote())
                t1 = time.time()
                samples.append((t1 - t0, there - (t0 + t1) / 2))
            self.clock_offsets[name] = min(samples)[1]
            self.hosts[name] = RealHost(name, self.inv.hosts[name], actor, info, self.run_dir)
            self.log(f"real host {name}: {info['hostname']} ({self.hosts[name].address}, Ray node "
                     f"{info['node_id'][:8]}), clock offset {self.clock_offsets[name] * 1e3:+.1f} ms")

    def connect(self, emu) -> None:
        """A gateway per real host, in its stand-in: a verifier's port forwarded to it, a drafter's way in."""
        plan = emu.net_plan
        port = self.exp.verifier.port
        verifiers = self.exp.verifier_nodes()
        for index, (name, host) in enumerate(self.hosts.items()):
            serves = (port,) if name in verifiers else ()
            forwards = tuple(Forward(_free_port(), f"{plan.ip(v)}:{port}") for v in verifiers) \
                if name in self.exp.drafter_nodes() else ()
            intfs = tuple(sorted({end.intf for link in plan.links for end in (link.a, link.b) if end.node == name}))
            gw = Gateway(self.run_id, index, name, str(plan.ip(name)), intfs, host.address, serves, forwards)
            host.gateway = gw
            gw.setup(emu.exec, emu.host(name).pid)
            if host.spec.shape:
                self._shape(host, index)
            self.log(f"real host {name}: gateway {gw.root_intf} ({gw.outer_ip} ↔ {gw.inner_ip}); "
                     + (f"serves port {port} at {gw.stand_in_ip}" if serves else
                        "reaches " + ", ".join(f"{f.target} at {gw.endpoint_for(f)}" for f in forwards)))

    def _shape(self, host: RealHost, index: int) -> None:
        import ray
        link = host_link(self.exp.topology_obj(), host.name)
        intf, ifb = host.spec.shape, f"sn{self.run_id}i{index}"
        setup, undo = shaping_commands(link, host.name, intf, ifb)
        before = ray.get(host.actor.offloads.remote(intf))
        host.undo = undo + [["ethtool", "-K", intf, *[x for k, v in before.items() for x in (k, v)]]]
        try:
            ray.get(host.actor.run_commands.remote(setup))
        except ray.exceptions.RayTaskError as e:
            ray.get(host.actor.undo_commands.remote(host.undo))
            host.undo = []
            why = str(e.cause if hasattr(e, "cause") else e).splitlines()[-1]
            raise RealHostError(f"{host.name}: shaping {intf} on {host.info['hostname']} failed: {why}"
                                + (" (that kernel has no netem: delay, jitter and loss need it; leave shape out "
                                   "to shape the link in the emulator)" if "netem" in why else "")) from None
        host.shaping = {"interface": intf, "ifb": ifb, "link": link.link_name, "state": dataclasses.asdict(link.state()),
                        "egress": "up" if link.a == host.name else "down", "commands": [" ".join(c) for c in setup],
                        "offloads_before": before}
        self.log(f"real host {host.name}: {link.link_name} shaped on {host.info['hostname']}:{intf} "
                 f"(ingress through {ifb}); open in the emulator")

    def start_node(self, name: str, host: str, argv: list[str], here: Path, mode: str) -> RemoteProcess:
        real = self.hosts[host]
        kind = "verifier" if "nodes.verifier" in argv else "drafter"
        config = Path(argv[argv.index("--config") + 1])
        extra = argv[argv.index("--config") + 2:]
        endpoints = [real.gateway.endpoint_for(f) for f in real.gateway.forwards] if kind == "drafter" else None
        proc = real.start_node(name, kind, config, here, mode, endpoints,
                               self.exp.verifier.port if kind == "verifier" else None, extra)
        if self._thread is None:
            self._thread = threading.Thread(target=self._mirror, name="realhosts-mirror", daemon=True)
            self._thread.start()
        return proc

    def _mirror(self) -> None:
        while not self._stop.wait(SYNC_S):
            for h in list(self.hosts.values()):
                try:
                    h.sync_now()
                except Exception as e:       # a lost host: its nodes read as dead (exit -1), the run fails
                    self.log(f"real host {h.name}: lost ({type(e).__name__}: {str(e)[:200]})")
                    for p in h.procs.values():
                        if p.returncode is None:
                            p.returncode = -1

    def hold_gate(self, host: str, gate: Path, here: Path) -> bool:
        import ray
        real = self.hosts[host]
        return ray.get(real.actor.hold_gate.remote(str(gate.relative_to(here))))

    def release_gates(self) -> None:
        import ray
        ray.get([h.actor.release_gates.remote() for h in self.hosts.values()])

    def manifest(self) -> dict:
        return {name: {"resource": h.spec.resource, "hostname": h.info["hostname"], "node_ip": h.info["node_ip"],
                       "ray_node_id": h.info["node_id"], "address": h.address, "python": h.spec.python or h.info["python"],
                       "clock_offset_s": round(self.clock_offsets.get(name, 0.0), 6), "shaping": h.shaping,
                       "gateway": None if h.gateway is None else {
                           "veth": h.gateway.root_intf, "outer_ip": h.gateway.outer_ip, "inner_ip": h.gateway.inner_ip,
                           "serves": list(h.gateway.serves), "public_ip": h.gateway.public_ip,
                           "forwards": [{"port": f.port, "target": f.target} for f in h.gateway.forwards]}}
                for name, h in self.hosts.items()}

    def stop(self) -> None:
        """Stop the nodes, mirror the last bytes, remove the gateways and the hosts' scratch directories."""
        import ray
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for h in self.hosts.values():
            try:
                ray.get(h.actor.stop.remote(), timeout=30)
                if h.undo:
                    h.shaping["sent_bytes"] = ray.get(h.actor.sent_bytes.remote(
                        [h.shaping["interface"], h.shaping["ifb"]]), timeout=30)
                    ray.get(h.actor.undo_commands.remote(h.undo), timeout=30)
                    h.undo = []
                while h.sync_now():            # until nothing more arrives
                    pass
                ray.get(h.actor.remove.remote(), timeout=30)
            except Exception as e:
                self.log(f"real host {h.name}: stop: {type(e).__name__}: {str(e)[:200]}")
            finally:
                if h.gateway is not None:
                    h.gateway.teardown()
                ray.kill(h.actor)


def host_link(topo, host: str):
    return next(l for l in topo.links if host in (l.a, l.b))


def emulated_topology(topo, inventory: Inventory):
    """The topology Mininet builds: a link shaped on its real host (`shape:`) left open here."""
    shaped = {host_link(topo, h).link_name for h, spec in inventory.hosts.items() if spec.shape}
    if not shaped:
        return topo
    links = [l.model_copy(update={"rate_up_mbps": OPEN_MBPS, "rate_down_mbps": OPEN_MBPS, "delay_ms": 0.0,
                                  "jitter_ms": 0.0, "loss_pct": 0.0}) if l.link_name in shaped else l
             for l in topo.links]
    out = topo.model_copy(update={"links": links})
    out._source = topo._source
    return out


def shaping_commands(link, host: str, intf: str, ifb: str) -> tuple[list[list[str]], list[list[str]]]:
    """The host's link as the emulator shapes a link direction (testbed/net/shaping.py's HTB class and leaf),
    on the real interface: its egress is the direction the host sends, its ingress (through an IFB) the other.
    Delay, jitter and loss need netem on that host (a real kernel has it). Returns (set up, undo)."""
    state = link.state()
    out_d = "up" if link.a == host else "down"
    in_d = "down" if out_d == "up" else "up"

    def leaf(dev, d):
        needs_netem = state.delay_ms or state.jitter_ms or state.loss(d)
        return list(netem_leaf("add", dev, state, d) if needs_netem else pfifo_leaf("add", dev, state.queue_pkts))

    setup = [["ethtool", "-K", intf, "tso", "off", "gso", "off", "gro", "off"]]
    for dev, d in ((intf, out_d), (ifb, in_d)):
        if dev == ifb:
            setup += [["ip", "link", "add", ifb, "type", "ifb"], ["ip", "link", "set", ifb, "up"],
                      ["tc", "qdisc", "add", "dev", intf, "handle", "ffff:", "ingress"],
                      ["tc", "filter", "add", "dev", intf, "parent", "ffff:", "protocol", "all", "u32", "match",
                       "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb]]
        setup += [["tc", "qdisc", "replace", "dev", dev, "root", "handle", "5:", "htb", "default", "1"],
                  ["tc", *htb_class("add", dev, state.rate_mbps(d))], ["tc", *leaf(dev, d)]]
    undo = [["tc", "qdisc", "del", "dev", intf, "root"], ["tc", "qdisc", "del", "dev", intf, "ingress"],
            ["ip", "link", "del", ifb]]
    return setup, undo


def _run_files(config: dict, here: Path) -> set[Path]:
    """Files under the run directory that a node config names (prompts, a trace share, linkstate.json)."""
    found = set()

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and v.startswith(str(here) + "/"):
            p = Path(v)
            if p.is_file() and here in p.resolve().parents:
                found.add(p)
    walk(config)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
