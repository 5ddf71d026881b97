"""The paper suites' experiment files (experiments/papers/<paper>/): each is valid, and each runs on the simulator
at a reduced size (one point of its sweep, a few short requests) to completion."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PAPER_FILES = sorted(p for p in (REPO / "experiments" / "papers").glob("*/*.yaml")
                     if "nodes" not in yaml.safe_load(p.read_text()))          # topologies sit beside them


def test_there_are_paper_suites():
    assert {p.parent.name for p in PAPER_FILES} >= {"goodspeed"}


@pytest.mark.parametrize("path", PAPER_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_paper_experiment_runs_on_sim(tmp_path, path):
    exp = yaml.safe_load(path.read_text())
    first = {k: v[:1] for k, v in (exp.get("sweep") or {}).items() if k != "zip"}
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(path), "--results", str(tmp_path),
                        "--set", "workload.requests=1", "--set", "workload.max_new=12",
                        "--set", f"sweep={json.dumps(first)}"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    [run] = [d for d in (tmp_path / exp["name"]).iterdir() if (d / "metrics.json").exists()]
    m = json.loads((run / "metrics.json").read_text())
    man = json.loads((run / "manifest.json").read_text())
    assert m["complete"], m["issues"]
    assert man["backend"] == "sim" and m["total"]["tokens"] > 0
