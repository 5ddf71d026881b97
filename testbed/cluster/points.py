"""`testbed run EXP --cluster ...`: an experiment's sweep as cluster jobs, each one `testbed run EXP --point N`.

The workers run the project the driver shipped (raycluster.py project_env), so the experiment file and every
file it names (topology, prompts, traces, profiles) must lie inside the project; one outside would not exist
on a worker, and that is said here, before anything starts.
"""
from __future__ import annotations

from pathlib import Path

from testbed.cluster.sweep import Job
from testbed.common.raycluster import REPO, ClusterError


def project_relative(path: Path, what: str) -> str:
    full = Path(path).resolve()
    try:
        return str(full.relative_to(REPO))
    except ValueError:
        raise ClusterError(f"--cluster: {what} {path} is outside the project ({REPO}), which is what the workers "
                           f"receive; move it (and what it names) under the project, e.g. experiments/") from None


def _named_files(obj, base: Path):
    """Strings of the experiment that name an existing file, relative to the experiment's folder or absolute."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _named_files(v, base)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _named_files(v, base)
    elif isinstance(obj, str) and "/" in obj and len(obj) < 4096:
        p = (base / obj) if not obj.startswith("/") else Path(obj)
        try:
            if p.is_file():
                yield p
        except OSError:
            pass


def sweep_jobs(experiment: str, sets: list[str], points: list[tuple[int, object]], results: Path) -> list[Job]:
    """One job per (N, point): `run FILE --set ... --point N` (FILE relative to the project), into `results`."""
    rel = project_relative(Path(experiment), "experiment file")
    base = Path(experiment).resolve().parent
    for n, p in points:
        for f in _named_files(p.model_dump(), base):
            project_relative(f, f"{rel} names the file")
    args = ["run", rel, *[a for s in sets for a in ("--set", s)]]
    return [Job(p.label, [*args, "--point", str(n)], p.backend, Path(results)) for n, p in points]
