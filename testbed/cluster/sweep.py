"""The driver's side of points on a Ray cluster: place each as a task, retry a lost one once, unpack what comes back.

    sweep = ClusterSweep(address)                     # joined with testbed/common/raycluster.py connect()
    sweep.check(jobs)                                 # ClusterError (exit 2) before anything starts
    results = sweep.run(jobs)                         # JobResult per job, as they finish

Placement is Ray's, by resources: a sim or local point asks for one CPU, a mininet point for one CPU and one
`specnet_root` (a worker started with `ray start ... --resources '{"specnet_root": 1}'`: root, Mininet and the
project installed), so a worker runs at most as many mininet points at once as it advertises (one). Tasks have
max_retries=0: a point whose worker (or its node) is lost is resubmitted here, once, and Ray places it again;
a second loss, or no worker left that can run it, fails that point with the reason. A point that ran and failed
is not retried (it would fail the same way); its log and whatever it wrote still come back.
"""
from __future__ import annotations

import json
import shutil
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from testbed.common.raycluster import ClusterError, nodes_with, resources

ROOT_RESOURCE = "specnet_root"
MAX_TRIES = 2
POLL_S = 2.0
CANCEL_GRACE_S = 45.0              # the task gives its child 30 s to stop (task.py), then kills it


@dataclass
class Job:
    """One point: the `testbed` arguments that run it (`run FILE --set ... --point N`, FILE relative to the
    project), its backend (placement), where its run directory goes, and where its log goes (None: nowhere)."""
    key: str
    cli_args: list[str]
    backend: str
    dest: Path
    log: Path | None = None


@dataclass
class JobResult:
    job: Job
    status: str                    # complete | failed | interrupted
    run_dir: Path | None
    seconds: float
    message: str = ""
    ran_on: str = ""               # "IP (node 1a2b3c4d)", the last try's
    tries: list = field(default_factory=list)


def options(job: Job) -> dict:
    opts = {"num_cpus": 1, "max_retries": 0, "retry_exceptions": False}
    if job.backend == "mininet":
        opts["resources"] = {ROOT_RESOURCE: 1}
    return opts


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


