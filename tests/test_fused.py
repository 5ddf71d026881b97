"""DSD's fused mode: the verifier drafts with a model beside its target (speculation.mode fused), or switches a
session there while its window is 1 and back (hybrid). Every mode gives the same output token for token (greedy),
the verifier's device is shared (drafting counts as its busy time), and nothing a drafter sends can break a fused
session."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from nodes import protocol as P
from nodes.backends.fused import Colocated
from nodes.backends.synthetic import ComputeProfile, SyntheticDraft, SyntheticTarget
from nodes.config import VerifierConfig
from nodes.core.actions import Compute, DraftWork, Send, VerifyWork
from nodes.core.verifier import VerifierCore

REPO = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]


def run(args, results, timeout=600):
    return subprocess.run(TESTBED + ["run", *args, "--results", str(results)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def outputs(run_dir: Path) -> dict[str, list[int]]:
    rows = [json.loads(line) for f in sorted((run_dir / "outputs").glob("*.jsonl")) for line in f.read_text().splitlines()]
    return {r["session"]: r["tokens"] for r in rows}


def verifies(run_dir: Path) -> list[dict]:
    out = []
    for f in sorted((run_dir / "events").glob("t*.jsonl")) + sorted((run_dir / "events").glob("verifier.jsonl")):
        out += [e for e in map(json.loads, f.read_text().splitlines()) if e["event"] == "verify"]
    return out


def switches(events: list[dict]) -> tuple[int, int]:
    """(to fused, back to the drafter) over every session's rounds, in order."""
    last: dict[tuple, bool] = {}
    into = back = 0
    for e in events:
        key = (e["drafter"], e["session"])
        now = e.get("fused_next", False)
        if key in last and now != last[key]:
            into, back = into + now, back + (not now)
        last[key] = now
    return into, back


FLEET = {
    "name": "fused", "topology": str(REPO / "experiments/papers/dsd/fleet-8x2.yaml"), "backend": "sim",
    "verifier": {"backend": "synthetic", "profile": {"device": "a100-80gb", "model": "llama-2-70b", "dtype": "int8"},
                 "draft": {"backend": "synthetic", "alpha": 0.45,
                           "profile": {"device": "a100-80gb", "model": "llama-3.2-1b"}}},
    "drafters": {"backend": "synthetic", "alpha": 0.45, "profile": {"device": "l4", "model": "llama-3.2-1b"}},
    "workload": {"arrivals": "closed", "requests": 3, "max_new": 64},
    # HF's heuristic window: +2 after a fully accepted window, else -1, never below 1: at alpha 0.45 it visits 1
    # often, so hybrid sessions move to the verifier and back many times
    "speculation": {"gamma": 4, "payload": "ids", "proactive": True, "policy": {"policy": "heuristic"}},
    "batching": {"rule": "fifo", "max_batch": 8}, "routing": {"policy": "jsq"},
    "sweep": {"speculation.mode": ["distributed", "fused", "hybrid"]},
}


