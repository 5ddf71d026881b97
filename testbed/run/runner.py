"""`testbed run`: one experiment point → a network, a verifier and drafters → a results directory.

    results/<experiment>/<UTC time>-<config hash>/
        manifest.json      resolved config and hash, seeds, git commit, versions, kernel, shaping, CPU/GPU, times
        prompts.jsonl      the prompts the drafters used (prompts-<node>.jsonl: a drafter's own prompt set)
        traces/<node>.jsonl  each drafter's share of workload.trace (arrivals trace)
        events/*.jsonl     every node's event log (and links.jsonl: the link states applied)
        outputs/*.jsonl    every drafter's generated tokens and text
        nodes/*.json       every node's config; `python -m nodes.drafter --config RUN/nodes/d1.json` reruns d1
        logs/*.log         every node's stdout/stderr
        linkstate.json     each drafter's path rates and base RTT now (read by network-aware policies)
        metrics.json, metrics.csv, summary.md, plots/*.png
Everything started is stopped in `finally`; on Ctrl-C or a node's death the partial results are still written.
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from nodes.events import Connect, EventLog, EventTail, Finish, Ready, Verdict, Welcome
from testbed.run import clients as clients_mod
from testbed.run import curve as curve_mod
from testbed.run.hostload import HostLoad
from testbed.run import manifest as manifest_mod
from testbed.net.runs import Run
from testbed.run.nodefaults import NodeFaults
from testbed.run.nodeprocs import Nodes
from testbed.run.watchdog import Watchdog, reap
from testbed.run.realhosts import RealHostError
from testbed.run.node_configs import start_gate, drafter_config, verifier_config, write_node_config
from testbed.run.workload_files import write_run_files


class RunFailed(RuntimeError):
    pass


@dataclass
class RunResult:
    run_dir: Path
    status: str            # complete | interrupted | failed
    message: str = ""


class _Progress:
    """Requests done of the total (a timed workload: seconds of its duration) and tokens so far, read from the
    drafters' event logs as they grow. On a terminal a live bar; in a log (CI) the same text as a plain line
    every 10 s; either way a last line at the end."""

    def __init__(self, run_dir: Path, drafters: list[str], total_requests: int | None, duration: float | None,
                 clients: list[str] = ()):
        self.tail = EventTail({d: run_dir / "events" / f"{d}.jsonl" for d in [*drafters, *clients]})
        self.welcomed: set[str] = set()
        self.requests = self.tokens = 0
        self.timed = total_requests is None
        self.t0 = time.monotonic()
        tty = sys.stderr.isatty()
        # the terminal's size, 80x24 when it says 0x0 (as a fresh pseudo-terminal may): tqdm would print nothing
        cols, rows = shutil.get_terminal_size() if tty else (None, None)
        unit = "s" if self.timed else "requests"
        self.bar = tqdm(total=duration if self.timed else total_requests, miniters=0,
                        mininterval=0.5 if tty else 10, file=sys.stderr if tty else _Lines(sys.stderr),
                        ncols=cols, nrows=rows,
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} " + unit + "{postfix} [{elapsed}<{remaining}]")

    def poll(self) -> None:
        for d, e in self.tail.new_events():
            if isinstance(e, (Welcome, Connect)):     # a drafter welcomed by a verifier; a user's client connected
                self.welcomed.add(d)
            elif isinstance(e, Verdict):
                self.tokens += e.tokens
            elif isinstance(e, Finish):
                self.requests += 1

    def show(self, final: bool = False) -> None:
        done = min(time.monotonic() - self.t0, self.bar.total) if self.timed else self.requests
        self.bar.set_postfix_str((f"{self.requests} requests, " if self.timed else "") + f"{self.tokens} tokens",
                                 refresh=False)
        if final:
            self.bar.n = done
            self.bar.close()            # draws the last state once more, and ends the line
        else:
            self.bar.update(done - self.bar.n)   # redraws at most every mininterval


class _Lines:
    """tqdm's output for a log rather than a terminal: each redraw a line of its own, not a carriage return."""

    def __init__(self, f):
        self.f = f

    def write(self, s: str) -> None:
        if s.strip():
            self.f.write(s.lstrip("\r").rstrip() + "\n")

    def flush(self) -> None:
        self.f.flush()


