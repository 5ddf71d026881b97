"""What a frame costs on the emulator beyond the network model, by frame size (not a pass/fail test).

    python -m testbed.bench.framecost --results /tmp/fc            # run the points on mininet (root), then analyse
    python -m testbed.bench.framecost --analyse RUN_DIR [RUN_DIR ...]

Each point is a validate-style single-drafter experiment (synthetic compute, the `full` q payload, synchronous
rounds) on a fast star link, so the network time is small and known; the vocabulary and window set the DRAFT's
size (64 KB ... 3.6 MB). From the run's logs, per verified round (one drafter, so nothing queues for the network):

- upload: the DRAFT's one-way time, verifier's arrival stamp minus the drafter's send stamp (one clock: the
  Mininet hosts share the kernel's);
- handling: the verifier's time from that stamp to the start of the verify (decode, checks; nothing else waits);
- verdict: the VERDICT's one-way time (drafter's receive minus the verifier's send stamp);
- round: the drafter's rtt minus the verify time, i.e. all of the above.

The network model's time for each frame is testbed/sim/network.py's `deliver_at` on an idle network; "extra" is
the emulator's time minus that (what testbed/sim/frames.py charges beyond the network). The table gives each run's
p50 per column: the DRAFT's extra (upload + handling - model, and per byte) and the VERDICT's; with several runs,
also the median over runs per link and size (the numbers frames.py was fitted on). `--analyse` reads any
single-verifier run, a simulated one too (the same points with --set backend=sim show what the simulator charges;
there an 8 s duration hung at its end, a float comparison in the drafter core, hence the 8.1 s default).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from nodes.events import Load, Verdict, Verify, read_events

# (vocab, gamma): DRAFT frames of about 64 KB, 512 KB, 1.2 MB, 2.4 MB and 3.6 MB (4 bytes per probability)
POINTS = ((4000, 4), (32000, 4), (151936, 2), (151936, 4), (151936, 6))


def experiment(vocab: int, gamma: int, rate: float, delay_ms: float, seconds: float, seed: int = 0) -> dict:
    from testbed.run.validate import star
    return {"name": f"framecost-v{vocab}-g{gamma}", "backend": "mininet", "seed": seed,
            "topology": star(1, rate, delay_ms),
            "verifier": {"backend": "synthetic", "vocab_size": vocab, "verify_base_ms": 15, "verify_per_token_ms": 0.5},
            "drafters": {"backend": "synthetic", "vocab_size": vocab, "alpha": 0.8, "draft_token_ms": 2},
            "workload": {"duration_s": seconds, "max_new": 64, "temperature": 1.0},
            "speculation": {"gamma": gamma, "payload": "full", "proactive": False},
            "batching": {"rule": "fifo", "max_batch": 8}, "limits": {"ready_timeout_s": 120, "run_timeout_s": 600}}


def frames(run_dir: Path) -> list[dict]:
    """One row per verified round of a run: sizes, the emulator's times and the network model's."""
    from testbed.run.experiment import experiment_from_dict
    from testbed.sim.network import SimNetwork
    man = json.loads(Path(run_dir, "manifest.json").read_text())
    cfg = man["config"]
    topo = experiment_from_dict({"name": "x", "topology": _plain_topology(cfg["topology"])}).topology_obj()
    verifier = cfg["verifier"]["node"]
    verifies = {}
    for f in Path(run_dir, "events").glob("*.jsonl"):
        for e in read_events(f)[0]:
            if isinstance(e, Verify) and e.round >= 1:
                verifies[(e.drafter, e.session, e.round)] = e
    rows = []
    for drafter in cfg["drafters"]:
        model = {}
        for e in read_events(Path(run_dir, "events", f"{drafter}.jsonl"))[0]:
            v = verifies.get((drafter, e.session, e.round)) if isinstance(e, Verdict) else None
            if v is None:
                continue
            for key, src, dst, n in (("up", drafter, verifier, v.bytes_in), ("down", verifier, drafter, v.bytes_out)):
                if (key, n) not in model:
                    model[(key, n)] = SimNetwork(topo).deliver_at(src, dst, n, 0.0)
            up_model, down_model = model[("up", v.bytes_in)], model[("down", v.bytes_out)]
            upload, handling = v.t_arrived - v.t_draft_sent, v.queue_s
            rows.append({"drafter": drafter, "bytes": v.bytes_in, "verdict_bytes": v.bytes_out, "upload_s": upload,
                         "handling_s": handling, "verdict_s": e.one_way_s, "round_s": e.rtt_s - e.verify_s,
                         "up_model_s": up_model, "down_model_s": down_model,
                         "draft_extra_s": upload + handling - up_model, "verdict_extra_s": e.one_way_s - down_model})
    return rows


def _plain_topology(t: dict) -> dict:
    """The manifest's resolved topology back to a topology mapping (without the filled-in addresses, names)."""
    t = json.loads(json.dumps(t))
    for spec in t["nodes"].values():
        spec.pop("ip", None)
    for link in t["links"]:
        link.pop("name", None)
    return t