class ClusterSweep:
    def __init__(self, address: str, progress=print):
        self.address = address
        self.progress = progress

    def check(self, jobs: list[Job]) -> None:
        """Every job can be placed on a live worker now; else one line, before anything starts."""
        have = resources()
        if jobs and have.get("CPU", 0) < 1:
            raise ClusterError(f"Ray cluster at {self.address}: no worker offers a CPU (its nodes: {have})")
        mininet = [j.key for j in jobs if j.backend == "mininet"]
        if mininet and not nodes_with(ROOT_RESOURCE):
            raise ClusterError(
                f"Ray cluster at {self.address}: {len(mininet)} mininet point(s) (e.g. {mininet[0]}) need a worker "
                f"advertising the {ROOT_RESOURCE!r} resource (root, Mininet and the project installed: "
                f"ray start --address HEAD --resources '{{\"{ROOT_RESOURCE}\": 1}}'); none is alive")

    def run(self, jobs: list[Job], on_done=None) -> list[JobResult]:
        """Every job placed at once; `on_done(JobResult)` as each ends. Ctrl-C: running points are stopped (each
        writes what it has, which still comes back, up to CANCEL_GRACE_S), then KeyboardInterrupt is raised."""
        import ray
        from testbed.cluster.task import Collector, run_point
        self._ray, self._remote = ray, ray.remote(run_point)
        self._collector = ray.remote(num_cpus=0)(Collector).remote()
        self._pending: dict = {}                 # ObjectRef -> (job, try number, submitted at)
        self._tries: dict[str, list] = {j.key: [] for j in jobs}
        self._results: dict[str, JobResult] = {}
        self._total, self._on_done = len(jobs), on_done
        self.progress(f"{len(jobs)} point(s) on the Ray cluster at {self.address} "
                      f"({', '.join(f'{k} {v:g}' for k, v in sorted(resources().items()) if k in ('CPU', ROOT_RESOURCE))})")
        for job in jobs:
            self._submit(job, 1)
        try:
            while self._pending:
                ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    self._collect(ref, *self._pending.pop(ref))
                self._unplaceable()
        except KeyboardInterrupt:
            self.progress(f"interrupted: stopping {len(self._pending)} point(s); each writes what it has and comes "
                          f"back (up to {CANCEL_GRACE_S:.0f} s; Ctrl-C again to abandon them)")
            try:
                self._stop_all()
            finally:
                for ref, (job, _, t0) in list(self._pending.items()):
                    ray.cancel(ref, force=True)
                    self._finish(JobResult(job, "interrupted", None, time.monotonic() - t0,
                                           "abandoned: it did not stop in time"))
            raise
        return [self._results[j.key] for j in jobs]

    def _submit(self, job: Job, attempt: int) -> None:
        ref = self._remote.options(**options(job)).remote(job.cli_args, job.key, attempt, self._collector)
        self._pending[ref] = (job, attempt, time.monotonic())

    def _finish(self, r: JobResult) -> None:
        self._results[r.job.key] = r
        self.progress(f"  [{len(self._results)}/{self._total}] {r.job.key}: {r.status}"
                      + (f" on {r.ran_on}" if r.ran_on else "") + f" in {r.seconds:.0f} s"
                      + (f": {r.message}" if r.message else ""))
        if self._on_done:
            self._on_done(r)

    def _collect(self, ref, job: Job, attempt: int, t0: float) -> None:
        """A task that ended: its point landed, or its worker was lost (retried once), or it failed."""
        ray, tries = self._ray, self._tries[job.key]
        try:
            out = ray.get(ref)
        except (ray.exceptions.NodeDiedError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.ObjectLostError, ray.exceptions.LocalRayletDiedError) as e:
            tries.append({"try": attempt, "lost": _first_line(e)})
            if attempt < MAX_TRIES:
                self.progress(f"  {job.key}: worker lost ({_first_line(e)}); retrying once")
                self._submit(job, attempt + 1)
            else:
                self._finish(JobResult(job, "failed", None, time.monotonic() - t0,
                                       f"worker lost on both tries: {_first_line(e)}", tries=tries))
            return
        except ray.exceptions.RayError as e:     # the task itself failed (runtime env, a bug): no retry
            tries.append({"try": attempt, "error": _first_line(e)})
            self._finish(JobResult(job, "failed", None, time.monotonic() - t0, _first_line(e), tries=tries))
            return
        self._finish(self._landed(job, out, attempt, tries))

    def _stop_all(self) -> None:
        """Cancel every task (one not yet running never starts; a running one stops its child and hands its results
        to the Collector, task.py), and land what comes back within CANCEL_GRACE_S."""
        ray = self._ray
        for ref in self._pending:
            ray.cancel(ref)
        t_cancel = time.monotonic()
        while self._pending and time.monotonic() - t_cancel < CANCEL_GRACE_S:
            ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=POLL_S)
            deposits = ray.get(self._collector.take.remote(), timeout=30)
            started = ray.get(self._collector.started.remote(), timeout=30)
            for ref in list(self._pending):
                job, attempt, t0 = self._pending[ref]
                tag = f"{job.key}#{attempt}"
                if tag in deposits:
                    del self._pending[ref]
                    self._finish(self._landed(job, deposits[tag], attempt, self._tries[job.key]))
                elif ref in ready and tag not in started and time.monotonic() - t_cancel > 3 * POLL_S:
                    del self._pending[ref]         # cancelled before it ran
                    self._finish(JobResult(job, "interrupted", None, 0.0, "not started"))
                elif ref in ready:
                    try:
                        out = ray.get(ref)         # it finished before the cancel reached it
                    except ray.exceptions.RayError:
                        continue                   # cancelled mid-run: its results come through the Collector
                    del self._pending[ref]
                    self._finish(self._landed(job, out, attempt, self._tries[job.key]))

    def _unplaceable(self) -> None:
        """A mininet point waiting while no specnet_root worker is alive any more would wait forever: fail it."""
        waiting = [ref for ref, (job, _, _) in self._pending.items() if job.backend == "mininet"]
        if not waiting or nodes_with(ROOT_RESOURCE):
            return
        for ref in waiting:
            job, attempt, t0 = self._pending.pop(ref)
            self._ray.cancel(ref, force=True)
            self._finish(JobResult(job, "failed", None, time.monotonic() - t0,
                                   f"no live worker advertises {ROOT_RESOURCE!r} any more"))

    def _landed(self, job: Job, out: dict, attempt: int, tries: list) -> JobResult:
        ran_on = f"{out['ip']} (node {out['node_id'][:8]})"
        tries.append({"try": attempt, "rc": out["rc"], "ip": out["ip"], "host": out["host"],
                      "node_id": out["node_id"]})
        if job.log is not None:
            job.log.parent.mkdir(parents=True, exist_ok=True)
            job.log.write_text(out["log"])
        try:
            run_dirs = unpack(out["tar"], job.dest)
        except (tarfile.TarError, UnsafeArchive, OSError) as e:
            return JobResult(job, "failed", None, out["seconds"], f"results from {ran_on} unusable: {e}", ran_on,
                             tries)
        record = {"address": self.address, "ran_on": ran_on, "host": out["host"], "ip": out["ip"],
                  "node_id": out["node_id"], "tries": tries, "seconds": round(out["seconds"], 3)}
        for d in run_dirs:
            mark(d, record)
        run_dir = next((d for d in reversed(run_dirs) if (d / "metrics.json").exists()), None)
        tail = (out["log"].strip().splitlines() or ["no output"])[-1][:200]
        if out["rc"] == 0 and run_dir is not None:
            return JobResult(job, "complete", run_dir, out["seconds"], "", ran_on, tries)
        run_dir = run_dir or (run_dirs[-1] if run_dirs else None)
        if out["rc"] in (130, -15, -2):
            return JobResult(job, "interrupted", run_dir, out["seconds"],
                             "stopped" + (": what it wrote came back" if run_dir else " before it wrote a run"),
                             ran_on, tries)
        return JobResult(job, "failed", run_dir, out["seconds"], f"exit {out['rc']} on {ran_on}: {tail}", ran_on,
                         tries)


