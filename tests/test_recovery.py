"""Recovery semantics (nodes/core/recovery.py) on the node cores, on a scripted clock: a verifier that restarts
loses every session and the drafters resume them from their committed tokens; a verifier that stalls is waited
for; a drafter that restarts has its old sessions dropped. Lossless: every output equals the unfaulted run's and
the target's own greedy continuation, token for token."""
from __future__ import annotations

import numpy as np
import pytest

from nodes import events as E
from nodes import protocol as P
from nodes.backends.synthetic import ComputeProfile, SyntheticTarget, session_key, true_token
from nodes.config import VerifierConfig
from nodes.core.actions import Send
from nodes.core.recovery import VerifierWatch
from nodes.core.verifier import VerifierCore
from tests.test_cores import DRAFTERS, MAX_NEW, REQUESTS, V, ScriptedRun


class FaultyRun(ScriptedRun):
    """ScriptedRun whose verifier dies at `down_at` and comes back `down_s` later, as a new process (restart) or
    as the same one (stall: SIGSTOP/SIGCONT). While it is down, frames sent to it wait in the sender's queue, as
    ZeroMQ keeps them, and arrive in order when it is back; what the dead process held (its queue, the batch it
    was verifying) is gone."""

    def __init__(self, down_at: float, down_s: float, restart: bool):
        super().__init__()
        self.down_at, self.down_s, self.restart = down_at, down_s, restart
        self.down = False
        self.held: list[tuple[str, bytes]] = []
        self.at(down_at, self.fail)
        self.at(down_at + down_s, self.recover)

    def fail(self) -> None:
        self.down = True

    def recover(self) -> None:
        self.down = False
        if self.restart:
            vcfg = VerifierConfig(model={"backend": "synthetic", "vocab_size": V, "verify_base_ms": 3.0},
                                  batching={"max_batch": 8})
            self.verifier = VerifierCore(vcfg, SyntheticTarget(V, ComputeProfile(verify_base_s=3e-3)), incarnation=2)
        held, self.held = self.held, []
        for peer, frame in held:
            self.to_verifier(peer, frame)

    def to_verifier(self, peer: str, frame: bytes) -> None:
        if self.down:
            self.held.append((peer, frame))
        else:
            super().to_verifier(peer, frame)

    def compute(self, who: str, work) -> None:
        if who != "verifier":
            return super().compute(who, work)
        core = self.verifier
        cost = core.backend.cost_s(work)
        result = core.backend.verify(list(work.requests))

        def done(core=core, result=result):
            if self.down:                      # it finishes when the process runs again (a stall) ...
                return self.at(self.down_at + self.down_s, done)
            if core is not self.verifier:      # ... or never (the process died with its batch)
                return
            self.handle("verifier", core.on_compute_done(result, cost, self.now))
            self.handle("verifier", core.decide(self.now))
        self.at(self.now + cost, done)

    def timer(self, who: str, t: float) -> None:
        if who == "verifier" and self.down:
            return self.at(self.down_at + self.down_s, lambda: super(FaultyRun, self).timer(who, t))
        super().timer(who, t)


def recoveries(run: ScriptedRun, what: str) -> list[E.Recovery]:
    return [e for evs in run.events.values() for e in evs if isinstance(e, E.Recovery) and e.what == what]


def outputs(run: ScriptedRun) -> dict[str, list[int]]:
    return {r["session"] + "@" + r["drafter"]: r["tokens"] for r in run.outputs}


@pytest.fixture(scope="module")
def clean_run() -> ScriptedRun:
    return ScriptedRun().run()


def test_a_restarted_verifier_has_every_session_resumed_from_its_committed_tokens(clean_run):
    faulty = FaultyRun(down_at=0.15, down_s=1.0, restart=True).run()
    assert all(core.done for core in faulty.drafters.values())
    assert outputs(faulty) == outputs(clean_run) and len(faulty.outputs) == REQUESTS * len(DRAFTERS)
    for r in faulty.outputs:                       # the target's own continuation, not only the clean run's
        key = session_key(r["prompt_tokens"], 100 + list(DRAFTERS).index(r["drafter"]))
        assert r["tokens"] == [true_token(key, j, V) for j in range(MAX_NEW)]
    restarted, resumed = recoveries(faulty, "verifier_restarted"), recoveries(faulty, "resumed")
    assert {e.node for e in restarted} == set(DRAFTERS)          # every drafter noticed
    assert resumed and any(e.committed > 0 for e in resumed)     # mid-session: committed tokens re-prefilled
    assert recoveries(faulty, "probe")                           # noticed by probing the silent verifier