def summarise(run_dir: Path) -> dict:
    rows = frames(run_dir)
    common = statistics.mode(r["bytes"] for r in rows)       # the full window's size (a session's last is cut)
    rows = [r for r in rows if r["bytes"] == common]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "drafter"}
    loads = [e.cpu_busy for f in Path(run_dir, "events").glob("*.jsonl") for e in read_events(f)[0]
             if isinstance(e, Load)]
    return {"run": str(run_dir), "rounds": len(rows), "cpu_busy": statistics.median(loads) if loads else None, **med}


def link_of(run_dir: str) -> str:
    """The drafter's link of a run, e.g. '1000 Mbit/s 0.5 ms'."""
    cfg = json.loads(Path(run_dir, "manifest.json").read_text())["config"]
    (link,) = [l for l in cfg["topology"]["links"] if l["a"] in cfg["drafters"] or l["b"] in cfg["drafters"]]
    return f"{link['rate_up_mbps']:g} Mbit/s {link['delay_ms']:g} ms"


def grouped(sums: list[dict]) -> str:
    """Per link and DRAFT size: the median over runs of each run's p50 extra (ms), and the runs' values."""
    groups: dict[tuple[str, float], list[float]] = {}
    for s in sums:
        groups.setdefault((link_of(s["run"]), s["bytes"]), []).append(1e3 * s["draft_extra_s"])
    lines = [f"{'link':>20} {'bytes':>9} {'runs':>4} {'extra p50':>9}  per run (ms)"]
    for (link, n), xs in sorted(groups.items()):
        lines.append(f"{link:>20} {n:>9.0f} {len(xs):>4} {statistics.median(xs):>9.2f}  "
                     + ", ".join(f"{x:.2f}" for x in xs))
    return "\n".join(lines)


def table(sums: list[dict]) -> str:
    head = (f"{'bytes':>9} {'n':>4} | {'upload':>7} {'model':>7} {'handle':>7} {'extra':>7} {'ns/B':>5} | "
            f"{'verdict':>7} {'model':>7} {'extra':>6} | {'round':>7} | cpu busy  (ms)")
    lines = [head, "-" * len(head)]
    for s in sorted(sums, key=lambda s: s["bytes"]):
        lines.append(f"{s['bytes']:>9.0f} {s['rounds']:>4} | {1e3 * s['upload_s']:>7.2f} {1e3 * s['up_model_s']:>7.2f} "
                     f"{1e3 * s['handling_s']:>7.2f} {1e3 * s['draft_extra_s']:>7.2f} "
                     f"{1e9 * s['draft_extra_s'] / s['bytes']:>5.1f} | {1e3 * s['verdict_s']:>7.2f} "
                     f"{1e3 * s['down_model_s']:>7.2f} {1e3 * s['verdict_extra_s']:>6.2f} | {1e3 * s['round_s']:>7.2f} | "
                     + ("–" if s["cpu_busy"] is None else f"{100 * s['cpu_busy']:.0f} %"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.framecost", description=__doc__.splitlines()[0])
    ap.add_argument("--analyse", nargs="+", metavar="RUN_DIR", help="analyse these emulator runs; run nothing")
    ap.add_argument("--results", default="results", help="where the runs go (default ./results)")
    ap.add_argument("--rate", type=float, default=1000, help="the drafter's link, Mbit/s each way [1000]")
    ap.add_argument("--delay-ms", type=float, default=0.5, help="its one-way delay [0.5]")
    ap.add_argument("--seconds", type=float, default=8.1, help="workload.duration_s of each point [8.1]")
    ap.add_argument("--points", help="vocab:gamma,... (default: " + ",".join(f"{v}:{g}" for v, g in POINTS) + ")")
    ap.add_argument("--json", metavar="FILE", help="also write each run's medians as JSON")
    ap.add_argument("--repeat", type=int, default=1, help="runs per point (seeds 0..N-1) [1]")
    args = ap.parse_args(argv)
    if args.analyse:
        dirs = [Path(d) for d in args.analyse]
    else:
        from testbed.run.experiment import experiment_from_dict
        from testbed.run.runner import run_point
        points = [tuple(int(x) for x in p.split(":")) for p in args.points.split(",")] if args.points else POINTS
        dirs = []
        for seed in range(args.repeat):
            for vocab, gamma in points:
                exp = experiment_from_dict(experiment(vocab, gamma, args.rate, args.delay_ms, args.seconds, seed))
                r = run_point(exp.points()[0], Path(args.results))
                if r.status != "complete":
                    raise SystemExit(f"{exp.name}: {r.status}: {r.message}")
                dirs.append(r.run_dir)
    sums = [summarise(d) for d in dirs]
    print(table(sums))
    if len(sums) > len({s["bytes"] for s in sums}):
        print(grouped(sums))
    if args.json:
        Path(args.json).write_text(json.dumps(sums, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