def mark(run_dir: Path, record: dict) -> None:
    """RUN/cluster.json, and the manifest's `cluster` entry: where this run ran and after how many tries. The
    worker ran the code shipped from this checkout, which has no .git there: the manifest's `git` is this one's."""
    (run_dir / "cluster.json").write_text(json.dumps(record, indent=2) + "\n")
    path = run_dir / "manifest.json"
    try:
        man = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    from testbed.run.manifest import _git, write
    if not (man.get("git") or {}).get("commit"):
        man["git"] = {**_git(), "from": "the driver's checkout, shipped to the worker"}
    write(run_dir, {**man, "cluster": record})


class UnsafeArchive(Exception):
    pass


def unpack(data: bytes, dest: Path) -> list[Path]:
    """The worker's results folder (EXPERIMENT/RUN_ID/...) into `dest`: only plain files and folders, no path out of
    it; a run directory already there (a rerun in the same second) gets a -N suffix. The run directories, sorted."""
    import io
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    incoming = dest / f".incoming-{uuid.uuid4().hex[:8]}"
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                parts = Path(m.name).parts
                if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
                    raise UnsafeArchive(f"refused archive member {m.name!r}")
            tar.extractall(incoming, members=members, filter="data")
        placed = []
        for run in sorted(p for p in incoming.glob("*/*") if p.is_dir()):
            target = dest / run.parent.name / run.name
            n = 1
            while target.exists():
                n += 1
                target = dest / run.parent.name / f"{run.name}-{n}"
            target.parent.mkdir(parents=True, exist_ok=True)
            run.rename(target)
            placed.append(target)
        return placed
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
