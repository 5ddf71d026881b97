"""validate_why names the part of a round where the emulator and the simulator differ, from their event logs."""
from __future__ import annotations

from pathlib import Path

from nodes.events import Draft, EventLog, Start, Verdict, Verify
from testbed.run.validate_why import rounds_of, why


def _run(root: Path, name: str, net_s: float, slow: int, verify_s: float = 0.0175, spread: float = 0.0) -> Path:
    d = root / name
    (d / "events").mkdir(parents=True)
    with EventLog(d / "events" / "d1.jsonl", "d1") as log:
        log.write(Start(t=spread, node="d1", session="s0"))
        for r in range(1, 101):
            extra = 0.25 if r <= slow else 0.0        # a TCP timeout in this round
            log.write(Draft(t=r, node="d1", session="s0", round=r, gamma=4, draft_s=0.008))
            log.write(Verdict(t=r + 0.05, node="d1", session="s0", round=r, rtt_s=net_s + extra + 0.001 + verify_s,
                              queue_s=0.001, verify_s=verify_s))
    with EventLog(d / "events" / "d2.jsonl", "d2") as log:
        log.write(Start(t=0.0, node="d2", session="s0"))
    with EventLog(d / "events" / "verifier.jsonl", "verifier") as log:
        for b in range(1, 101):
            log.write(Verify(t=b, node="verifier", drafter="d1", session="s0", round=b, batch=1, batch_id=b,
                             verify_s=verify_s))
    return d


def test_parts_of_rounds(tmp_path):
    p = rounds_of(_run(tmp_path, "a", 0.006, slow=7))
    assert p["rounds"] == 100 and abs(p["network_s"] - 0.006) < 1e-9 and p["recoveries"] == 7
    assert abs(p["verify_s"] - 0.0175) < 1e-12 and p["batch"] == 1 and abs(p["draft_s"] - 0.008) < 1e-12


def test_why_names_the_parts_that_differ(tmp_path):
    emu, sim = _run(tmp_path, "emu", 0.0064, slow=2, spread=0.1), _run(tmp_path, "sim", 0.0050, slow=12)
    text = why(emu, sim)["why"]
    assert "network + frame costs per round sim 5 ms vs emu 6.4 ms (-22 %)" in text
    assert "TCP recoveries sim 12 vs emu 2" in text and "more than chance" in text
    assert "spread over 100 ms on the emulator" in text
    assert "verify time" not in text and "drafting" not in text      # equal parts are not named
    same = why(_run(tmp_path, "x", 0.005, slow=3), _run(tmp_path, "y", 0.005, slow=4))["why"]
    assert "network" not in same and "within the loss draws' chance" in same


def test_why_names_a_later_last_session_that_moves_only_total_goodput(tmp_path):
    import json
    emu, sim = _run(tmp_path, "emu", 0.005, slow=0), _run(tmp_path, "sim", 0.005, slow=0)
    (emu / "metrics.json").write_text(json.dumps({"total": {"window_s": 6.46}}))
    (sim / "metrics.json").write_text(json.dumps({"total": {"window_s": 6.12}}))
    assert "the run's window (first start to last verdict) sim 6.12 s vs emu 6.46 s" in why(emu, sim)["why"]
    (sim / "metrics.json").write_text(json.dumps({"total": {"window_s": 6.40}}))
    assert "window" not in why(emu, sim)["why"]
