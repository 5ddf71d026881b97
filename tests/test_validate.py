"""`testbed validate`: the comparison rule (unit) and one scenario on both backends end to end (root)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.run.validate import compare, scenarios, table

REPO = Path(__file__).resolve().parent.parent


def metrics(goodput, per, ttft=0.1, distorted=False):
    return {"total": {"goodput_tps": goodput, "ttft_p50_s": ttft, "ttft_p95_s": ttft, "tpot_p50_s": 0.02,
                      "e2e_p95_s": 1.0},
            "drafters": {f"d{i}": {"goodput_tps": g} for i, g in enumerate(per)},
            "pacing": {"distorted": distorted}}


def test_compare_applies_the_targets():
    ok = compare(metrics(100, [50, 50]), metrics(104, [52, 52]))
    assert ok["ok"] and ok["goodput"] == pytest.approx(0.04) and ok["per_drafter_goodput"] == pytest.approx(0.04)
    miss = compare(metrics(100, [50, 50]), metrics(100, [40, 60], ttft=0.2))
    assert not miss["ok"] and miss["misses"] == ["per-drafter goodput", "ttft_p50_s", "ttft_p95_s"]
    assert compare(metrics(100, [100]), metrics(90, [90]))["misses"] == ["goodput", "per-drafter goodput"]
    flagged = compare(metrics(100, [100], distorted=True), metrics(120, [120]))
    assert flagged["emu_pacing_distorted"]
    assert "emulator pacing distorted" in table([("x", flagged)]) and "MISS: goodput" in table([("x", flagged)])


def test_the_matrix_covers_what_the_simulator_must_match():
    names = [n for n, _ in scenarios(True)]
    assert len(names) >= 8
    drafters = {len([k for k, v in d["topology"]["nodes"].items() if v["role"] == "drafter"])
                for _, d in scenarios(True) if isinstance(d["topology"], dict)}
    assert {1, 8, 32} <= drafters
    payloads = {d["speculation"]["payload"] for _, d in scenarios(True)}
    assert {"ids", "topk:64", "full"} <= payloads
    assert any(d.get("routing", {}).get("policy") == "jsq" for _, d in scenarios(True))
    assert any(d.get("scheduling", {}).get("scheduler") == "goodspeed" for _, d in scenarios(True))


@pytest.mark.root
def test_one_scenario_on_both_backends(tmp_path):
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "validate", "--quick", "--only", "rtt100-1",
                        "--results", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    (out,) = (tmp_path / "validate").iterdir()
    rows = json.loads((out / "validation.json").read_text())
    assert list(rows) == ["rtt100-1"]
    row = rows["rtt100-1"]
    assert row["goodput"] is not None and row["ttft_p50_s"] is not None
    assert (r.returncode == 0) == row["ok"]                 # the exit status says whether the targets were met
    assert (out / "sim_vs_emu.png").exists() and "| rtt100-1 |" in (out / "summary.md").read_text()
    assert {p.name for p in out.iterdir()} >= {"mininet", "sim"}
