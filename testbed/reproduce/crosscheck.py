"""`testbed reproduce PAPER --crosscheck`: a paper's small subset on the emulator and on the simulator, compared.

The full suites run on the simulator (their points are too large for the emulator on this machine); this shows,
on points small enough to emulate faithfully, that the simulator gives what the emulator gives for the paper's
own settings (profiles, payloads, batching, schedulers). Each subset point runs as the same `testbed run` child
twice, `--set backend=mininet` then `--set backend=sim`; the comparison uses testbed validate's metrics and
targets (goodput within 5 %, latency percentiles within 10 %) and names the part of a round that differs.
Written to results/reproduce/<paper>/<UTC time>/crosscheck.md and reproduce.json ("crosscheck": true).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from testbed.reproduce.suite import ReproduceError, Runner, check_backend, newest_run, write_json


def crosscheck(paper: str, m, quick: bool, results: Path, jobs: int, out_dir) -> int:
    """Run module `m`'s crosscheck_points on both backends into a new out_dir(results, paper); 0 when every
    point ran on both (a miss of the targets is a result, reported, not a failure)."""
    from testbed.run.validate import GOODPUT_TOL, LATENCY_TOL, compare, table
    from testbed.run.validate_why import why
    if not hasattr(m, "crosscheck_points"):
        raise ReproduceError(f"{paper} has no runs to cross-check: its suite is analytic ({m.MODELLED[:60]}...)")
    pts = m.crosscheck_points(quick)
    emu = [replace(p, key=f"mininet/{p.key}", backend="mininet") for p in pts]
    sim = [replace(p, key=f"sim/{p.key}", backend="sim") for p in pts]
    check_backend(emu, "mininet")          # size and root, before anything starts
    out = out_dir(results, paper)
    print(f"== reproduce {paper} --crosscheck: {len(pts)} point(s) on mininet, then on sim -> {out}", flush=True)
    t0 = time.monotonic()
    done = {**Runner(out, 1).run(emu), **Runner(out, jobs).run(sim)}
    rows, failed = [], []
    for p in pts:
        e, s = done[f"mininet/{p.key}"], done[f"sim/{p.key}"]
        if e.status != "complete" or s.status != "complete":
            failed.append(f"{p.key}: mininet {e.status}, sim {s.status}: {e.message or s.message}")
            continue
        c = compare(*(json.loads((r.run_dir / "metrics.json").read_text()) for r in (e, s)))
        rows.append((p.key, {**c, "why": why(e.run_dir, s.run_dir)["why"]}))
    seconds = time.monotonic() - t0
    meta = {"paper": paper, "crosscheck": True, "quick": quick,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(seconds, 1),
            "points": {k: {"status": r.status, "run_dir": str(r.run_dir) if r.run_dir else None,
                           "message": r.message} for k, r in done.items()},
            "rows": {k: {f: v for f, v in c.items() if f != "parts"} for k, c in rows}, "failed": failed}
    write_json(out / "reproduce.json", meta)
    ok = sum(c["ok"] for _, c in rows)
    text = [f"# {paper}: simulator vs emulator on the suite's small subset", "",
            f"`testbed reproduce {paper} --crosscheck{' --quick' if quick else ''}`, finished {meta['finished']} "
            f"in {seconds:.0f} s on {os.cpu_count()} cores. Relative error (sim − emu) / emu; targets: goodput "
            f"within {100 * GOODPUT_TOL:g} %, latency percentiles within {100 * LATENCY_TOL:g} % "
            f"(testbed validate's). {ok} of {len(rows)} point(s) within the targets.", "",
            table(rows) if rows else "_no point ran on both backends_", ""]
    if failed:
        text += ["## Points that did not run on both backends", ""] + [f"- {f}" for f in failed] + [""]
    (out / "crosscheck.md").write_text("\n".join(text))
    print(f"   crosscheck: {out / 'crosscheck.md'} ({ok} of {len(rows)} within the targets; {len(failed)} failed)",
          flush=True)
    return 0 if not failed else 1


def latest(results: Path, paper: str) -> Path | None:
    """The newest complete crosscheck run of `paper` under results (for the docs)."""
    return newest_run(results, paper, lambda m: m.get("crosscheck") and m.get("rows") and not m.get("failed"))
