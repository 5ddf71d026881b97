"""`testbed` command line: doctor, check, up, calibrate, run, report, clean, trace, profile.

Exit status: 0 fine, 1 a run failed or calibration is outside tolerance, 2 bad input (nothing started).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from testbed.common.errors import ConfigError, ShapingError


def _sigterm_as_interrupt(*_):
    raise KeyboardInterrupt   # unwinds through `finally`, so everything started is stopped


def _backend_for_plan(forced: str | None) -> tuple[str, str]:
    """Backend for printing a plan: a forced one is shown as is, else the machine is probed."""
    if forced and forced != "auto":
        return forced, "forced on the command line"
    from testbed.net.capabilities import CapabilityError, choose_delay_backend
    try:
        return choose_delay_backend(None)
    except CapabilityError as e:
        return "nfqueue", f"probe failed ({e}); showing the nfqueue plan"


def cmd_doctor(args) -> int:
    from testbed.net.capabilities import CapabilityError, choose_delay_backend, format_table, probe_all
    caps = probe_all()
    try:
        backend, reason = choose_delay_backend(args.delay_backend)
    except CapabilityError as e:
        backend, reason = "none", str(e)
    print(format_table(caps, backend, reason))
    return 0


def _is_experiment(path: str) -> bool:
    """An experiment file names a topology; a topology file never has that key. Unreadable: not one (the topology
    loader then reports the file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
        return any(line.startswith(b"topology:") for line in head.splitlines())
    except OSError:
        return False


def cmd_check(args) -> int:
    from testbed.net.netplan import NetPlan
    from testbed.net.shaping import ShapingPlan
    from testbed.net.topology import load_topology
    from testbed.channels.plan import ChannelPlan
    from testbed.run.checks import MAX_NODE_PROCESSES
    if _is_experiment(args.topology):        # an experiment file: check it as one (its topology with it)
        from testbed.common.errors import ConfigError
        from testbed.run.experiment import load_experiment
        try:
            exp = load_experiment(args.topology)
        except ConfigError as e:
            for problem in e.problems:
                print(str(problem), file=sys.stderr)
            return 2
        print(f"{args.topology}: valid experiment, {len(exp.points())} point(s), backend {exp.backend}; "
              f"`testbed run {args.topology} --dry-run` prints its points and node configs")
        return 0
    topo = load_topology(args.topology)
    backend, reason = _backend_for_plan(args.delay_backend)
    plan = NetPlan(topo, "0000")
    channels = ChannelPlan(topo)
    print(f"{args.topology}: valid")
    if len(topo.hosts()) > MAX_NODE_PROCESSES:
        # a pool's thousand hosts: the emulator's shaping plan grows with hosts squared (one delay queue per
        # host pair), hundreds of MB of commands for a network only the simulator runs
        print(plan.describe())
        print(f"shaping commands: not shown: {len(topo.hosts())} hosts are more than the mininet backend hosts "
              f"on one machine (at most {MAX_NODE_PROCESSES} node processes); run experiments on this topology "
              f"with backend: sim")
        return 0
    shaping = ShapingPlan(plan, backend, channels.live_delay_links() if channels.driven_links() else "needed")
    print(plan.describe())
    for name in channels.driven_links():
        ch = topo.link(name).channel
        what = ch.model if ch else "static"
        if ch and ch.model == "trace":
            what += f" {ch.up}" + (f" / {ch.down}" if ch.down and ch.down != ch.up else "")
        if ch and ch.gilbert_elliott:
            what += " + gilbert-elliott loss"
        print(f"channel {name}: {what}" + (" (delay/loss live)" if name in channels.live_delay_links() else ""))
    for ap, policies in channels.policies.items():
        r = topo.nodes[ap].radio
        print(f"radio {ap}: {r.band_mhz:g} MHz, allocation up {policies['up'].name}, down {policies['down'].name}, "
              f"demand {r.demand}")
    print(f"delay backend: {backend} ({reason})")
    print("shaping commands (bridge names get a fresh run id at start instead of 0000):")
    for cmd in shaping.setup_commands():
        print(f"  {cmd}")
    for host, queues in shaping.daemons().items():
        qs = ", ".join(f"queue {q.queue}: delay {q.delay_ms:g} ms ±{q.jitter_ms:g}, loss {100 * q.loss:g} %" for q in queues)
        print(f"  [{host}] delay daemon (testbed/net/nfqdelay.py, chrt -f 50): {qs}")
    return 0


def cmd_up(args) -> int:
    from testbed.net.emulation import Emulation
    from testbed.net.topology import load_topology
    from testbed.channels.plan import ChannelPlan
    topo = load_topology(args.topology)
    plan = ChannelPlan(topo, args.channel_interval_ms / 1e3, args.seed)
    emu = Emulation(topo, args.delay_backend, seed=args.seed, log=lambda m: print(m, flush=True),
                    delay_elements=plan.live_delay_links() if plan.driven_links() else "needed")
    driver = None
    try:
        emu.start()
        print(emu.net_plan.describe(), flush=True)
        print(f"up: run {emu.run_info.id}, delay backend {emu.backend} ({emu.backend_reason})", flush=True)
        if plan.driven_links():
            from testbed.channels.driver import ChannelDriver
            driver = ChannelDriver(plan, emu.set_link, args.channel_log)
            driver.start()
            print(f"channels: {', '.join(plan.driven_links())} change every {args.channel_interval_ms:g} ms"
                  + (f", logged to {args.channel_log}" if args.channel_log else ""), flush=True)
        if args.hold is not None:
            time.sleep(args.hold)
        elif sys.stdin.isatty():
            emu.interact()
        else:
            print("holding until SIGINT or SIGTERM", flush=True)
            signal.pause()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        if driver:
            driver.stop()
        emu.stop()
        print(f"down: run {emu.run_info.id if emu.run_info else '-'} cleaned up", flush=True)
    return 0


def cmd_calibrate(args) -> int:
    from testbed.net.calibrate import Tolerance, calibrate, format_table
    from testbed.net.emulation import Emulation
    from testbed.net.topology import load_topology
    topo = load_topology(args.topology)
    links = args.links.split(",") if args.links else None
    if links:
        for name in links:
            topo.link(name)   # unknown names fail before anything starts
    tol = Tolerance(rate=args.rate_tolerance, rtt_ms=args.rtt_tolerance_ms)
    with Emulation(topo, args.delay_backend, seed=args.seed,
                   log=lambda m: print(m, file=sys.stderr, flush=True)) as emu:
        rows = calibrate(emu, links=links, duration_s=args.duration, probes=args.probes, tolerance=tol,
                         progress=lambda m: print(m, file=sys.stderr, flush=True))
        info = emu.info()
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"emulation": info, "tolerance": vars(tol), "links": [r.as_dict() for r in rows]}, f, indent=2)
        print(f"wrote {args.json}")
    bad = [r for r in rows if not r.ok]
    print(f"calibration: {len(rows) - len(bad)} of {len(rows)} link directions within tolerance")
    return 1 if bad else 0


