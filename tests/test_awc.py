"""AWC (testbed/policies/awc.py) and its trainer (experiments/train_awc.py)."""
from __future__ import annotations

import importlib.util
import json
import math
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testbed.bench.policies import speculation_decision_times
from testbed.policies import awc
from testbed.policies.awc import (DEFAULT_ALLOWED, DEFAULT_WEIGHTS, FEATURES, AWCPolicy, AWCWeightsError,
                                  load_weights, save_weights)
from testbed.policies.speculation import SPECULATION_POLICIES, NetworkView, RoundResult, make_speculation

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "experiments" / "train_awc.py"


def _trainer():
    spec = importlib.util.spec_from_file_location("train_awc", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rounds(seed: int, n: int = 40) -> list[tuple[RoundResult, NetworkView]]:
    """Varied rounds and views, including γ = 0 rounds, missing fields and an unknown uplink."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        g = rng.choice((0, 1, 2, 4, 8, 16))
        some = rng.random() < 0.8
        r = RoundResult(g, rng.randint(0, g), 0.1 * k, rtt_s=rng.uniform(0.001, 2.0) if some else None,
                        verify_s=rng.uniform(0.0, 0.1) if some else None, queue_s=rng.uniform(0.0, 0.3),
                        draft_s=g * rng.uniform(0.0, 0.05) if some else None)
        net = NetworkView(uplink_mbps=rng.choice((None, 0.0, 0.3, 20.0, 900.0)),
                          bytes_per_token_up=rng.choice((24.0, 8 * 64 + 25, 4 * 128256 + 25)))
        out.append((r, net))
    return out


def _drive(policy: AWCPolicy, seed: int) -> list[int]:
    windows = []
    for r, net in _rounds(seed):
        windows.append(policy.next_window(r.t, net))
        policy.observe(r)
    return windows


def _constant_weights(path: Path, gamma: float, allowed=DEFAULT_ALLOWED) -> Path:
    """A network whose output is `gamma` whatever the input (zero weights, bias gamma)."""
    n = len(FEATURES)
    layers = [(np.zeros((n, 4)), np.zeros(4), "tanh"), (np.zeros((4, 1)), np.array([gamma]), "linear")]
    return save_weights(path, layers, np.zeros(n), np.ones(n), allowed, float(max(allowed)), {"source": "test"})


# --- inference -------------------------------------------------------------------------------------------

def test_inference_is_deterministic_and_survives_a_reload(tmp_path):
    w = load_weights()
    policy = AWCPolicy()
    _drive(policy, 1)
    x = policy._tel.vector(NetworkView(uplink_mbps=10.0), w.gamma_scale)
    assert x.dtype == np.float64 and x.shape == (len(FEATURES),)
    first = w.predict(x)
    assert w.predict(x) == first                              # bit for bit
    copy = shutil.copy(DEFAULT_WEIGHTS, tmp_path / "copy.json")
    assert load_weights(copy).predict(x) == first
    assert _drive(AWCPolicy(), 7) == _drive(AWCPolicy(), 7) == _drive(AWCPolicy(weights_path=str(copy)), 7)


@pytest.mark.parametrize("allowed", [DEFAULT_ALLOWED, (1, 2, 4, 8), (3,), (2, 16, 32)])
def test_windows_always_in_the_allowed_set(allowed):
    for seed in range(5):
        policy = AWCPolicy(allowed=allowed, smoothing=0.3 * (seed % 3), gamma0=allowed[0])
        assert set(_drive(policy, seed)) <= set(allowed)


def test_first_window_is_gamma0_and_next_window_is_idempotent():
    policy = AWCPolicy(gamma0=3)
    assert policy.next_window(0.0) == 3
    policy.observe(RoundResult(3, 3, 0.1, rtt_s=0.02, verify_s=0.01, queue_s=0.0, draft_s=0.003))
    net = NetworkView(uplink_mbps=50.0)
    assert policy.next_window(0.2, net) == policy.next_window(0.2, net)


def test_smoothing_moves_gradually_after_a_step(tmp_path):
    high, low = _constant_weights(tmp_path / "high.json", 8.0), _constant_weights(tmp_path / "low.json", 1.0)
    r = RoundResult(4, 2, 0.0, rtt_s=0.05)

    def windows(path, smoothing, gamma0, n=6):
        p, out = AWCPolicy(weights_path=str(path), smoothing=smoothing, gamma0=gamma0), []
        for _ in range(n):
            out.append(p.next_window(0.0))
            p.observe(r)
        return out
    # g: 1 → 4.5 → 6.25 → 7.125 → ...; nearest allowed, ties → smaller: 4, 6, 8.
    assert windows(high, 0.5, 1) == [1, 4, 6, 8, 8, 8]
    assert windows(high, 0.0, 1) == [1, 8, 8, 8, 8, 8]      # no smoothing: the prediction at once
    down = windows(low, 0.8, 8, n=12)
    assert down[0] == 8 and down[-1] <= 2 and all(b <= a for a, b in zip(down, down[1:]))
    assert len(set(down)) >= 4                               # passes through intermediate windows


def test_registers_and_builds_through_make_speculation():
    registry = dict(SPECULATION_POLICIES)
    awc.register(registry)
    make = make_speculation({"policy": "awc", "allowed": [1, 2, 4, 8], "smoothing": 0.6}, registry)
    p = make()
    assert isinstance(p, AWCPolicy) and p.allowed == (1, 2, 4, 8) and p.name == "awc"
    with pytest.raises(ValueError, match="smoothing"):
        make_speculation({"policy": "awc", "smoothing": 1.0}, registry)
    with pytest.raises(ValueError, match="allowed"):
        make_speculation({"policy": "awc", "allowed": [0, 2]}, registry)
    assert "awc" not in SPECULATION_POLICIES or SPECULATION_POLICIES["awc"] is AWCPolicy
    assert speculation_decision_times(2, 5, policies={"awc": AWCPolicy})["awc"] > 0


# --- the weights file ------------------------------------------------------------------------------------

def _doc() -> dict:
    return json.loads(DEFAULT_WEIGHTS.read_text())


def _breaks(doc: dict, how: str):
    if how == "missing layers":
        del doc["layers"]
    elif how == "missing bias":
        del doc["layers"][1]["bias"]
    elif how == "wrong shape":
        doc["layers"][1]["weights"] = doc["layers"][1]["weights"][:-3]
    elif how == "unchained shape":
        doc["layers"][1]["shape"] = [doc["layers"][1]["shape"][0] + 1, doc["layers"][1]["shape"][1]]
    elif how == "nan":
        doc["layers"][0]["weights"][5] = float("nan")
    elif how == "inf std":
        doc["feature_std"][2] = float("inf")
    elif how == "zero std":
        doc["feature_std"][2] = 0.0
    elif how == "wrong features":
        doc["features"] = doc["features"][::-1]
    return doc


@pytest.mark.parametrize("how, field", [
    ("missing layers", "layers: missing field"), ("missing bias", "layers[1].bias: missing field"),
    ("wrong shape", "layers[1].weights"), ("unchained shape", "layers[1].shape"),
    ("nan", "layers[0].weights[5]"), ("inf std", "feature_std[2]"), ("zero std", "feature_std[2]"),
    ("wrong features", "features"),
])
def test_load_rejects_bad_files_naming_file_and_field(tmp_path, how, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_breaks(_doc(), how)))        # json writes NaN/Infinity, as a careless tool would
    with pytest.raises(AWCWeightsError) as e:
        load_weights(path)
    assert str(path) in str(e.value) and field in str(e.value)
    with pytest.raises(AWCWeightsError, match=str(path)):
        AWCPolicy(weights_path=str(path))


def test_load_rejects_non_json_and_never_unpickles(tmp_path, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("the loader must not unpickle")
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    assert load_weights(DEFAULT_WEIGHTS).layers                       # works with every unpickler gone
    pickled = tmp_path / "weights.pkl"
    pickled.write_bytes(pickle.dumps(_doc()))                        # a valid document, pickled
    with pytest.raises(AWCWeightsError, match=rf"{pickled}: not JSON"):
        load_weights(pickled)
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"format": ')
    with pytest.raises(AWCWeightsError, match=rf"{garbage}: not JSON"):
        load_weights(garbage)
    missing = tmp_path / "missing.json"
    with pytest.raises(AWCWeightsError, match=rf"{missing}: cannot read"):
        load_weights(missing)


# --- training --------------------------------------------------------------------------------------------

def test_training_script_end_to_end(tmp_path):
    out = tmp_path / "w.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--generate", "800", "--seed", "3", "--epochs", "80",
                           "--patience", "20", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "val:" in proc.stdout and "confusion" in proc.stdout
    w = load_weights(out)
    val = w.training["val"]
    assert val["n"] == 160 and w.training["source"] == "generate 800 seed 3"
    assert val["mae_raw"] < 0.8 * val["baseline_mae_raw"]        # better than predicting the train mean
    assert val["mae"] < val["baseline_mae"]
    p = AWCPolicy(weights_path=str(out))
    assert set(_drive(p, 2)) <= set(DEFAULT_ALLOWED)


def test_shipped_weights_beat_a_constant_on_held_out_data():
    w = load_weights()
    assert w.training["source"] == "generate 20000 seed 0" and out_size_ok()
    train = _trainer()
    x, y = train.generate(1500, seed=12345)                            # seed 0 trained them; this is unseen
    q = train.quantise(w.predict_batch(x), w.allowed)
    mae = float(np.mean(np.abs(q - y)))
    best_constant = min(float(np.mean(np.abs(a - y))) for a in w.allowed)
    majority = max(float(np.mean(y == a)) for a in w.allowed)
    assert mae < 0.5 * best_constant, (mae, best_constant)
    assert float(np.mean(q == y)) > majority + 0.1


def out_size_ok() -> bool:
    return DEFAULT_WEIGHTS.stat().st_size < 16_000


# --- --runs: labels from a fabricated γ sweep -------------------------------------------------------------

T0 = 1_000_000.0


def _events(node: str, gamma: int, round_s: float, accepted: int, fused: bool = False) -> list[dict]:
    """Two sessions of 3 rounds each, back to back; every round takes round_s and accepts `accepted` (fused: the
    verifier drafted rounds 1-3, so the drafter logged verdicts and no drafts)."""
    ev, t = [{"t": T0, "node": node, "event": "welcome", "verifier": "verifier"}], T0
    for s in range(2):
        sid = f"{node}-s{s}"
        ev.append({"t": t, "node": node, "event": "start", "session": sid, "bytes_out": 150})
        t += 0.1
        ev.append({"t": t, "node": node, "event": "verdict", "session": sid, "round": 0, "gamma": 0,
                   "accepted": 0, "tokens": 1, "rtt_s": 0.1, "queue_s": 0.0, "verify_s": 0.02, "bytes_in": 130})
        for k in range(1, 4):
            if not fused:
                ev.append({"t": t + 0.01, "node": node, "event": "draft", "session": sid, "round": k, "gamma": gamma,
                           "draft_s": 0.002 * gamma, "bytes_out": 10 * gamma + 40})
            t += round_s
            ev.append({"t": t, "node": node, "event": "verdict", "session": sid, "round": k, "gamma": gamma,
                       "accepted": accepted, "tokens": accepted + 1, "rtt_s": round_s - 0.002 * gamma,
                       "queue_s": 0.004, "verify_s": 0.02, "bytes_in": 130, "fused": fused})
        ev.append({"t": t, "node": node, "event": "finish", "session": sid})
    ev.append({"t": t, "node": node, "event": "done"})
    return ev


def _run(root: Path, gamma: int, seed: int, plan: dict[str, tuple[float, int]], mode: str = "distributed") -> Path:
    d = root / f"run-g{gamma}-s{seed}-{mode}"
    (d / "events").mkdir(parents=True)
    config = {"name": "sweep", "label": f"gamma={gamma}", "seed": seed,
              "speculation": {"gamma": gamma, "payload": "ids", "proactive": True, "mode": mode},
              "topology": {"links": [
                  {"a": "d1", "b": "ap1", "name": "d1-ap1", "rate_up_mbps": 10.0, "rate_down_mbps": 20.0},
                  {"a": "ap1", "b": "d2", "name": "ap1-d2", "rate_up_mbps": 30.0, "rate_down_mbps": 7.0}]}}
    (d / "manifest.json").write_text(json.dumps({"label": config["label"], "config": config}))
    for node, (round_s, accepted) in plan.items():
        (d / "events" / f"{node}.jsonl").write_text(
            "".join(json.dumps(e) + "\n" for e in _events(node, gamma, round_s, accepted, mode == "fused")))
    (d / "events" / "links.jsonl").write_text(json.dumps(
        {"t": T0 - 1, "node": "runner", "event": "link", "link": "d1-ap1", "rate_up_mbps": 5.0,
         "rate_down_mbps": 20.0, "delay_ms": 0, "jitter_ms": 0, "loss_pct": 0}) + "\n")
    return d


def test_runs_mode_builds_the_expected_labels(tmp_path):
    root = tmp_path / "results" / "sweep"
    # d1 gains from γ = 4 (4 tokens/round for a little more time); d2 does not (accepts nothing, slower).
    _run(root, 2, 0, {"d1": (0.10, 1), "d2": (0.10, 1)})
    _run(root, 4, 0, {"d1": (0.11, 3), "d2": (0.20, 0)})
    _run(root, 4, 1, {"d1": (0.11, 3), "d2": (0.20, 0)})        # another seed: a group of one γ, skipped
    train, notes = _trainer(), []
    x, y, labels = train.runs_dataset([tmp_path / "results"], DEFAULT_ALLOWED, log=notes.append)
    assert len(labels) == 1
    (group,) = labels.values()
    assert {d: v["label"] for d, v in group.items()} == {"d1": 4, "d2": 2}
    assert group["d1"]["goodput"][4] > group["d1"]["goodput"][2]
    assert any("skipped" in n for n in notes)
    # 2 runs × 2 drafters × 2 sessions × 3 rounds, each labelled with its drafter's best γ.
    assert x.shape == (24, len(FEATURES)) and sorted(y.tolist()) == [2.0] * 12 + [4.0] * 12
    up = x[:, FEATURES.index("log_uplink")]
    assert set(np.round(up, 9)) == {round(math.log10(6.0), 9), round(math.log10(8.0), 9)}  # links.jsonl; side b
    out = tmp_path / "w.json"
    assert train.main(["--runs", str(tmp_path / "results"), "--epochs", "5", "--out", str(out)]) == 0
    assert load_weights(out).training["source"].startswith("runs ")


def test_runs_mode_counts_fused_gamma_1_as_an_action_but_learns_from_the_drafters_own_rounds(tmp_path):
    """DSD's oracle: gamma 1 in fused mode is one of the actions (same group as the distributed windows, since
    the mode is left out of the group key); its rounds were drafted by the verifier, so they give no rows."""
    root = tmp_path / "results" / "sweep"
    _run(root, 1, 0, {"d1": (0.03, 1), "d2": (0.10, 0)}, mode="fused")      # d1: 2 tokens per 30 ms: the best
    _run(root, 4, 0, {"d1": (0.11, 3), "d2": (0.20, 0)})
    x, y, labels = _trainer().runs_dataset([tmp_path / "results"], DEFAULT_ALLOWED, log=lambda _: None)
    (group,) = labels.values()
    assert {d: v["label"] for d, v in group.items()} == {"d1": 1, "d2": 1}
    assert x.shape == (12, len(FEATURES))                # only the gamma-4 run's 2 drafters x 2 sessions x 3 rounds
