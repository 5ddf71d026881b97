"""The demo's two tools: goodput against RTT per speculation setting (testbed/run/rttplot.py), and the check
of a real-model run's text against the target's own greedy output (`testbed lossless`)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.run import rttplot
from testbed.run.lossless import NotCheckable, check_runs

REPO = Path(__file__).resolve().parent.parent


def fake_run(root: Path, name: str, gamma: int, policy, rtt_ms: float, goodput: float, **config) -> Path:
    d = root / name
    (d / "outputs").mkdir(parents=True)
    cfg = {"speculation": {"gamma": gamma, "policy": policy}, **config}
    (d / "manifest.json").write_text(json.dumps({"config": cfg, "paths": {
        "d1": {"rtt_ms": rtt_ms}, "d2": {"rtt_ms": rtt_ms}}}))
    (d / "metrics.json").write_text(json.dumps({"total": {"goodput_tps": goodput}}))
    return d


def test_rtt_table_and_plot(tmp_path):
    runs = [fake_run(tmp_path, "a", 0, "static", 10, 100), fake_run(tmp_path, "b", 4, "static", 10, 150),
            fake_run(tmp_path, "c", 0, "static", 40, 50), fake_run(tmp_path, "d", 4, "static", 40, 120),
            fake_run(tmp_path, "e", 4, {"policy": "network", "gamma_max": 8}, 40, 130)]
    rows, text = rttplot.rtt_table(runs)
    assert rows == {"AD (γ=0)": {10: 100, 40: 50}, "SD γ=4": {10: 150, 40: 120}, "SD network": {40: 130}}
    assert "| AD (γ=0) | 100.0 tok/s | 50.0 tok/s |" in text
    assert "120.0 tok/s (2.40× AD)" in text and "| SD network | – | 130.0 tok/s (2.60× AD) |" in text
    png = rttplot.goodput_vs_rtt(runs, tmp_path / "cmp")
    assert png.name == "goodput_vs_rtt.png" and png.stat().st_size > 5000
    assert rttplot.goodput_vs_rtt(runs[:2], tmp_path / "one") is None      # one RTT: nothing to plot against
    assert rttplot.compute_note(runs) == ""                                 # nothing recorded: nothing claimed
    profiled = fake_run(tmp_path, "p", 4, "static", 10, 1, verifier={"backend": "synthetic", "profile": {
        "device": "h100-sxm", "model": "qwen3-14b"}}, drafters={"d1": {"profile": {"device": "l4", "model": "qwen3-0.6b"}},
                                                               "d2": {"profile": None}})
    assert rttplot.compute_note([profiled]) == ("compute profiled: verifier qwen3-14b on h100-sxm; drafters linear "
                                                "profile, qwen3-0.6b on l4")
    real = fake_run(tmp_path, "r", 4, "static", 10, 1, verifier={"backend": "hf"})
    assert rttplot.compute_note([real]) == "compute: real models on this machine"


def test_lossless_refuses_runs_without_a_reference(tmp_path):
    synthetic = fake_run(tmp_path, "s", 4, "static", 10, 1, verifier={"backend": "synthetic"},
                         workload={"temperature": 0.0})
    with pytest.raises(NotCheckable, match="only real"):
        check_runs([synthetic])
    sampled = fake_run(tmp_path, "t", 4, "static", 10, 1, verifier={"backend": "hf", "model": "smollm2-135m"},
                       workload={"temperature": 0.7})
    with pytest.raises(NotCheckable, match="only greedy"):
        check_runs([sampled])
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "lossless", str(synthetic)], capture_output=True,
                       text=True, timeout=60, cwd=REPO)
    assert r.returncode == 2 and "only real" in r.stderr and "Traceback" not in r.stderr


def test_lossless_finds_a_changed_token(tmp_path):
    """The target's own greedy continuation passes; the same with one token changed is caught at that token."""
    import torch
    from nodes.backends.hf import HfTarget
    target = HfTarget("smollm2-135m", "cpu", "float32", 1)
    prompt = target.tokenizer("def add(a, b):", return_tensors="pt")["input_ids"][0].tolist()
    with torch.inference_mode():
        ref = target.model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
    d = fake_run(tmp_path, "real", 4, "static", 40, 1, verifier={"backend": "hf", "model": "smollm2-135m"},
                 workload={"temperature": 0.0})
    changed = list(ref)
    changed[5] = (changed[5] + 1) % 1000
    lines = [{"session": "s0", "prompt_tokens": prompt, "tokens": ref},
             {"session": "s1", "prompt_tokens": prompt, "tokens": changed},
             {"session": "s2", "prompt_tokens": prompt, "tokens": ref + [ref[0]]}]    # one token too many
    (d / "outputs" / "d1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    checks = {c.session: c for c in check_runs([d], threads=1)}
    assert checks["s0"].equal and checks["s0"].tokens == len(ref)
    assert not checks["s1"].equal and checks["s1"].first_difference == 5
    assert not checks["s2"].equal
