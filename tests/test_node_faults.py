"""Node faults (testbed/run/nodefaults.py) on real node processes (backend local: no root, no shaping) and on the
simulator (testbed/sim/nodefaults.py): a verifier killed and restarted, a verifier stopped and continued, a
drafter killed and restarted, all in one run, and every session completes with exactly the tokens of the same
run without faults; a drafter left dead fails its sessions and the run says so. Plus the checks of the `faults:`
entries that name nodes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testbed.run.experiment import ConfigError, load_experiment

REPO = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]
BASE = {"topology": str(REPO / "topologies/star-wifi-4.yaml"), "backend": "local",
        "workload": {"prompts": "builtin", "requests": 3, "max_new": 96},
        "speculation": {"gamma": 4, "payload": "ids"}, "seed": 0,
        "verifier": {"backend": "synthetic", "vocab_size": 32000, "verify_base_ms": 20, "verify_per_token_ms": 1},
        "drafters": {"backend": "synthetic", "vocab_size": 32000, "alpha": 0.8, "draft_token_ms": 4}}


FAULTS = [{"kind": "verifier_restart", "node": "verifier", "at_s": 1.0, "duration_s": 1.0},
          {"kind": "drafter_crash", "node": "d2", "at_s": 1.5, "duration_s": 0.5},
          {"kind": "verifier_stall", "node": "verifier", "at_s": 3.5, "duration_s": 1.0}]


def write(tmp_path: Path, name: str, **fields) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": name, **fields}))
    return path


def run(path: Path, results: Path) -> tuple[subprocess.CompletedProcess, Path]:
    r = subprocess.run(TESTBED + ["run", str(path), "--results", str(results)], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    (run_dir,) = [p for p in (results / path.stem).iterdir() if (p / "manifest.json").exists()]
    return r, run_dir


def outputs(run_dir: Path) -> dict:
    rows = [json.loads(l) for f in (run_dir / "outputs").glob("*.jsonl") for l in f.read_text().splitlines()]
    return {(r["drafter"], r["session"]): r["tokens"] for r in rows}


def recoveries(run_dir: Path, what: str) -> int:
    return sum(1 for f in (run_dir / "events").glob("*.jsonl") for l in f.read_text().splitlines()
               if '"recovery"' in l and json.loads(l).get("what") == what)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clean")
    r, run_dir = run(write(tmp, "clean"), tmp / "res")
    assert r.returncode == 0, r.stderr[-2000:]
    return outputs(run_dir)


def test_a_verifier_restart_a_stall_and_a_drafter_crash_lose_no_token(tmp_path, clean):
    r, run_dir = run(write(tmp_path, "faulty", faults=FAULTS, limits={"probe_s": 1.0}), tmp_path / "res")
    assert r.returncode == 0, r.stderr[-3000:]
    assert outputs(run_dir) == clean and len(clean) == 3 * 4          # every session, token for token
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["complete"], m["issues"]
    f = m["faults"]
    assert [o["kind"] for o in f["occurrences"]] == ["verifier_restart", "drafter_crash", "verifier_stall"]
    assert all(o["ended"] and o["during_goodput_tps"] is not None for o in f["occurrences"])
    assert f["sessions_resumed"] > 0 and f["sessions_failed"] == 0
    assert recoveries(run_dir, "verifier_restarted") >= 3                # every drafter that was live saw it
    crash = f["occurrences"][1]
    assert crash["sessions"] and all(s.startswith("d2/") for s in crash["sessions"])
    assert (run_dir / "plots" / "goodput.png").exists()


def test_a_drafter_left_dead_fails_its_sessions_and_the_run_says_so(tmp_path):
    faults = [{"kind": "drafter_crash", "node": "d3", "at_s": 0.5, "duration_s": 1.0, "restart": False}]
    r, run_dir = run(write(tmp_path, "dead", faults=faults), tmp_path / "res")
    m = json.loads((run_dir / "metrics.json").read_text())
    assert not m["complete"] and any(i.startswith("d3:") for i in m["issues"]), m["issues"]
    assert m["faults"]["sessions_failed"] >= 1
    done = outputs(run_dir)
    assert {d for d, _ in done} >= {"d1", "d2", "d4"} and len([k for k in done if k[0] == "d3"]) < 3


@pytest.mark.parametrize("fault, where, needle", [
    ({"kind": "verifier_restart", "node": "d9", "at_s": 1, "duration_s": 1}, "faults.0.node", "no verifier named"),
    ({"kind": "drafter_crash", "node": "verifier", "at_s": 1, "duration_s": 1}, "faults.0.node", "no drafter named"),
    ({"kind": "drafter_crash", "at_s": 1, "duration_s": 1}, "faults.0.node", "required"),
    ({"kind": "verifier_stall", "node": "verifier", "link": "d1-ap1", "at_s": 1, "duration_s": 1}, "faults.0.link",
     "not a field"),
    ({"kind": "outage", "node": "d1", "link": "d1-ap1", "at_s": 1, "duration_s": 1}, "faults.0.node", "not a field"),
    ({"kind": "verifier_stall", "node": "verifier", "at_s": 1, "duration_s": 1, "restart": True}, "faults.0.restart",
     "not a field"),
])
def test_a_bad_node_fault_is_one_line_naming_its_field(tmp_path, fault, where, needle):
    with pytest.raises(ConfigError) as e:
        load_experiment(write(tmp_path, "bad", faults=[fault]))
    text = str(e.value)
    assert where in text.replace(": ", ".").replace("[", ".").replace("]", "") or where.split(".")[-1] in text, text
    assert needle in text


def test_the_simulator_carries_out_the_same_node_faults_losslessly_and_repeatably(tmp_path):
    """testbed/sim/nodefaults.py: the cores on a simulated clock, killed, stopped and restarted as the runner does
    with processes; the same tokens as the unfaulted simulated run, and the same files twice over."""
    r, clean = run(write(tmp_path, "simclean", backend="sim"), tmp_path / "res")
    assert r.returncode == 0, r.stderr[-2000:]
    runs = []
    for i in range(2):
        r, run_dir = run(write(tmp_path, f"simfaulty{i}", backend="sim", faults=FAULTS), tmp_path / "res")
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(run_dir)
    assert outputs(runs[0]) == outputs(clean) and len(outputs(clean)) == 3 * 4
    m = [json.loads((d / "metrics.json").read_text()) for d in runs]
    assert m[0] == m[1]                                              # simulated: repeatable to the byte
    f = m[0]["faults"]
    assert m[0]["complete"] and f["sessions_resumed"] > 0 and f["sessions_rerun"] >= 1
    assert [o["kind"] for o in f["occurrences"]] == ["verifier_restart", "drafter_crash", "verifier_stall"]
    assert recoveries(runs[0], "verifier_restarted") >= 3
