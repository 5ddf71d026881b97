"""`make bench` (simulator half): how fast `backend: sim` runs at paper scale, beside dsdSim's figures.

The scenario is the closed loop dsdSim (github yfzzzyyls/dsdSim, commit 02c2a91) was measured on, on this machine
class (../shared/research/anchors.md): drafters on links of 5-40 Mbit/s and 2-14 ms, alpha 0.8, gamma 4, no
proactive drafting (dsdSim's drafters block on their verdict), synthetic verify 15 ms + 0.5 ms per token fed,
FIFO batches of up to 64; with several verifiers, sessions are routed by JSQ(2). Each point runs in a child process
pinned to one core, so its memory is its own and "one core" is literal. Figures:

- x real time: simulated seconds / wall seconds of the simulation itself (set-up and results excluded, as for
  dsdSim); dsdSim: 38x at 64 drafters, 27x at 1000;
- verified rounds per wall second (drafted windows verified); dsdSim: 10,000-15,000 with 1000 drafters and 10
  verifiers;
- peak RSS of the child;
- with --split, the share of that wall time spent inside the node cores and their backends (nodes/core, the
  synthetic backends: the same code the ZeroMQ nodes run, which the simulator must run too) and what a round costs
  there: the floor under any speed-up of the simulator itself.

Targets (issue 12): >= 50x with 1000 drafters and one verifier, >= 30,000 rounds/s with 10 verifiers, both within
2 GB, and 10,000 drafters complete. Printed with the target beside each figure, never asserted: timings here are
noisy and shared with whatever else runs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DSDSIM = {"x_64": 38.0, "x_1000": 27.0, "rounds_1000x10": "10,000-15,000"}
TARGET_X, TARGET_ROUNDS, TARGET_MB = 50.0, 30_000.0, 2048.0


def scenario(n: int, verifiers: int = 1, requests: int = 2, max_new: int = 32, seed: int = 0) -> dict:
    """The experiment as a mapping: one switch, `verifiers` verifiers on 10 Gbit/s links, n drafters on links of
    uniform 5-40 Mbit/s (both ways alike) and 2-14 ms (seeded)."""
    rng = random.Random(seed)
    nodes: dict = {"core": {"role": "switch"}}
    links = []
    for j in range(1, verifiers + 1):
        nodes[f"v{j}"] = {"role": "verifier"}
        links.append({"a": "core", "b": f"v{j}", "rate_up_mbps": 10_000, "rate_down_mbps": 10_000,
                      "queue_pkts": 100_000})
    for i in range(1, n + 1):
        nodes[f"d{i}"] = {"role": "drafter"}
        rate = round(rng.uniform(5, 40), 3)
        links.append({"a": f"d{i}", "b": "core", "rate_up_mbps": rate, "rate_down_mbps": rate,
                      "delay_ms": round(rng.uniform(2, 14), 3)})
    exp = {"name": f"simbench-{n}x{verifiers}", "backend": "sim", "seed": seed,
           "topology": {"name": "simbench", "addressing": {"subnet": "10.0.0.0/8"}, "nodes": nodes, "links": links},
           "verifier": {"backend": "synthetic", "vocab_size": 32000, "verify_base_ms": 15, "verify_per_token_ms": 0.5},
           "drafters": {"backend": "synthetic", "vocab_size": 32000, "draft_token_ms": 2, "alpha": 0.8},
           "workload": {"requests": requests, "max_new": max_new},
           "speculation": {"gamma": 4, "proactive": False},
           "batching": {"rule": "fifo", "max_batch": 64},
           # a drafter gives up after ready_timeout_s without a verdict; 10,000 prefills queue for minutes
           "limits": {"run_timeout_s": 86_400, "ready_timeout_s": 3600}}
    if verifiers > 1:
        exp["routing"] = {"policy": "jsq-d", "d": 2, "verifiers": [f"v{j}" for j in range(1, verifiers + 1)]}
    return exp


class CoreTimer:
    """Wall time spent inside the node cores' entry points and the backends' work (outermost calls only)."""

    def __init__(self):
        self.total_s, self._depth = 0.0, 0
        self._undo: list[tuple[type, str, object]] = []

    def __enter__(self) -> "CoreTimer":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        for cls, name, inner in reversed(self._undo):
            setattr(cls, name, inner)
        self._undo.clear()
        CoreTimer._installed.discard(self)

    @classmethod
    def _restore_all(cls) -> None:
        for timer in list(cls._installed):
            timer.__exit__()

    _installed: set["CoreTimer"] = set()

    def install(self) -> None:
        CoreTimer._installed.add(self)
        from nodes.backends import synthetic
        from nodes.core.drafter import DrafterCore
        from nodes.core.verifier import VerifierCore
        for name in ("on_frames", "on_welcome", "begin", "on_timer", "on_compute_done", "hello_frame"):
            self._wrap(DrafterCore, name)
        for name in ("on_frame", "decide", "on_compute_done", "on_ready"):
            self._wrap(VerifierCore, name)
        for cls in (synthetic.SyntheticDraft, synthetic.SyntheticTarget):
            for name in ("extend", "verify", "cost_s"):
                if name in cls.__dict__:
                    self._wrap(cls, name)

    def _wrap(self, cls, name: str) -> None:
        inner, timer = cls.__dict__[name], self
        self._undo.append((cls, name, inner))

        def timed(*args, **kwargs):
            if timer._depth:
                return inner(*args, **kwargs)
            timer._depth += 1
            t = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                timer.total_s += time.perf_counter() - t
                timer._depth -= 1
        setattr(cls, name, timed)


def run_point(n: int, verifiers: int, requests: int, out: Path, split: bool = False) -> dict:
    """Simulate one point in this process (the child); its figures."""
    timer = CoreTimer() if split else None
    if timer:
        timer.install()         # the child process ends after this point: nothing to undo
    from testbed.run.experiment import experiment_from_dict
    from testbed.run.simrun import SimRun
    from testbed.run.workload_files import write_run_files
    from testbed.sim.network import SimNetwork
    t0 = time.perf_counter()
    exp = experiment_from_dict(scenario(n, verifiers, requests))
    for sub in ("events", "outputs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    write_run_files(exp, out)
    sim = SimRun(exp, out, SimNetwork(exp.topology_obj(), seed=exp.seed))
    setup = time.perf_counter() - t0
    st = sim.run(until_s=exp.limits.run_timeout_s)
    got = {"drafters": n, "verifiers": verifiers, "requests": requests, "setup_s": round(setup, 2),
           "simulated_s": st["simulated_s"], "wall_s": st["wall_s"], "speed_x": st["speed_x"],
           "rounds": st["verified_rounds"], "rounds_per_s": st["rounds_per_wall_s"],
           "unfinished": len(st["unfinished"]), "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if timer and st["verified_rounds"]:
        got["cores_share"] = round(timer.total_s / st["wall_s"], 3)
        got["cores_us_per_round"] = round(timer.total_s / st["verified_rounds"] * 1e6, 1)
        got["us_per_round"] = round(st["wall_s"] / st["verified_rounds"] * 1e6, 1)
    return got


def measure(n: int, verifiers: int, requests: int, timeout_s: float, split: bool = False) -> dict:
    """One point in a child process pinned to one core."""
    with tempfile.TemporaryDirectory(prefix="specnet-bench-sim-") as tmp:
        cmd = [sys.executable, "-m", "testbed.bench.sim", "--point", f"{n},{verifiers},{requests}", "--out", tmp] \
            + (["--split"] if split else [])
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"drafters": n, "verifiers": verifiers, "error": f"did not finish within {timeout_s:g} s"}
        if r.returncode != 0:
            return {"drafters": n, "verifiers": verifiers, "error": (r.stderr.strip().splitlines() or ["?"])[-1]}
        return json.loads(r.stdout.strip().splitlines()[-1])


def line(p: dict) -> str:
    who = f"{p['drafters']:>5} drafters x {p['verifiers']:>2} verifier{'s' if p['verifiers'] > 1 else ' '}"
    if "error" in p:
        return f"sim: {who}: FAILED: {p['error']}"
    return (f"sim: {who}: {p['speed_x']:6.1f}x real time, {p['rounds_per_s']:>8,.0f} verified rounds/s, "
            f"{p['rss_mb']:>5} MB peak, {p['simulated_s']:.0f} simulated s in {p['wall_s']:.1f} s"
            + (f", {p['unfinished']} drafters unfinished" if p["unfinished"] else "")
            + (f"; {p['us_per_round']:.0f} us per round, of which {p['cores_us_per_round']:.0f} us "
               f"({p['cores_share']:.0%}) in the node cores and backends" if "cores_share" in p else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.sim", description=__doc__.splitlines()[0])
    ap.add_argument("--point", help=argparse.SUPPRESS)        # child: "N,V,R"
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="skip the 10,000-drafter point")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per point")
    ap.add_argument("--split", action="store_true",
                    help="also time the node cores and backends inside each point (adds ~1 %% overhead)")
    args = ap.parse_args(argv)
    if args.point:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})     # one core, literally
        n, v, r = (int(x) for x in args.point.split(","))
        print(json.dumps(run_point(n, v, r, Path(args.out), args.split)))
        return 0
    points = [(64, 1, 4), (1000, 1, 2), (1000, 10, 6)] + ([] if args.quick else [(10_000, 10, 1)])
    got = {}
    for n, v, r in points:
        got[(n, v)] = p = measure(n, v, r, args.timeout, args.split)
        print(line(p), flush=True)
    one, ten = got[(1000, 1)], got[(1000, 10)]
    print(f"sim vs dsdSim (same scenario, this machine class): 64 drafters {got[(64, 1)].get('speed_x', 0):.1f}x "
          f"(dsdSim {DSDSIM['x_64']:g}x); 1000 drafters {one.get('speed_x', 0):.1f}x (dsdSim {DSDSIM['x_1000']:g}x, "
          f"target >= {TARGET_X:g}x); 1000 x 10 verifiers {ten.get('rounds_per_s', 0):,.0f} rounds/s (dsdSim "
          f"{DSDSIM['rounds_1000x10']}, target >= {TARGET_ROUNDS:,.0f}); peak "
          f"{max(p.get('rss_mb', 0) for p in got.values())} MB (target <= {TARGET_MB:g})")
    if (10_000, 10) in got:
        big = got[(10_000, 10)]
        print(f"sim: 10,000 drafters {'completed' if 'error' not in big and not big['unfinished'] else 'did NOT complete'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