def test_a_stalled_verifier_is_waited_for_and_nothing_is_resumed(clean_run):
    stalled = FaultyRun(down_at=0.15, down_s=4.0, restart=False).run()
    assert outputs(stalled) == outputs(clean_run)
    assert recoveries(stalled, "probe") and not recoveries(stalled, "verifier_restarted")
    assert not recoveries(stalled, "resumed")


def test_a_restart_before_any_verdict_resumes_sessions_with_nothing_committed(clean_run):
    early = FaultyRun(down_at=0.012, down_s=0.5, restart=True).run()
    assert outputs(early) == outputs(clean_run)
    assert any(e.committed == 0 for e in recoveries(early, "resumed"))


def _verifier() -> VerifierCore:
    cfg = VerifierConfig(model={"backend": "synthetic", "vocab_size": V})
    return VerifierCore(cfg, SyntheticTarget(V), incarnation=7)


def _hello(incarnation: int) -> bytes:
    t = SyntheticTarget(V)
    return P.encode(P.Hello("d0", "synthetic", t.fingerprint, V, ["ids"], False, incarnation))


def _start(sid: str, committed=(), round_: int = 0) -> bytes:
    return P.encode(P.Start(sid, np.array([1, 2, 3], dtype=np.int32), 20, 0.0, "ids", 5, 4, 0.0,
                            np.array(committed, dtype=np.int32), round_))


def test_a_restarted_drafter_has_its_old_sessions_dropped_and_welcome_names_the_incarnation():
    v = _verifier()
    (welcome,) = [a for a in v.on_frame("d0", _hello(1), 0.0) if isinstance(a, Send)]
    assert P.decode(welcome.frame).incarnation == 7
    v.on_frame("d0", _start("d0-s0"), 0.0)
    assert "d0/d0-s0" in v.sessions
    v.on_frame("d0", _hello(1), 0.1)               # the same process probing: nothing dropped
    assert "d0/d0-s0" in v.sessions
    acts = v.on_frame("d0", _hello(2), 0.2)        # a new process under the same name
    assert "d0/d0-s0" not in v.sessions
    assert any(getattr(a, "event", None) and isinstance(a.event, E.Recovery) and a.event.sessions == 1 for a in acts)


def test_a_resumed_start_reprefills_the_committed_tokens_and_continues_the_truth():
    v = _verifier()
    v.on_frame("d0", _hello(1), 0.0)
    key = session_key([1, 2, 3], 5)
    committed = [true_token(key, j, V) for j in range(6)]
    v.on_frame("d0", _start("d0-s0", committed, 9), 0.0)
    s = v.sessions["d0/d0-s0"]
    assert s.round == 9 and s.committed == 3 + 6 and s.generated == committed
    (batch,) = [a for a in v.decide(0.0) if hasattr(a, "work")]
    (result,) = v.backend.verify(list(batch.work.requests))
    assert result.token == true_token(key, 6, V)   # the next token of the unfaulted sequence
    assert result.extra["fed"] == 3 + 6             # prompt and committed tokens prefilled together


@pytest.mark.parametrize("committed, round_, field", [([1] * 20, 3, "start.committed"), ([1, 2], 0, "start.round")])
def test_a_resumed_start_is_validated(committed, round_, field):
    with pytest.raises(P.ProtocolError) as e:
        _start("d0-s0", committed, round_)
    assert field in str(e.value)


def test_the_watch_probes_a_silent_verifier_once_per_interval_and_spots_a_new_incarnation():
    w = VerifierWatch(probe_s=0.3)
    assert not w.welcomed("v", 1, now=0.7)
    assert w.due({"v"}) == 0.7 + 0.3
    assert w.to_probe({"v"}, 0.9) == []             # not silent long enough
    assert w.to_probe({"v"}, 0.7 + 0.3) == ["v"]    # exactly at due() (floating point: the same sum)
    assert w.to_probe({"v"}, 1.1) == []             # probed 0.1 s ago
    assert w.to_probe(set(), 1.2, force="v") == []  # a lost-state error still waits for the interval
    assert w.to_probe(set(), 1.4, force="v") == ["v"]
    assert w.to_probe(set(), 1.5) == []             # nothing in flight: nothing to ask
    assert not w.welcomed("v", 1, 1.6) and w.welcomed("v", 2, 1.7)
