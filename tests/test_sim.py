"""`backend: sim`: shipped experiments run on the simulator with the same node cores, write the same results
directory, repeat byte for byte, and real models on it stay lossless (no root needed for any of it)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]


def run(args, results, timeout=300):
    return subprocess.run(TESTBED + ["run", *args, "--results", str(results)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def run_dirs(results: Path, name: str) -> list[Path]:
    return sorted(p for p in (results / name).iterdir() if (p / "manifest.json").exists())


ONE_DEMO_POINT = ["experiments/demo.yaml", "--set", "backend=sim", "--set", "sweep=null",
                  "--set", "speculation.gamma=4", "--set", "links.ap1-verifier.delay_ms=18"]


def test_a_demo_point_on_sim_writes_the_results_directory(tmp_path):
    r = run(ONE_DEMO_POINT, tmp_path / "res")
    assert r.returncode == 0, r.stdout + r.stderr
    (d,) = run_dirs(tmp_path / "res", "demo")
    man = json.loads((d / "manifest.json").read_text())
    assert man["backend"] == "sim" and man["status"] == "complete" and "emulation" not in man
    assert man["sim"]["simulated_s"] > 5 and man["sim"]["frames"] > 100 and man["sim"]["unfinished"] == []
    m = json.loads((d / "metrics.json").read_text())
    assert m["complete"] and m["pacing"]["compute"] == "simulated" and not m["pacing"]["distorted"]
    assert m["total"]["tokens"] > 500 and m["total"]["alpha_hat"] > 0.5
    assert 0.8 < m["total"]["measured_over_bound"] < 1.25
    assert "**simulated** (backend sim)" in (d / "summary.md").read_text()
    assert (d / "plots" / "goodput.png").exists() and list((d / "outputs").glob("d*.jsonl"))


def test_same_config_and_seed_give_byte_identical_metrics(tmp_path):
    for i in range(2):
        r = run(ONE_DEMO_POINT, tmp_path / f"res{i}")
        assert r.returncode == 0, r.stderr
    a, b = (run_dirs(tmp_path / f"res{i}", "demo")[0] for i in range(2))
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    for f in sorted((a / "outputs").iterdir()):
        assert f.read_bytes() == (b / "outputs" / f.name).read_bytes()
    c = run(ONE_DEMO_POINT + ["--set", "seed=1"], tmp_path / "res2")
    assert c.returncode == 0
    assert (run_dirs(tmp_path / "res2", "demo")[0] / "metrics.json").read_bytes() != (a / "metrics.json").read_bytes()


def synthetic_experiments() -> list[str]:
    out = []
    for f in sorted((REPO / "experiments").glob("*.yaml")):
        data = yaml.safe_load(f.read_text())
        if (data.get("verifier") or {}).get("backend") == "synthetic":
            out.append(f.name)
    return out


def shortened(name: str) -> list[str]:
    """experiments/soak.yaml lasts 30 minutes with 32 drafters (`make soak`): here 40 s with 8, its faults in 6
    cycles over those 40 s as testbed/bench/soak.py scales them. scale.yaml keeps its 1000 drafters, with one
    request each instead of two (CI time)."""
    if name == "scale.yaml":
        return ["--set", "workload.requests=1"]
    if name != "soak.yaml":
        return []
    from testbed.bench.soak import faults_for
    return ["--set", "workload.duration_s=40", "--set", "topology.nodes.d.count=8",
            "--set", f"faults={faults_for(40 / 60)}"]


@pytest.mark.parametrize("name", synthetic_experiments())
def test_every_shipped_synthetic_experiment_runs_on_sim(tmp_path, name):
    """Every point of its sweep, as shipped, with --set backend=sim (channels, routing, scheduling included)."""
    r = run([f"experiments/{name}", "--set", "backend=sim", *shortened(name)], tmp_path / "res", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exp = yaml.safe_load((REPO / "experiments" / name).read_text())["name"]
    for d in run_dirs(tmp_path / "res", exp):
        m = json.loads((d / "metrics.json").read_text())
        assert m["complete"], (d, m["issues"])
        assert m["total"]["tokens"] > 0


def test_real_models_on_sim_stay_lossless(tmp_path):
    """The hf backend under the simulator (compute takes what it took here): the text equals generate()'s."""
    r = run(["experiments/demo-lossless.yaml", "--set", "backend=sim", "--set", "workload.requests=1"],
            tmp_path / "res", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (d,) = run_dirs(tmp_path / "res", "demo-lossless")
    check = subprocess.run(TESTBED + ["lossless", str(d), "--threads", "2"], capture_output=True, text=True,
                           timeout=600, cwd=REPO)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2/2 sessions equal" in check.stdout


def test_sim_feeds_drafter_telemetry_to_the_band_split(tmp_path):
    """A joint band + gamma allocation needs each drafter's demand and acceptance: on sim they come from the
    events as recorded, so the AP's split follows the drafters (unequal alpha -> unequal shares) after start-up."""
    r = run(["experiments/joint.yaml", "--set", "backend=sim", "--set", "workload.duration_s=6"], tmp_path / "res",
            timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (d,) = run_dirs(tmp_path / "res", "joint")
    man = json.loads((d / "manifest.json").read_text())
    assert "demand" not in man["channels"]              # no "not modelled" caveat any more
    late = [json.loads(line) for line in (d / "events" / "links.jsonl").read_text().splitlines()]
    late = [e for e in late if e.get("tick", 0) >= 30 and e.get("demand_up") is not None]
    assert late, "no demand reached the channel plan"
    shares = {e["link"]: e.get("share_up") for e in late if e.get("share_up") is not None}
    assert len(set(round(s, 3) for s in shares.values())) > 1, shares   # not an equal split


def test_drafters_begin_together_as_at_the_emulators_start_gate(tmp_path):
    """The emulator's drafters wait at a gate until all have connected; the simulated ones too: every drafter's
    first session starts at the same simulated instant, although their WELCOMEs left the verifier one by one."""
    from testbed.run.validate import star
    exp = {"name": "gate", "topology": star(4, 20, 5), "backend": "sim", "seed": 0,
           "verifier": {"backend": "synthetic", "vocab_size": 32000, "verify_base_ms": 15, "verify_per_token_ms": 0.5},
           "drafters": {"backend": "synthetic", "vocab_size": 32000, "alpha": 0.8, "draft_token_ms": 2},
           "workload": {"requests": 1, "max_new": 16}, "batching": {"rule": "fifo", "max_batch": 8}}
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump(exp))
    r = run([str(path)], tmp_path / "res")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (d,) = run_dirs(tmp_path / "res", "gate")
    logs = [[json.loads(x) for x in f.read_text().splitlines()] for f in sorted((d / "events").glob("d*.jsonl"))]
    welcomes = sorted(e["t"] for log in logs for e in log if e["event"] == "welcome")
    starts = {e["t"] for log in logs for e in log if e["event"] == "start"}
    assert len(logs) == 4 and welcomes[0] < welcomes[-1]          # WELCOMEs arrived at different times ...
    assert starts == {welcomes[-1]}                               # ... and all began with the last one