def cmd_run(args) -> int:
    from pathlib import Path
    from testbed.run.experiment import load_experiment
    from testbed.run.runner import run_point
    exp = load_experiment(args.experiment, args.set or [])
    points = list(enumerate(exp.points(), 1))
    if args.point is not None:          # one run of the sweep (what a cluster worker runs: testbed/cluster)
        if not 1 <= args.point <= len(points):
            raise ConfigError([f"--point {args.point}: {args.experiment} has {len(points)} run(s); give 1 to "
                               f"{len(points)} (testbed run --dry-run lists them)"])
        points = [points[args.point - 1]]
    if args.cluster and args.inventory:
        raise ConfigError(["--cluster and --inventory: not both (a sweep on a cluster places whole points; real "
                           "hosts put one point's nodes on machines of their own)"])
    if args.cluster and not args.dry_run:
        return _run_on_cluster(args, exp, points)
    if args.dry_run:
        if args.cluster:                # the option's form only; the cluster is not joined
            from testbed.cluster.points import sweep_jobs
            from testbed.common.raycluster import parse
            parse(args.cluster)
            sweep_jobs(args.experiment, args.set or [], points, Path(args.results))
            print(f"--cluster {args.cluster}: each run below goes to a Ray task")
        if args.inventory:              # checked against every point; the cluster is not joined
            from testbed.run.inventory import check_against, load_inventory
            inv = load_inventory(args.inventory)
            for _, p in points:
                check_against(inv, p)
            print(f"{args.inventory}: valid; real hosts " + ", ".join(f"{h} (resource {s.resource})"
                                                                       for h, s in inv.hosts.items()))
        print(f"{args.experiment}: valid; {len(points)} run(s), backend {exp.backend}")
        for n, p in points:
            print(f"  [{n}] {p.label:<24} config {p.config_hash()}")
        _print_node_configs(points[0][1])
        return 0
    inventory = None
    if args.inventory:                  # real hosts: checked and their Ray nodes found before anything starts
        from testbed.run.inventory import prepare
        inventory = prepare(args.inventory, [p for _, p in points])
    results = []
    for i, (n, p) in enumerate(points, 1):
        print(f"=== [{i}/{len(points)}] {exp.name} {p.label}", file=sys.stderr, flush=True)
        r = run_point(p, Path(args.results), inventory)
        results.append(r)
        print(f"{r.status}: {r.run_dir}" + (f"\n{r.message}" if r.message else ""), flush=True)
        if r.status != "complete":
            break
    return _finish_run(exp, args, results)