def _log_links(emu, path: Path) -> None:
    from testbed.channels.driver import link_event
    with EventLog(path, "runner") as log:
        for name, st in emu.shaping.states.items():
            log.write(link_event("runner", name, st))


def new_run_dir(root: Path, exp) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    d = root / exp.name / f"{stamp}-{exp.config_hash()}"
    n = 1
    while d.exists():
        n += 1
        d = root / exp.name / f"{stamp}-{exp.config_hash()}-{n}"
    for sub in ("events", "outputs"):
        (d / sub).mkdir(parents=True)
    return d


def run_point(exp, root: Path = Path("results"), inventory=None) -> RunResult:
    """One point; `inventory` (testbed/run/inventory.py, checked against exp) puts some of its nodes on real
    hosts: the caller has joined the Ray cluster (testbed/common/raycluster.py)."""
    run_dir = new_run_dir(root, exp)
    man = manifest_mod.initial(exp)
    manifest_mod.write(run_dir, man)
    print(f"run {exp.label}: {run_dir}", file=sys.stderr, flush=True)
    trace_sessions = write_run_files(exp, run_dir)      # prompt sets and trace shares (testbed/run/workload_files.py)
    emu = nodes = driver = link_state = progress = load = watchdog = run = node_faults = real = None
    status, message = "failed", ""
    try:
        keys = curve_mod.for_run(exp, inventory, man)   # CURVE keys of this run (testbed/run/curve.py), None: plain
        if exp.backend != "sim":        # processes and links that must not outlive this one (watchdog.py)
            reaped = reap()
            if reaped.runs:
                print(f"before run {exp.label}: {reaped}", file=sys.stderr, flush=True)
            run = Run.new(exp.topology_obj().name, run_dir)
            (run_dir / "logs").mkdir(exist_ok=True)
            watchdog = Watchdog(run, run_dir / "logs" / "watchdog.log")
            run.register()
        if exp.backend == "sim":
            from testbed.run.simrun import SimFailed, run_sim
            sim_plan = _channel_plan(exp)
            if sim_plan:
                man["channels"] = {**_channels_manifest(sim_plan), "simulated": True}
            try:
                man["sim"] = run_sim(exp, run_dir)
            except SimFailed as e:
                raise RunFailed(str(e)) from None
            status = "complete"
            return RunResult(run_dir, status, message)
        plan = _channel_plan(exp)
        if plan and exp.backend != "mininet":
            man["channels"] = {"applied": False, "why": "backend local has no shaped links; channels ignored"}
        if inventory is not None:           # placed before the network is built: a missing host fails fast
            from testbed.run.realhosts import RealHosts
            real = RealHosts(inventory, exp, run.id, run_dir, lambda m: print(m, file=sys.stderr, flush=True))
            real.place()
        if exp.backend == "mininet":
            from testbed.net.emulation import Emulation
            topo = exp.topology_obj()
            if real is not None:            # a link shaped on its real host (inventory `shape:`) is open here
                from testbed.run.realhosts import emulated_topology
                topo = emulated_topology(topo, inventory)
            emu = Emulation(topo, seed=exp.seed, log=lambda m: print(m, file=sys.stderr, flush=True),
                            delay_elements=plan.live_delay_links() if plan else "needed", run=run)
            emu.start()
            man["emulation"] = emu.info()
            if real is not None:
                real.connect(emu)
                man["real_hosts"] = real.manifest()
            _log_links(emu, run_dir / "events" / "links.jsonl")
            from testbed.channels.driver import LinkStatePublisher
            link_state = run_dir / "linkstate.json"
            publisher = LinkStatePublisher(link_state, emu.net_plan, exp.drafter_nodes(), exp.verifier.node)
            publisher.publish(emu.shaping.states)
            if plan:
                driver = _start_channels(exp, plan, emu, run_dir,
                                         lambda d: publisher.publish(emu.shaping.states, d.gamma_hints))
                man["channels"] = _channels_manifest(plan)
        nodes = Nodes(emu, run_dir, run, real)
        here = run_dir.resolve()           # node configs name absolute paths: a node reruns from any directory
        # one verifier, named "verifier"; with routing, one per verifier host, named after it
        vnames = {h: (h if exp.routing.policy else "verifier") for h in exp.verifier_nodes()}
        endpoints = []
        for vhost, vname in vnames.items():
            # local: every verifier is on this machine's loopback, so each takes a free port of its own (the one
            # it bound is in its Ready event); in Mininet each host has its own address and the configured port
            endpoint = f"tcp://{nodes.address(vhost)}:{exp.verifier.port if emu else '*'}"
            config = verifier_config(exp, vname, endpoint, here, link_state and link_state.resolve(), keys)
            v = nodes.start(vname, vhost, write_node_config(config, here))
            bound = _wait_ready(nodes, v, run_dir / "events" / f"{vname}.jsonl", exp.limits.ready_timeout_s, vname)
            endpoints.append(endpoint if emu else bound)
            if not emu:        # a restart (node fault) or a rerun binds the port the drafters know
                write_node_config(config.model_copy(update={"bind": bound}), here)
        drafters = exp.drafter_nodes()
        serves = clients_mod.served_drafter(exp) if exp.clients is not None else None
        for i, node in enumerate(drafters):
            start_gate(here, node).parent.mkdir(exist_ok=True)
            os.mkfifo(start_gate(here, node))
            bind = f"tcp://{nodes.address(node) if emu else '127.0.0.1'}:{exp.clients.port}" if node == serves else None
            nodes.start(node, node, write_node_config(drafter_config(exp, node, i, endpoints, here, bind, keys), here))
        users = clients_mod.users(exp) if exp.clients is not None else []
        for i, user in enumerate(users):         # users' clients (workload.arrivals clients) start with the drafters
            os.mkfifo(start_gate(here, user))
            endpoint = f"tcp://{nodes.address(serves)}:{exp.clients.port}"
            nodes.start(user, user, write_node_config(clients_mod.client_config(exp, user, i, endpoint, here), here))
        total = None if exp.workload.duration_s is not None else sum(trace_sessions.values()) \
            if exp.workload.arrivals == "trace" else clients_mod.total_requests(exp) if users \
            else exp.workload.requests * len(drafters)
        progress = _Progress(run_dir, drafters, total, exp.workload.duration_s, users)
        load = HostLoad(run_dir / "events")          # from the start: a short run may end within one interval
        node_faults = NodeFaults(exp.faults, run_dir / "events")
        _open_gates(nodes, drafters + users, here, progress, exp.limits.ready_timeout_s, load)
        node_faults.begin(time.monotonic())          # node faults count from the workload's start
        _supervise(exp, nodes, drafters + users, progress, driver, load, node_faults)
        status = "complete"
    except KeyboardInterrupt:
        status, message = "interrupted", "interrupted by the user; partial results written"
    except RunFailed as e:
        message = str(e)
    except RealHostError as e:        # a real host's actor not placed, lost, or its gateway refused
        message = f"real hosts: {e}"
    except Exception as e:      # e.g. shaping failed: record why in the manifest, then let the CLI report it
        message = f"{type(e).__name__}: {e}"
        raise
    finally:
        torn_down = False
        try:
            if progress:
                progress.bar.close()       # before the messages of the stop, whatever ended the run
            if load:
                load.close()
            if node_faults:
                if nodes:
                    node_faults.resume_stopped(nodes)     # a stopped process would not even take SIGTERM
                node_faults.close()
            if nodes:
                nodes.stop()
            if real:
                real.stop()
                man["real_hosts"] = real.manifest()
            if driver:
                man.setdefault("channels", {})["driver"] = driver.stop()
            if emu:
                emu.stop()
            if run:
                run.unregister()
            man = manifest_mod.final(man, status, message)
            manifest_mod.write(run_dir, man)
            _write_results(run_dir, man)
            torn_down = True
        finally:
            if watchdog:        # a teardown that raised leaves the rest to the watchdog, now
                watchdog.done() if torn_down else watchdog.reap_now()
    return RunResult(run_dir, status, message)


