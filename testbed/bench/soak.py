"""`make soak`: experiments/soak.yaml for 30 minutes (32 synthetic drafters, fading Wi-Fi, a link outage, a verifier
stall, a drafter crash and a verifier restart in every cycle), watched from outside:

- the resident memory (VmRSS) of every process of the run (the runner and its descendants: nodes, delay daemons,
  Mininet shells), sampled every `--every` seconds; growth = median over 85-95 % of the workload's duration over
  the median over 10-20 %, per kind of process and in total; target < 10 % (total, runner, verifier);
- no event lost: every line of every event log parses, every drafter has `done`, every session started finished;
- the metrics agree with the outputs: Σ tokens in metrics.json = Σ tokens in outputs/*.jsonl.

Writes RUN/soak.json and RUN/plots/soak_rss.png and prints one line per check; exit 1 if one fails. Not in CI.

    python -m testbed.bench.soak [--minutes 30] [--drafters 32] [--every 5] [--results results]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
EXPERIMENT = REPO / "experiments" / "soak.yaml"
GROWTH_LIMIT = 0.10


def faults_for(minutes: float) -> str:
    """soak.yaml's four faults, in 6 cycles over the run whatever its length (a flow-style YAML list)."""
    cycle = minutes * 60 / 6
    at = lambda frac: round(cycle * frac, 1)
    return ("[" + ", ".join([
        f"{{kind: outage, link: ap1-verifier, at_s: {at(0.2)}, duration_s: 3, every_s: {cycle}, count: 6}}",
        f"{{kind: verifier_stall, node: verifier, at_s: {at(0.4)}, duration_s: 2, every_s: {cycle}, count: 6}}",
        f"{{kind: drafter_crash, node: d7, at_s: {at(0.6)}, duration_s: 2, every_s: {cycle}, count: 6}}",
        f"{{kind: verifier_restart, node: verifier, at_s: {at(0.8)}, duration_s: 2, every_s: {cycle}, count: 6}}",
    ]) + "]")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _kind(pid: int) -> str:
    try:
        cmd = (Path(f"/proc/{pid}/cmdline").read_bytes()).replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    kinds = {"nodes.verifier": "verifier", "nodes.drafter": "drafters", "nfqdelay": "delay daemons",
             "testbed.run.watchdog": "watchdog", "testbed.cli": "runner", "tc -force -batch": "tc batches",
             "mininet:": "host shells"}
    return next((name for key, name in kinds.items() if key in cmd), "other")


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(root: int) -> dict[str, int]:
    """KiB of resident memory per kind of process, over `root` and its descendants."""
    kids, out, todo = _children(), {}, [root]
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        kind = _kind(pid)
        if kind != "gone":
            out[kind] = out.get(kind, 0) + _rss_kib(pid)
    return out


def growth(times: list[float], series: list[float], start_s: float, duration_s: float) -> float | None:
    """Median RSS over 85-95 % of the workload's duration over the median over 10-20 % (after start-up, before
    the sessions wind down and the runner computes the metrics)."""
    def window(a: float, b: float) -> list[float]:
        return [x for t, x in zip(times, series) if start_s + a * duration_s <= t < start_s + b * duration_s]
    base, last = window(0.10, 0.20), window(0.85, 0.95)
    if not base or not last or not statistics.median(base):
        return None
    return statistics.median(last) / statistics.median(base) - 1


def check_run(run_dir: Path) -> dict:
    from nodes.events import Done, Finish, Start, load_run, of_type
    run = load_run(run_dir)
    issues = list(run.issues)
    for name, evs in run.drafters.items():
        if not of_type(evs, Done):
            issues.append(f"{name}: no done event")
        unfinished = {e.session for e in of_type(evs, Start)} - {e.session for e in of_type(evs, Finish)}
        if unfinished:
            issues.append(f"{name}: {len(unfinished)} session(s) never finished")
    m = json.loads((run_dir / "metrics.json").read_text())
    out_tokens = sum(len(json.loads(l)["tokens"]) for f in (run_dir / "outputs").glob("*.jsonl")
                     for l in f.read_text().splitlines() if l.strip())
    return {"event_issues": issues[:20], "events_ok": not issues, "metrics_tokens": m["total"]["tokens"],
            "output_tokens": out_tokens, "tokens_agree": m["total"]["tokens"] == out_tokens,
            "complete": m["complete"], "faults": m.get("faults", {}).get("occurrences", [])}


