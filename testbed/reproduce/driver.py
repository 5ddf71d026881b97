"""`testbed reproduce PAPER [--quick] [--backend sim|mininet]`: run a paper's suite, draw its figures, write its
claims table, and (after a full run) regenerate docs/reproduction.md.

Each paper module (testbed/reproduce/<paper>.py) gives `points(quick, backend)`, `analyse(runs, out, quick)`
(figures into `out`; claims and the numbers behind them) and MODELLED (what its figures rest on that was
modelled, not measured). This module runs them into results/reproduce/<paper>/<UTC time>/:
claims.md, the figures, reproduce.json (every number, every point's run directory and status), runs/ and logs/.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from importlib import import_module
from pathlib import Path

from testbed.reproduce.suite import REPO, ReproduceError, Runner, check_backend, claims_table, write_json

PAPERS = {"goodspeed": "GoodSpeed (arXiv 2512.09963)",
          "zhu": "Zhu et al. 2025 (arXiv 2510.11331)",
          "dsd": "DSD (distributed speculative decoding, DSD-Sim)"}
BACKENDS = ("sim", "mininet")


def papers(name: str) -> list[str]:
    if name == "all":
        return list(PAPERS)
    if name not in PAPERS:
        raise ReproduceError(f"unknown paper {name!r}; known: {', '.join(PAPERS)} (or all)")
    return [name]


def module(paper: str):
    return import_module(f"testbed.reproduce.{paper}")


def reproduce(name: str, quick: bool = False, backend: str = "sim", results: Path = Path("results"),
              jobs: int | None = None, docs: Path | None = REPO / "docs" / "reproduction.md",
              crosscheck: bool = False, resume: Path | None = None, cluster: str | None = None) -> int:
    """Run the suites; 0 when every point completed (a claim that does not hold is a result, not a failure).
    crosscheck: run each suite's small subset on mininet and sim instead, and compare (crosscheck.py).
    resume: an earlier (interrupted) run's folder of this one paper: its complete points are kept, the rest run.
    cluster: `ray` or `ray://HOST:PORT`: every point runs as a task on that Ray cluster (testbed/cluster)."""
    if backend not in BACKENDS:
        raise ReproduceError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    names = papers(name)
    suites = {p: module(p) for p in names}
    if crosscheck and cluster:
        raise ReproduceError("--crosscheck runs its small subset on this machine; leave out --cluster")
    if crosscheck:
        from testbed.reproduce.crosscheck import crosscheck as run_crosscheck
        runnable = {p: m for p, m in suites.items() if hasattr(m, "crosscheck_points") or name != "all"}
        for p in set(suites) - set(runnable):
            print(f"== {p}: analytic suite, nothing to cross-check", flush=True)
        rc = 0
        for p, m in runnable.items():
            rc |= run_crosscheck(p, m, quick, Path(results), jobs or max(1, os.cpu_count() or 1), _out_dir)
        if docs is not None:
            from testbed.reproduce.docs import write_docs
            print(f"docs: {write_docs(Path(results), docs)}", flush=True)
        return rc
    plans = {p: m.points(quick, backend) for p, m in suites.items()}
    for pts in plans.values():        # every point checked before anything runs
        check_backend(pts, backend, on_cluster=bool(cluster))
    if cluster:                       # joined, and every point placeable, before anything runs
        from testbed.cluster.sweep import ClusterSweep, Job
        from testbed.common.raycluster import connect
        cluster = connect(cluster)
        ClusterSweep(cluster).check([Job(p.key, [], p.backend, results) for pts in plans.values() for p in pts])
    jobs = jobs or max(1, os.cpu_count() or 1)
    ok = True
    if resume is not None:
        resume = _resumable(Path(resume), names, quick, backend)
    for paper, m in suites.items():
        out = resume or _out_dir(Path(results), paper)
        print(f"== reproduce {paper}{' --quick' if quick else ''} (backend {backend}) -> {out}", flush=True)
        t0 = time.monotonic()
        runner = Runner(out, jobs, resume=resume is not None, cluster=cluster)
        try:
            done = runner.run(plans[paper])
        except KeyboardInterrupt:       # keep what finished: its runs are on disk, say so in reproduce.json
            write_json(out / "reproduce.json", {
                "paper": paper, "title": PAPERS[paper], "quick": quick, "backend": backend, "interrupted": True,
                "points": {k: {"status": r.status, "run_dir": str(r.run_dir) if r.run_dir else None,
                               "seconds": round(r.seconds, 1), "log": str(r.log), "message": r.message,
                               **_ran_on(r.run_dir)}
                           for k, r in runner.done.items()}})
            print(f"   interrupted: {len(runner.done)} of {len(plans[paper])} point(s) finished; their runs are "
                  f"under {out / 'runs'}", file=sys.stderr, flush=True)
            raise
        runs = {k: r.run_dir for k, r in done.items() if r.status == "complete"}
        # an analytic suite has no points; a suite whose points all failed has nothing to analyse
        claims, numbers = m.analyse(runs, out, quick) if runs or not plans[paper] else ([], {"figures": []})
        seconds = time.monotonic() - t0
        failed = [r for r in done.values() if r.status != "complete"]
        ok &= not failed
        meta = {"paper": paper, "title": PAPERS[paper], "quick": quick, "backend": backend, "jobs": runner.jobs,
                "cores": os.cpu_count(), "cluster": cluster,
                "command": shlex.join(["testbed", "reproduce", paper] + (["--quick"] if quick else [])
                                      + ["--backend", backend]),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(seconds, 1),
                "modelled": m.MODELLED,
                "points": {k: {"status": r.status, "run_dir": str(r.run_dir) if r.run_dir else None,
                               "seconds": round(r.seconds, 1), "log": str(r.log), "message": r.message,
                               **_ran_on(r.run_dir)}
                           for k, r in done.items()},
                "claims": [c.__dict__ for c in claims], **numbers}
        write_json(out / "reproduce.json", meta)
        (out / "claims.md").write_text(claims_md(meta, claims))
        print(f"   claims: {out / 'claims.md'} ({sum(c.holds is True for c in claims)} hold, "
              f"{sum(c.holds is False for c in claims)} do not, {sum(c.holds is None for c in claims)} not "
              f"assessed); {len(failed)} point(s) failed; {seconds:.0f} s", flush=True)
        for f in failed:
            print(f"   failed: {f.point.key}: {f.message}", file=sys.stderr, flush=True)
    if docs is not None and not quick:
        from testbed.reproduce.docs import write_docs
        path = write_docs(Path(results), docs)
        print(f"docs: {path}", flush=True)
    return 0 if ok else 1


def reanalyse(paper: str, out: Path, results: Path = Path("results"),
              docs: Path | None = REPO / "docs" / "reproduction.md") -> int:
    """Figures, claims.md and reproduce.json of an earlier run `out` redrawn from its points' run directories
    (after a change to the analysis); nothing runs. The docs follow if it was a full run."""
    if paper not in PAPERS:
        raise ReproduceError(f"--analyse needs one paper, one of {', '.join(PAPERS)}; got {paper!r}")
    try:
        meta = json.loads((out / "reproduce.json").read_text())
    except (OSError, ValueError) as e:
        raise ReproduceError(f"{out}: not a reproduce run (cannot read reproduce.json: {e})") from None
    if meta.get("paper") != paper:
        raise ReproduceError(f"{out} is a run of {meta.get('paper')!r}, not {paper!r}")
    runs = {k: Path(p["run_dir"]) for k, p in meta["points"].items() if p["status"] == "complete"}
    missing = [str(d) for d in runs.values() if not (d / "metrics.json").exists()]
    if missing:
        raise ReproduceError(f"{len(missing)} point run(s) of {out} are gone, e.g. {missing[0]}")
    claims, numbers = module(paper).analyse(runs, out, meta["quick"])
    meta = {**{k: v for k, v in meta.items() if k in _META}, "modelled": module(paper).MODELLED,
            "claims": [c.__dict__ for c in claims], **numbers}
    write_json(out / "reproduce.json", meta)
    (out / "claims.md").write_text(claims_md(meta, claims))
    print(f"   claims: {out / 'claims.md'} ({sum(c.holds is True for c in claims)} hold, "
          f"{sum(c.holds is False for c in claims)} do not, {sum(c.holds is None for c in claims)} not assessed)")
    if docs is not None and not meta["quick"]:
        from testbed.reproduce.docs import write_docs
        print(f"docs: {write_docs(results, docs)}", flush=True)
    return 0


_META = ("paper", "title", "quick", "backend", "jobs", "cores", "cluster", "command", "finished", "seconds", "points")


def _resumable(out: Path, names: list[str], quick: bool, backend: str) -> Path:
    if len(names) != 1:
        raise ReproduceError("--resume takes one paper's earlier run, not all")
    if not (out / "logs").is_dir():
        raise ReproduceError(f"{out}: not a reproduce run (no logs/ folder)")
    try:
        meta = json.loads((out / "reproduce.json").read_text())
    except (OSError, ValueError):       # killed before it wrote one: each point's log names its command
        meta = {"paper": names[0], "quick": quick, "backend": backend}
    want = {"paper": names[0], "quick": quick, "backend": backend}
    got = {k: meta.get(k) for k in want}
    if got != want or meta.get("crosscheck"):
        raise ReproduceError(f"{out} is a run of {got}, not of {want}: resume it with the same paper and options")
    return out


def _ran_on(run_dir: Path | None) -> dict:
    """Where a point ran when it ran on a cluster (its RUN/cluster.json, testbed/cluster/sweep.py), else nothing."""
    try:
        return {"ran_on": json.loads((Path(run_dir) / "cluster.json").read_text())["ran_on"]}
    except (TypeError, OSError, ValueError, KeyError):
        return {}


def _out_dir(results: Path, paper: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = results / "reproduce" / paper / stamp
    n = 1
    while out.exists():             # two runs in the same second (e.g. `all` on a tiny suite)
        n += 1
        out = results / "reproduce" / paper / f"{stamp}-{n}"
    try:
        out.mkdir(parents=True)
    except OSError as e:
        raise ReproduceError(f"cannot create the results directory {out}: {e.strerror}") from None
    return out


def claims_md(meta: dict, claims) -> str:
    from testbed.reproduce.suite import Claim
    claims = [c if isinstance(c, Claim) else Claim(**c) for c in claims]
    pts = meta["points"]
    failed = {k: v for k, v in pts.items() if v["status"] != "complete"}
    lines = [f"# {meta['title']}: claims reproduced", "",
             f"`{meta['command']}`, finished {meta['finished']} in {meta['seconds']:.0f} s; "
             f"{len(pts) - len(failed)} of {len(pts)} points complete"
             + (" (**--quick**: shortened runs, not the paper's length)" if meta["quick"] else "") + ".", "",
             f"**Modelled, not measured:** {meta['modelled']}.", "",
             "A claim that does not hold is reported as measured, with the likely reason; no setting was tuned "
             "to make one hold.", "", claims_table(claims) if claims else "_no claims could be assessed_", ""]
    if failed:
        lines += ["## Points that did not complete", ""]
        lines += [f"- `{k}`: {v['status']}: {v['message']}" for k, v in failed.items()] + [""]
    if any(v.get("ran_on") for v in pts.values()):
        lines += [f"Points ran on a Ray cluster ({meta.get('cluster')}); where each ran is in reproduce.json "
                  f"(`ran_on`) and in its run's cluster.json.", ""]
    if meta.get("figures"):
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in meta["figures"]] + [""]
    return "\n".join(lines)