def _open_gates(nodes: Nodes, drafters: list[str], run_dir: Path, progress: _Progress, timeout: float,
                load: HostLoad | None = None) -> None:
    """Start every drafter's sessions at once: wait until all have connected and wait at their gate (a FIFO
    opened for reading), then close the gates together. Without it the drafters start as their processes come up,
    up to hundreds of milliseconds apart on a loaded host, and the first rounds see a staggered start that the
    experiment never asked for (and the simulator does not have)."""
    deadline = time.monotonic() + timeout
    held: dict[str, int] = {}
    try:
        while len(held) < len(drafters):
            progress.poll()
            if load is not None:
                load.poll()
            for d in drafters:
                rc = nodes.procs[d].poll()
                if rc is not None:
                    raise RunFailed(f"{nodes.kinds.get(d, 'drafter')} {d} exited ({rc}) before it started:\n{nodes.tail(d)}")
                if d in held or d not in progress.welcomed:
                    continue
                if nodes.real is not None and d in nodes.real:     # its gate is on the real host
                    if nodes.real.hold_gate(d, start_gate(run_dir, d), run_dir):
                        held[d] = -1
                    continue
                try:
                    held[d] = os.open(start_gate(run_dir, d), os.O_WRONLY | os.O_NONBLOCK)
                except OSError as e:
                    if e.errno != errno.ENXIO:      # ENXIO: its reader is not there yet
                        raise
            if time.monotonic() > deadline:
                late = [d for d in drafters if d not in held]
                raise RunFailed(f"{'node' if any(nodes.kinds.get(d) == 'client' for d in late) else 'drafter'}(s) "
                                f"{', '.join(late)} did not connect within {timeout:g} s "
                                f"(limits.ready_timeout_s)")
            time.sleep(0.005)
    finally:
        for fd in held.values():            # EOF at every gate: all start within microseconds of each other
            if fd >= 0:
                os.close(fd)
        if nodes.real is not None:          # a real host's drafters a Ray call later (milliseconds)
            nodes.real.release_gates()
        for d in drafters:                  # a rerun from RUN/nodes/<d>.json finds no gate and starts at once
            start_gate(run_dir, d).unlink(missing_ok=True)