def _run_on_cluster(args, exp, points) -> int:
    """Every point as a Ray task (testbed/cluster); all placed at once, reported as each comes back."""
    from testbed.cluster.points import sweep_jobs
    from testbed.cluster.sweep import ClusterSweep
    from testbed.common.raycluster import connect
    jobs = sweep_jobs(args.experiment, args.set or [], points, Path(args.results))
    sweep = ClusterSweep(connect(args.cluster), lambda line: print(line, file=sys.stderr, flush=True))
    sweep.check(jobs)
    results = []
    try:
        sweep.run(jobs, results.append)
    except KeyboardInterrupt:           # the points stopped and came back (or were abandoned): report what there is
        print("interrupted: the cluster's points were stopped; what they wrote came back", file=sys.stderr)
        if not any(r.status == "interrupted" for r in results):
            return 130
    for r in results:
        print(f"{r.status}: {r.run_dir or r.job.key}" + (f"\n{r.message}" if r.message else ""), flush=True)
    return _finish_run(exp, args, results)


def _finish_run(exp, args, results) -> int:
    done = [r.run_dir for r in results if r.run_dir is not None and (r.run_dir / "metrics.json").exists()]
    if done:
        from datetime import datetime, timezone
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        _print_report(done, Path(args.results) / exp.name / f"compare-{stamp}")
    if any(r.status == "interrupted" for r in results):
        return 130
    return 0 if all(r.status == "complete" for r in results) else 1


def _print_node_configs(exp) -> None:
    """The first run's node commands and configs, as the runner writes them to RUN/nodes/<name>.json."""
    from pathlib import Path
    from testbed.run import clients
    from testbed.run.node_configs import config_path, drafter_config, node_argv, verifier_config
    run = Path("RUN")
    link_state = run / "linkstate.json" if exp.backend == "mininet" else None
    endpoints = [f"tcp://<{vhost}>:{exp.verifier.port}" for vhost in exp.verifier_nodes()]
    configs = [(vhost, verifier_config(exp, vhost if exp.routing.policy else "verifier", endpoint, run, link_state))
               for vhost, endpoint in zip(exp.verifier_nodes(), endpoints)]
    serves = clients.served_drafter(exp) if exp.clients is not None else None
    configs += [(d, drafter_config(exp, d, i, endpoints, run, f"tcp://<{d}>:{exp.clients.port}" if d == serves else None))
                for i, d in enumerate(exp.drafter_nodes())]
    if exp.clients is not None:
        users = clients.users(exp)
        configs += [(u, clients.client_config(exp, u, i, f"tcp://<{serves}>:{exp.clients.port}", run))
                    for i, u in enumerate(users[:3])]
        if len(users) > 3:
            print(f"  (and {len(users) - 3} more users' clients like these)")
    print("node commands and configs of the first run (<host>: its address; RUN: the run directory):")
    for host, config in configs:
        print(f"  [{host}] " + " ".join(node_argv(config, config_path(run, config.name))))
        print(f"    {config.model_dump_json()}")


