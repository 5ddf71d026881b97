"""What every paper suite is made of: sweep points (an experiment file and its `--set`s), claims, and the runner
that runs the points as `testbed run` child processes, in parallel on the simulator.

A point runs exactly as a user would run it by hand (its command is written to its log), so a figure can always
be traced back to one `testbed run`. Points run as children, not in this process: each is its own run with its
own manifest, a crash in one fails that point only, and Ctrl-C stops them all (each child cleans up its run).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
PAPERS_DIR = REPO / "experiments" / "papers"
# The most synthetic drafters this 2-core machine paces within limits on the emulator (`make bench`: pacing; the
# validation's 32-drafter scenario is distorted, 8 are not). A point with more is simulator-only.
MININET_MAX_DRAFTERS = 8


class ReproduceError(Exception):
    """Bad input to `testbed reproduce`: one line, exit 2."""


@dataclass(frozen=True)
class Point:
    """One run of a suite: `testbed run FILE --set ...` (a single point of the file's sweep)."""
    key: str                      # unique in the suite, path-safe: "qwen3-8/C16/goodspeed"
    file: Path
    sets: tuple[str, ...]
    drafters: int                 # hosts that draft (the emulator's size limit)
    backend: str = "sim"

    def _set_args(self) -> list[str]:
        return ["--set", f"backend={self.backend}", *[a for s in self.sets for a in ("--set", s)]]

    def argv(self, results: Path) -> list[str]:
        return [sys.executable, "-m", "testbed.cli", "run", str(self.file), "--results", str(results),
                *self._set_args()]

    def cli_args(self) -> list[str]:
        """The same `testbed run` for a cluster worker: the file relative to the project it receives."""
        return ["run", str(self.file.resolve().relative_to(REPO)), *self._set_args()]


@dataclass
class Claim:
    """One row of claims.md: what the paper says, where, what was measured here and whether it holds."""
    claim: str
    where: str                    # "Fig. 3", "§V-B", "secondary source: ..."
    measured: str
    holds: bool | None            # None: not assessed (the reason is in `why`)
    config: str
    why: str = ""

    def row(self) -> str:
        verdict = {True: "holds", False: "does not hold", None: "not assessed"}[self.holds]
        cells = [self.claim, self.where, self.measured, verdict, self.config, self.why or "–"]
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


CLAIMS_HEAD = "| claim | where in the paper | measured here | verdict | configuration | why / notes |\n" \
              "|---|---|---|---|---|---|"


def effect_holds(gain: float, paper: float) -> bool:
    """An effect size reproduced: the paper's sign, within half to double its size (gain and paper as relative
    changes, e.g. +0.097 for "+9.7 %"). Setups differ (profiles, acceptance, substitutes), so this, not an
    exact match, is what a reproduction can claim."""
    return paper / 2 <= gain <= paper * 2 if paper > 0 else paper * 2 <= gain <= paper / 2


def claims_table(claims: list[Claim]) -> str:
    return "\n".join([CLAIMS_HEAD] + [c.row() for c in claims])


@dataclass
class PointResult:
    point: Point
    status: str                   # complete | failed | interrupted
    run_dir: Path | None
    seconds: float
    log: Path
    message: str = ""


@dataclass
class Runner:
    """Runs points as children, `jobs` at a time (mininet points one at a time: they share the host's cores and
    the emulator paces badly when overloaded)."""
    out: Path
    jobs: int = 1
    progress: object = print
    _procs: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: bool = False
    done: dict = field(default_factory=dict)
    resume: bool = False              # keep a point's complete run already under `out` instead of re-running it
    cluster: str | None = None        # a joined Ray cluster's address: every point is a task there (testbed/cluster)

    def run(self, points: list[Point]) -> dict[str, PointResult]:
        if self.cluster:
            return self._run_on_cluster(points)
        jobs = 1 if any(p.backend == "mininet" for p in points) else max(1, self.jobs)
        done: dict[str, PointResult] = {}
        self.done = done                  # what finished so far, for a caller interrupted mid-way
        started = time.monotonic()
        self.progress(f"{len(points)} point(s), {jobs} at a time; logs under {self.out / 'logs'}")
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(self._one, p) for p in points]
            try:
                for f in futures:
                    r = f.result()
                    done[r.point.key] = r
                    self.progress(f"  [{len(done)}/{len(points)}] {r.point.key}: {r.status} in {r.seconds:.0f} s "
                                  f"(elapsed {time.monotonic() - started:.0f} s)"
                                  + (f": {r.message}" if r.message else ""))
            except KeyboardInterrupt:
                self.stop()
                raise
        return done

    def _run_on_cluster(self, points: list[Point]) -> dict[str, PointResult]:
        """Each point a Ray task (all placed at once: Ray's resources, not `jobs`, bound what runs together); its run
        comes back under runs/KEY, its log under logs/, as when it runs here."""
        from testbed.cluster.sweep import ClusterSweep, Job
        done: dict[str, PointResult] = {}
        self.done = done
        jobs, by_key = [], {p.key: p for p in points}
        for p in points:
            log = self.out / "logs" / (p.key.replace("/", "_") + ".log")
            same = self.resume and _first_line(log).startswith(f"$ testbed {shlex.join(p.cli_args())}   (on ")
            kept = finished_run(self.out / "runs" / p.key) if same else None
            if kept is not None:
                done[p.key] = PointResult(p, "complete", kept, 0.0, log, KEPT)
            else:
                jobs.append(Job(p.key, p.cli_args(), p.backend, self.out / "runs" / p.key, log))
        if done:
            self.progress(f"{len(done)} point(s) kept from the earlier run (--resume)")
        sweep = ClusterSweep(self.cluster, self.progress)
        sweep.check(jobs)

        def landed(r) -> None:
            done[r.job.key] = PointResult(by_key[r.job.key], r.status, r.run_dir, r.seconds, r.job.log,
                                          r.message + (f" (ran on {r.ran_on})" if r.ran_on and r.message else ""))
        if jobs:
            sweep.run(jobs, landed)
        return {p.key: done[p.key] for p in points}

    def stop(self) -> None:
        """Ctrl-C: every child gets SIGTERM (it stops its run and writes what it has), then SIGKILL after 30 s.
        SIGTERM, not SIGINT: a suite started in the background (`nohup ... &`) has SIGINT ignored, and so would
        its children; `testbed run` handles SIGTERM as Ctrl-C whatever it inherited."""
        with self._lock:
            self._stopping = True
            procs = list(self._procs)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()

    def _one(self, point: Point) -> PointResult:
        results = self.out / "runs" / point.key
        log = self.out / "logs" / (point.key.replace("/", "_") + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        results.mkdir(parents=True, exist_ok=True)
        argv = point.argv(results)
        if self.resume and _same_command(log, argv):
            kept = finished_run(results)
            if kept is not None:
                try:            # its own time, as the earlier invocation measured it
                    took = float(json.loads((kept / "manifest.json").read_text()).get("duration_s") or 0.0)
                except (OSError, ValueError, TypeError):
                    took = 0.0
                return PointResult(point, "complete", kept, took, log, KEPT)
        t0 = time.monotonic()
        with self._lock:
            if self._stopping:
                return PointResult(point, "interrupted", None, 0.0, log, "not started")
            with open(log, "w") as fh:
                fh.write("$ " + shlex.join(argv) + "\n")
                fh.flush()
                proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
            self._procs.add(proc)
        rc = proc.wait()
        with self._lock:
            self._procs.discard(proc)
        seconds = time.monotonic() - t0
        runs = sorted(results.glob("*/*/metrics.json"))
        run_dir = runs[-1].parent if runs else None
        if rc == 0 and run_dir is not None:
            return PointResult(point, "complete", run_dir, seconds, log)
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        status = "interrupted" if rc in (130, -signal.SIGINT, -signal.SIGTERM) or self._stopping else "failed"
        return PointResult(point, status, run_dir, seconds, log, f"exit {rc}: {tail[0][:200]} (log: {log})")


KEPT = "kept from the earlier run (--resume)"


def _first_line(log: Path) -> str:
    try:
        with open(log) as fh:
            return fh.readline().rstrip("\n")
    except OSError:
        return ""


def _same_command(log: Path, argv: list[str]) -> bool:
    """Whether the point's earlier log was written by this very command (the same point, options and files)."""
    return _first_line(log) == "$ " + shlex.join(argv)


def finished_run(results: Path) -> Path | None:
    """The newest run under a point's results folder whose metrics say it completed."""
    for metrics in sorted(results.glob("*/*/metrics.json"), reverse=True):
        try:
            if json.loads(metrics.read_text()).get("complete"):
                return metrics.parent
        except (OSError, ValueError):
            continue
    return None


def check_backend(points: list[Point], backend: str, on_cluster: bool = False) -> None:
    """`--backend mininet` only for points the emulator can run faithfully here; say which point is too big.
    On a cluster the workers need root (they advertise specnet_root), not this machine."""
    if backend != "mininet":
        return
    for p in points:
        if p.drafters > MININET_MAX_DRAFTERS:
            raise ReproduceError(
                f"point {p.key} ({p.file.relative_to(REPO)}) has {p.drafters} drafters; the emulator on this "
                f"machine paces at most {MININET_MAX_DRAFTERS} (make bench): run it with --backend sim")
    if os.geteuid() != 0 and not on_cluster:
        raise ReproduceError("--backend mininet needs root (Mininet and tc): run it with sudo, or use --backend sim")


def newest_run(results: Path, paper: str, accept) -> Path | None:
    """The newest results/reproduce/<paper>/<time>/ whose readable reproduce.json satisfies `accept(meta)`."""
    best = None
    for path in sorted((results / "reproduce" / paper).glob("*/reproduce.json")):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if accept(meta):
            best = path.parent
    return best


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