def _wait_ready(nodes: Nodes, proc, log: Path, timeout: float, name: str = "verifier") -> str:
    """The endpoint the verifier bound, once it says it is ready."""
    deadline = time.monotonic() + timeout
    what = "the verifier" if name == "verifier" else f"verifier {name}"
    tail = EventTail({name: log})
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunFailed(f"{what} exited ({proc.returncode}) before it was ready:\n{nodes.tail(name)}")
        for _, e in tail.new_events():
            if isinstance(e, Ready):
                return e.endpoint
        time.sleep(0.1)
    raise RunFailed(f"{what} was not ready within {timeout:g} s (limits.ready_timeout_s):\n{nodes.tail(name)}")


def _channel_plan(exp):
    from testbed.channels.plan import ChannelPlan
    from testbed.run.clients import demands
    plan = ChannelPlan(exp.topology_obj(), exp.channel_interval_ms / 1e3, exp.seed, exp.faults)
    plan.known_demand = demands(exp)     # users' uploads, known before the run (clients:)
    link_faults = [f for f in exp.faults if f.link is not None]     # node faults do apply on local
    if link_faults and exp.backend == "local":    # loopback has no links to fail; metrics.json says so too
        print(f"warning: backend local has no shaped links: the {len(link_faults)} link fault(s) of `faults:` are "
              "NOT applied", file=sys.stderr, flush=True)
    return plan if plan.driven_links() else None