def _print_report(run_dirs, out_dir) -> None:
    from pathlib import Path
    from testbed.run.report import compare, overlay_plots
    table = compare([Path(d) for d in run_dirs])
    print(table)
    for d in run_dirs:
        print(f"  plots: {Path(d) / 'plots'}")
    if len(run_dirs) > 1:
        for path in overlay_plots([Path(d) for d in run_dirs], Path(out_dir)):
            print(f"  comparison plot: {path}")
        from testbed.run.rttplot import goodput_vs_rtt, rtt_table
        rtt_plot = goodput_vs_rtt([Path(d) for d in run_dirs], Path(out_dir))
        by_rtt = ""
        if rtt_plot:
            by_rtt = "## Goodput vs RTT\n\n" + rtt_table(run_dirs)[1] + f"\n\n![goodput vs RTT]({rtt_plot.name})\n\n"
            print(f"\ngoodput vs RTT (configured):\n{rtt_table(run_dirs)[1]}\n  plot: {rtt_plot}")
        runs = "\n".join(f"- `{Path(d).name}`: {Path(d)}" for d in run_dirs)
        (Path(out_dir) / "summary.md").write_text(f"# Comparison\n\n{by_rtt}{table}\n\nRuns, in column order:\n{runs}\n")
        print(f"  comparison table: {Path(out_dir) / 'summary.md'}")