def test_every_mode_gives_the_same_tokens_and_hybrid_moves_sessions_both_ways(tmp_path):
    f = tmp_path / "fused.yaml"
    f.write_text(yaml.safe_dump(FLEET))
    r = run([str(f)], tmp_path / "res")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    dist, fused, hybrid = sorted(p for p in (tmp_path / "res" / "fused").iterdir() if (p / "manifest.json").exists())
    assert len(outputs(dist)) == 24
    assert outputs(fused) == outputs(dist) == outputs(hybrid)          # lossless whoever drafts

    ev = verifies(fused)
    later = [e for e in ev if e["round"] > 0]
    assert later and all(e["fused"] for e in later)                    # every round after the prefill drafted there
    assert not any(e.get("fused") for e in verifies(dist))
    rows = [json.loads(line) for f in (fused / "outputs").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert all(r["fused_rounds"] == r["rounds"] and r["accepted"] <= r["proposed"] for r in rows if r["rounds"])
    into, back = switches(verifies(hybrid))
    assert into > 20 and back > 20, (into, back)

    m = {p: json.loads((p / "metrics.json").read_text())["total"] for p in (dist, fused)}
    assert m[fused]["verifier_fused_rounds"] == len(later) and m[dist]["verifier_fused_rounds"] == 0
    # the draft model shares the verifier's device: its drafting is counted as busy time
    busy_verify = sum({(e["batch_id"]): e["verify_s"] for e in ev}.values())
    assert m[fused]["verifier_busy_fraction"] > 0
    assert sum(e["draft_s"] for e in later) > 0.05 * busy_verify


def test_real_models_stay_lossless_when_sessions_move_to_the_verifier_and_back(tmp_path):
    """SmolLM2 target with its int8 draft beside it in the verifier (hybrid; heuristic windows of 1 or 2, so a
    session moves at every rejection): the text equals the target's own greedy output."""
    r = run(["experiments/demo-lossless.yaml", "--set", "backend=sim", "--set", "workload.requests=1",
             "--set", "speculation.mode=hybrid",
             "--set", "speculation.policy={policy: heuristic, gamma_max: 2, gamma0: 2}",
             "--set", 'verifier.draft={backend: hf, model: "smollm2-135m:int8"}'], tmp_path / "res")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (d,) = [p for p in (tmp_path / "res" / "demo-lossless").iterdir() if (p / "manifest.json").exists()]
    into, back = switches(verifies(d))
    assert into >= 2 and back >= 2, (into, back)
    check = subprocess.run(TESTBED + ["lossless", str(d), "--threads", "2"], capture_output=True, text=True,
                           timeout=600, cwd=REPO)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2/2 sessions equal" in check.stdout


# -- the verifier core, driven by hand ------------------------------------------------------------------

def fused_core(mode: str = "fused") -> VerifierCore:
    cfg = VerifierConfig(model={"backend": "synthetic", "vocab_size": 100, "draft": {"backend": "synthetic",
                                                                                      "vocab_size": 100}},
                         speculation={"gamma": 3, "mode": mode})
    backend = Colocated(SyntheticTarget(100, ComputeProfile(verify_base_s=0.01)),
                        SyntheticDraft(100, 0.8, ComputeProfile(draft_token_s=0.001)))
    return VerifierCore(cfg, backend)


def run_compute(core, action, now):
    w = action.work
    result = core.backend.extend(w.session, w.tokens) if isinstance(w, DraftWork) else core.backend.verify(list(w.requests))
    return core.on_compute_done(result, core.backend.cost_s(w) or 0.001, now)


def open_session(core) -> list:
    core.on_frame(b"p", P.encode(P.Hello("d0", "synthetic", core.backend.fingerprint, 100, ["ids"], False)), 0.0)
    core.on_frame(b"p", P.encode(P.Start("s", np.array([1, 2, 3], np.int32), 20, 0.0, "ids", 0, 3, 0.0)), 0.0)
    (prefill,) = [a for a in core.decide(0.0) if isinstance(a, Compute)]
    assert isinstance(prefill.work, VerifyWork)
    return run_compute(core, prefill, 0.1)


def test_a_fused_session_is_drafted_by_the_verifier_and_refuses_the_drafters_windows():
    core = fused_core()
    sent = [P.decode(a.frame) for a in open_session(core) if isinstance(a, Send)]
    assert sent[0].fused and sent[0].drafted is None                 # the prefill's verdict hands the session over
    (draft,) = core.decide(0.1)
    assert isinstance(draft.work, DraftWork) and draft.work.tokens == 3
    # a window from the drafter now is refused (one ERROR), and the session carries on
    out = core.on_frame(b"p", P.encode(P.Draft.from_tokens("s", 1, 4, [], "ids", 100, 0.1, 0.0, 0.0)), 0.1)
    assert out == []                                                 # it arrived during the draft: held
    acts = run_compute(core, draft, 0.2)
    errors = [P.decode(a.frame) for a in acts if isinstance(a, Send)]
    assert [e.code for e in errors] == ["bad_round"] and "fused" in errors[0].message
    (batch,) = [a for a in core.decide(0.2) if isinstance(a, Compute)]
    (v,) = [P.decode(a.frame) for a in run_compute(core, batch, 0.3) if isinstance(a, Send)]
    assert v.round == 1 and v.drafted is not None and len(v.drafted) == 3 and v.fused


def test_fused_mode_without_a_draft_model_is_refused():
    cfg = VerifierConfig(model={"backend": "synthetic"}, speculation={"mode": "fused"})
    with pytest.raises(ValueError, match="co-located draft model"):
        VerifierCore(cfg, SyntheticTarget(32000))
    with pytest.raises(ValueError, match="does not share"):
        Colocated(SyntheticTarget(100), SyntheticDraft(200))


def test_a_verdict_must_hold_its_accepted_tokens():
    args = ("s", 1, 3, 5, 4, False, 0.0, 0.0, 0.0, 1, 0)
    with pytest.raises(P.ProtocolError, match="verdict.drafted"):
        P.Verdict(*args, np.array([1, 2], np.int32), True)
    v = P.Verdict(*args, np.array([1, 2, 3, 4], np.int32), True)
    assert P.decode(P.encode(v)) == v


class ScriptedWindows:
    """A speculation policy whose windows are given in advance (one per verified round)."""
    def __init__(self, windows):
        self.windows = list(windows)

    def next_window(self, now, net=None):
        return self.windows.pop(0) if self.windows else 3

    def observe(self, r):
        pass


def test_hybrid_stays_fused_for_the_dwell_after_the_window_leaves_1():
    """DSD's hysteresis: a window of 1 moves the session to the verifier (drafting 1 token), and it stays there for
    fused_dwell more rounds whatever the policy says, then goes back to the drafter."""
    cfg = VerifierConfig(model={"backend": "synthetic", "vocab_size": 100, "draft": {"backend": "synthetic",
                                                                                      "vocab_size": 100}},
                         speculation={"gamma": 3, "mode": "hybrid", "fused_dwell": 2})
    core = VerifierCore(cfg, Colocated(SyntheticTarget(100), SyntheticDraft(100, 0.8)))
    script = [1, 4, 4, 4, 4]                  # after the prefill: fused (1), dwell, dwell, back to the drafter
    core.control.policy_for = lambda requested: ScriptedWindows(script)
    fused_next, now = [], 0.1
    acts = open_session(core)
    while True:
        (v,) = [P.decode(a.frame) for a in acts if isinstance(a, Send)]
        fused_next.append(v.fused)
        if not v.fused:
            break
        (draft,) = core.decide(now)
        assert draft.work.tokens == 1                          # hybrid drafts one token when fused
        run_compute(core, draft, now)
        (batch,) = [a for a in core.decide(now) if isinstance(a, Compute)]
        now += 0.1
        acts = run_compute(core, batch, now)
    assert fused_next == [True, True, True, False]
    assert core.sessions["d0/s"].synced == len(core.sessions["d0/s"].generated)