def _start_channels(exp, plan, emu, run_dir: Path, on_tick):
    from testbed.channels.driver import ChannelDriver, Telemetry
    tele = Telemetry(run_dir / "events", exp.drafter_nodes()) if plan.uses_telemetry() else None
    driver = ChannelDriver(plan, emu.set_link, run_dir / "events" / "links.jsonl", tele, on_tick=on_tick)
    driver.start()
    return driver


def _channels_manifest(plan) -> dict:
    """What the channel driver does, including the choices the papers leave open (recorded with the run)."""
    return {"applied": True, "interval_s": plan.interval_s, "links": plan.driven_links(),
            "live_delay_links": plan.live_delay_links(),
            "allocation": {ap: {d: p.name for d, p in ps.items()} for ap, ps in plan.policies.items()},
            "choices": [
                "rates are applied as HTB class changes every interval; a trace's rate is its mean over the interval",
                "with an AP radio, a station's rate = its band share x the rate its channel gives with the whole band",
                "demand (telemetry) = EWMA of a drafter's DRAFT (up) and VERDICT (down) frame bytes; unknown = mean",
                "fading and shadowing are reciprocal (one process per link); directions differ by transmit power",
                "Gilbert-Elliott steps once per interval and applies to both directions of its link"]}


def _supervise(exp, nodes: Nodes, drafters: list[str], progress: _Progress, driver=None, load=None,
               node_faults: NodeFaults | None = None) -> None:
    """Wait for every drafter to finish; fail on a dead node, a drafter that never connects, or the time limit.
    Carries out the node faults (nodefaults.py): a node they killed is not a failure."""
    started = time.monotonic()
    while True:
        if node_faults is not None:
            node_faults.poll(nodes, time.monotonic())
        if load is not None:
            load.poll()
        if driver is not None and driver.error is not None:
            raise RunFailed(f"the channel driver failed: {type(driver.error).__name__}: {driver.error}")
        progress.poll()
        progress.show()
        now = time.monotonic() - started
        for name, v in nodes.procs.items():
            if name not in drafters and v.poll() is not None and not (node_faults and node_faults.expected_dead(name)):
                what = "the verifier" if name == "verifier" else f"verifier {name}"
                raise RunFailed(f"{what} died (exit {v.returncode}):\n{nodes.tail(name)}")
        running = 0
        for d in drafters:
            rc = nodes.procs[d].poll()
            if rc is None:
                running += 1
            elif node_faults and node_faults.expected_dead(d):   # killed by a fault: restarted later, or failed
                running += node_faults.restart_pending(nodes, d)
            elif rc != 0:
                raise RunFailed(f"{nodes.kinds.get(d, 'drafter')} {d} died (exit {rc}):\n{nodes.tail(d)}")
        if not running:
            progress.poll()
            progress.show(final=True)
            return
        missing = [d for d in drafters if d not in progress.welcomed]
        if missing and now > exp.limits.ready_timeout_s:
            raise RunFailed(f"drafter(s) {', '.join(missing)} did not connect within {exp.limits.ready_timeout_s:g} s "
                            f"(limits.ready_timeout_s):\n{nodes.tail(missing[0])}")
        if now > exp.limits.run_timeout_s:
            raise RunFailed(f"the run took longer than limits.run_timeout_s = {exp.limits.run_timeout_s:g} s")
        time.sleep(0.05 if node_faults is not None and node_faults.pending() else 0.2)


def _write_results(run_dir: Path, man: dict) -> None:
    from testbed.run import metrics, plots
    try:
        m = metrics.compute(run_dir)
        metrics.write(run_dir, m)
        metrics.write_summary(run_dir, man, m, plots.plot_names(run_dir))
        plots.make_plots(run_dir)
    except Exception as e:   # partial runs may have too little to plot; say so rather than lose the manifest
        print(f"warning: results of {run_dir} incomplete: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