def cmd_report(args) -> int:
    from pathlib import Path
    dirs = [Path(d) for d in args.runs]
    for d in dirs:
        if not (d / "metrics.json").exists():
            print(f"error: {d}: no metrics.json (not a run directory, or the run wrote no results)", file=sys.stderr)
            return 2
    if args.out:
        out = Path(args.out)
    else:
        from datetime import datetime, timezone
        out = dirs[0].parent / ("compare-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    _print_report(dirs, out)
    return 0


def cmd_lossless(args) -> int:
    from testbed.run.lossless import NotCheckable, check_runs

    def show(c):
        where = "identical" if c.equal else f"DIFFERS from token {c.first_difference}"
        print(f"  {c.run} {c.session}: {c.tokens} tokens, {where} to the target's own greedy output", flush=True)
    try:
        checks = check_runs(args.runs, args.threads, show)
    except NotCheckable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad = [c for c in checks if not c.equal]
    print(f"lossless: {len(checks) - len(bad)}/{len(checks)} sessions equal the target's own greedy output "
          f"token for token" + ("" if not bad else f"; {len(bad)} differ"))
    return 1 if bad or not checks else 0


def cmd_validate(args) -> int:
    from pathlib import Path
    from testbed.run.validate import run
    rows, out = run(args.quick, Path(args.results), args.only.split(",") if args.only else None)
    from testbed.run.validate import table
    print(table(rows))
    print(f"  report: {out / 'summary.md'}; plot: {out / 'sim_vs_emu.png'}")
    return 0 if all(c["ok"] or c["emu_pacing_distorted"] for _, c in rows) else 1


def cmd_reproduce(args) -> int:
    from pathlib import Path
    from testbed.reproduce.driver import reproduce
    from testbed.reproduce.suite import ReproduceError
    try:
        if args.analyse:
            from testbed.reproduce.driver import reanalyse
            return reanalyse(args.paper, Path(args.analyse), Path(args.results),
                             None if args.no_docs else Path(args.docs))
        return reproduce(args.paper, args.quick, args.backend, Path(args.results), args.jobs,
                         None if args.no_docs else Path(args.docs), args.crosscheck,
                         Path(args.resume) if args.resume else None, args.cluster)
    except ReproduceError as e:
        print(f"testbed reproduce: {e}", file=sys.stderr)
        return 2


def cmd_clean(args) -> int:
    from testbed.run.watchdog import reap       # also marks a dead experiment run's manifest killed
    print(reap(args.run or None, include_live=bool(args.run)))
    return 0


def cmd_profile(args) -> int:
    from testbed.bench.profile import run
    return run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed", description="specnet: emulated wireless edge networks "
                                "for distributed speculative decoding")
    sub = p.add_subparsers(dest="command", required=True)
    backend = dict(choices=["auto", "netem", "nfqueue"], default=None,
                   help="delay/jitter/loss backend (default: netem if the kernel has it, else nfqueue; "
                        "env SPECNET_DELAY_BACKEND also forces)")
    s = sub.add_parser("doctor", help="what this machine offers and what will be used")
    s.add_argument("--delay-backend", **backend)
    s.set_defaults(func=cmd_doctor)
    s = sub.add_parser("check", help="validate a topology and print its plan and shaping commands")
    s.add_argument("topology")
    s.add_argument("--delay-backend", **backend)
    s.set_defaults(func=cmd_check)
    s = sub.add_parser("up", help="start a topology (Mininet CLI when interactive)")
    s.add_argument("topology")
    s.add_argument("--hold", type=float, metavar="S", help="stay up S seconds, then stop")
    s.add_argument("--seed", type=int, default=0, help="seed of jitter, loss and channel draws (default 0)")
    s.add_argument("--channel-interval-ms", type=float, default=100.0, help="channel models step this often")
    s.add_argument("--channel-log", metavar="FILE", help="append every applied link state to FILE (JSON lines)")
    s.add_argument("--delay-backend", **backend)
    s.set_defaults(func=cmd_up)
    s = sub.add_parser("calibrate", help="measure every link's rate, RTT and loss against its configuration")
    s.add_argument("topology")
    s.add_argument("--links", help="comma-separated link names (default: all)")
    s.add_argument("--duration", type=float, default=3.0, help="seconds of bulk transfer per direction")
    s.add_argument("--probes", type=int, default=400, help="RTT/loss probes per link")
    s.add_argument("--rate-tolerance", type=float, default=0.05, help="allowed |measured/configured - 1|")
    s.add_argument("--rtt-tolerance-ms", type=float, default=1.0, help="allowed |median RTT - configured|")
    s.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    s.add_argument("--seed", type=int, default=0, help="seed of jitter and loss draws (default 0)")
    s.add_argument("--delay-backend", **backend)
    s.set_defaults(func=cmd_calibrate)
    s = sub.add_parser("run", help="run an experiment (every point of its sweep) and report")
    s.add_argument("experiment")
    s.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a field, e.g. speculation.gamma=8")
    s.add_argument("--dry-run", action="store_true", help="validate, list the runs and node commands; start nothing")
    s.add_argument("--results", default="results", help="results root (default ./results)")
    s.add_argument("--inventory", metavar="FILE", help="run these topology hosts' nodes on real machines (Ray "
                   "actors placed by resource label; testbed/run/inventory.py)")
    s.add_argument("--cluster", metavar="ray|ray://HOST:PORT", help="run the sweep's points as tasks on a Ray "
                   "cluster (sim: any worker; mininet: workers with the specnet_root resource); results come back "
                   "here")
    s.add_argument("--point", type=int, metavar="N", help="run only the Nth run of the sweep (1-based, as "
                   "--dry-run numbers them)")
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("report", help="compare run directories side by side, with overlay plots")
    s.add_argument("runs", nargs="+")
    s.add_argument("--out", help="where overlay plots go (default: beside the first run)")
    s.set_defaults(func=cmd_report)
    s = sub.add_parser("lossless", help="check a greedy real-model run's text against the target's own generate()")
    s.add_argument("runs", nargs="+", help="run directories")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    s.set_defaults(func=cmd_lossless)
    s = sub.add_parser("validate", help="run a matrix of scenarios on the emulator and the simulator; compare")
    s.add_argument("--quick", action="store_true", help="5 s per scenario instead of 15 s")
    s.add_argument("--only", help="comma-separated scenario names")
    s.add_argument("--results", default="results")
    s.set_defaults(func=cmd_validate)
    s = sub.add_parser("reproduce", help="run a paper's suite (experiments/papers/PAPER): figures and claims.md")
    s.add_argument("paper", help="goodspeed | zhu | dsd | all")
    s.add_argument("--quick", action="store_true", help="shortened runs (all three papers in about 15 min here)")
    s.add_argument("--backend", default="sim", help="sim (default) or mininet (small points only; root)")
    s.add_argument("--results", default="results")
    s.add_argument("--jobs", type=int, default=None, help="points at once on sim (default: one per core)")
    s.add_argument("--docs", default=str(Path(__file__).resolve().parent.parent / "docs" / "reproduction.md"),
                   help="the generated reproduction page (rewritten after a full run)")
    s.add_argument("--no-docs", action="store_true", help="leave the reproduction page alone")
    s.add_argument("--cluster", metavar="ray|ray://HOST:PORT", help="run every point as a task on a Ray cluster "
                   "(mininet points: workers with the specnet_root resource)")
    s.add_argument("--crosscheck", action="store_true", help="run the suite's small subset on mininet and on "
                   "sim and compare them (root): crosscheck.md")
    s.add_argument("--resume", metavar="DIR", help="carry on an earlier run of the suite (results/reproduce/"
                   "PAPER/TIME, e.g. after Ctrl-C): its complete points are kept, the others run")
    s.add_argument("--analyse", metavar="DIR", help="redraw figures and claims of an earlier run of the suite "
                   "(results/reproduce/PAPER/TIME) from its points' runs, without running anything")
    s.set_defaults(func=cmd_reproduce)
    s = sub.add_parser("clean", help="remove what dead runs left (bridges, processes); live runs are kept")
    s.add_argument("--run", action="append", metavar="ID", help="clean this run even if live (repeatable)")
    s.set_defaults(func=cmd_clean)
    s = sub.add_parser("profile", help="time a real model's forward pass over a grid on this machine; "
                       "write a table profile and print the roofline beside it")
    s.add_argument("model", nargs="?", help="model spec, e.g. smollm2-135m (with --check: default from the table)")
    s.add_argument("--grid", default="default", help="default (batch 1,2,4,8 x tokens 1,2,3,5,9 x context "
                   "16,64,128,256,512) or quick (1,4 x 1,5 x 16,128)")
    s.add_argument("--batch", metavar="N,N", help="batch sizes, replacing the grid's")
    s.add_argument("--tokens", metavar="N,N", help="new tokens per sequence, replacing the grid's")
    s.add_argument("--context", metavar="N,N", help="cached tokens per sequence, replacing the grid's")
    s.add_argument("--repeats", default="3", help="timed passes per point, median taken (default 3; +1 warm-up)")
    s.add_argument("--threads", help="torch CPU threads (default: torch's own)")
    s.add_argument("--dtype", help="float32 (default), bfloat16 or float16")
    s.add_argument("--device", default="cpu-x86", help="nodes.compute device: the table's `device:` and the roofline printed beside "
                   "(default cpu-x86)")
    s.add_argument("--out", metavar="FILE", help="table path (default profiles/<model>-<host>.csv)")
    s.add_argument("--check", metavar="FILE", help="re-measure FILE's points; exit 1 if the median deviation "
                   "exceeds --tolerance")
    s.add_argument("--tolerance", default="0.15", help="for --check: allowed median |now/table - 1| (default 0.15)")
    s.set_defaults(func=cmd_profile)
    from testbed.channels.tracecli import add_trace_parser
    add_trace_parser(sub)
    return p