def plot(run_dir: Path, times: list[float], samples: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = sorted({k for s in samples for k in s})
    fig, ax = plt.subplots(figsize=(9, 4))
    for k in kinds:
        ax.plot([t / 60 for t in times], [s.get(k, 0) / 1024 for s in samples], label=k)
    ax.set(xlabel="minutes", ylabel="resident memory (MiB)", title="soak: RSS of the run's processes")
    ax.legend(fontsize=8)
    (run_dir / "plots").mkdir(exist_ok=True)
    fig.savefig(run_dir / "plots" / "soak_rss.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--drafters", type=int, default=32)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples [5]")
    ap.add_argument("--results", default="results")
    a = ap.parse_args(argv)
    results = Path(a.results)
    before = set((results / "soak").glob("*")) if (results / "soak").exists() else set()
    cmd = [sys.executable, "-m", "testbed.cli", "run", str(EXPERIMENT), "--results", str(results),
           "--set", f"workload.duration_s={a.minutes * 60:g}", "--set", f"topology.nodes.d.count={a.drafters}",
           "--set", f"limits.run_timeout_s={a.minutes * 60 + 600:g}", "--set", f"faults={faults_for(a.minutes)}"]
    print(" ".join(cmd[2:]), flush=True)
    p = subprocess.Popen(cmd, cwd=REPO)
    t0, times, samples = time.monotonic(), [], []
    try:
        while p.poll() is None:
            times.append(time.monotonic() - t0)
            samples.append(sample(p.pid))
            time.sleep(a.every)
    except KeyboardInterrupt:
        p.terminate()
        p.wait()
        raise
    new = sorted(set((results / "soak").glob("*")) - before)
    if not new:
        print("soak: no run directory was written", file=sys.stderr)
        return 1
    run_dir = new[-1]
    kinds = sorted({k for s in samples for k in s})
    # the workload starts once every node is up: when the drafters' processes first appear
    start_s = next((t for t, s in zip(times, samples) if s.get("drafters")), 0.0)
    duration = a.minutes * 60
    grow = {k: growth(times, [s.get(k, 0) for s in samples], start_s, duration) for k in kinds}
    grow["total"] = growth(times, [sum(s.values()) for s in samples], start_s, duration)
    report = {"minutes": a.minutes, "drafters": a.drafters, "exit": p.returncode, "samples": len(samples),
              "rss_growth": grow, "rss_mib_last": {k: samples[-1].get(k, 0) / 1024 for k in kinds} if samples else {},
              **check_run(run_dir)}
    (run_dir / "soak.json").write_text(json.dumps(report, indent=2))
    plot(run_dir, times, samples)
    ok_rss = all(g is not None and g < GROWTH_LIMIT for k, g in grow.items() if k in ("total", "runner", "verifier"))
    print(f"soak {run_dir}: exit {p.returncode}; RSS growth "
          + ", ".join(f"{k} {g * 100:+.1f} %" for k, g in grow.items() if g is not None)
          + f" ({'ok' if ok_rss else 'OVER ' + str(int(GROWTH_LIMIT * 100)) + ' %'}); events "
          + ("ok" if report["events_ok"] else f"LOST: {report['event_issues'][:3]}")
          + f"; tokens metrics {report['metrics_tokens']} vs outputs {report['output_tokens']} "
          + ("ok" if report["tokens_agree"] else "DIFFER"))
    return 0 if p.returncode == 0 and ok_rss and report["events_ok"] and report["tokens_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