class _QuietStdout:
    """stdout that outlives its reader: `testbed check T | head -3` or a closed terminal must not stop a command
    (a run would tear its network down mid-way) or print a traceback. Once the pipe is gone, what would be
    printed is dropped (the fd goes to /dev/null, so the interpreter's last flush is quiet too)."""

    def __init__(self, stream):
        self.stream = stream

    def _gone(self) -> None:
        import os
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.stream.fileno())
        os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def main(argv: list[str] | None = None) -> int:
    if not isinstance(sys.stdout, _QuietStdout):
        sys.stdout = _QuietStdout(sys.stdout)
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    # Ctrl-C / kill -INT stop cleanly even when started from a script's `cmd &`, which starts it with SIGINT
    # ignored (and Python then installs no handler): a run that cannot be interrupted leaves its network up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if getattr(args, "set", None):   # every --set value bounded before anything parses it (issue 14)
            from testbed.run.sweep import check_sets
            if problems := check_sets(args.set):
                raise ConfigError(problems)
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: everything this command started has been stopped", file=sys.stderr)
        return 130
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 2
    except ShapingError as e:
        print(f"error: shaping failed, stopped: {e}", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    except Exception as e:
        from testbed.net.capabilities import CapabilityError
        from testbed.net.emulation import EmulationError
        from testbed.common.raycluster import ClusterError     # no Ray import: only the error class
        if isinstance(e, (CapabilityError, EmulationError)):
            print(f"error: {e}", file=sys.stderr)
            return 1
        if isinstance(e, ClusterError):            # unreachable cluster, missing resource: before anything ran
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
