"""The node cores on a scripted clock, with no sockets: the same tokens and the same per-round accepted counts as
the ZeroMQ processes with the synthetic backend and the same seeds; and determinism of the scripted runs."""
from __future__ import annotations

import heapq
import itertools

import pytest

from nodes import events as E
from nodes.backends.synthetic import ComputeProfile, SyntheticDraft, SyntheticTarget, parse_alpha, session_key, true_token
from nodes.config import DrafterConfig, VerifierConfig
from nodes.core.actions import Compute, DraftWork, Output, Record, Send, WakeAt
from nodes.core.drafter import DrafterCore
from nodes.core.verifier import VerifierCore
from tests.nodeproc import finish, read_jsonl, start_drafter, verifier

V = 500
PROMPTS = ["alpha beta", "gamma delta epsilon", "zeta", "eta theta iota kappa"]
DRAFTERS = {"d0": 0.9, "d1": 0.7, "d2": 0.4}        # name -> alpha
MAX_NEW, GAMMA, SESSIONS, REQUESTS = 40, 4, 2, 3


class ScriptedRun:
    """One verifier core and several drafter cores joined by a fixed one-way delay, on a clock that only moves
    from event to event. Compute takes what the synthetic backend's profile says (no sleeping, no wall clock)."""

    def __init__(self, one_way_s: float = 0.01, verify_base_ms: float = 3.0, draft_token_ms: float = 1.0):
        self.now, self.queue, self.seq = 0.0, [], itertools.count()
        self.one_way = one_way_s
        self.events: dict[str, list[E.Event]] = {}
        self.outputs: list[dict] = []
        self.wake: dict[str, float | None] = {}
        vcfg = VerifierConfig(model={"backend": "synthetic", "vocab_size": V, "verify_base_ms": verify_base_ms},
                              batching={"max_batch": 8})
        self.verifier = VerifierCore(vcfg, SyntheticTarget(V, ComputeProfile(verify_base_s=verify_base_ms / 1e3)))
        self.drafters: dict[str, DrafterCore] = {}
        for i, (name, alpha) in enumerate(DRAFTERS.items()):
            cfg = drafter_config(name, i, alpha, draft_token_ms)
            backend = SyntheticDraft(V, parse_alpha(alpha), ComputeProfile(draft_token_s=draft_token_ms / 1e3),
                                     seed=cfg.seed, clock=lambda: self.now)
            self.drafters[name] = DrafterCore(cfg, backend, [(t, backend.encode(t)) for t in PROMPTS])
        self.begun: set[str] = set()

    def at(self, t: float, fn) -> None:
        heapq.heappush(self.queue, (t, next(self.seq), fn))

    def run(self) -> "ScriptedRun":
        self.handle("verifier", self.verifier.on_ready("scripted", self.now))
        for name, core in self.drafters.items():
            frame = core.hello_frame()
            self.at(self.now + self.one_way, lambda n=name, f=frame: self.to_verifier(n, f))
        while self.queue:
            self.now, _, fn = heapq.heappop(self.queue)
            fn()
        return self

    def to_verifier(self, peer: str, frame: bytes) -> None:
        self.handle("verifier", self.verifier.on_frame(peer, frame, self.now))
        self.handle("verifier", self.verifier.decide(self.now))

    def to_drafter(self, name: str, frame: bytes) -> None:
        core = self.drafters[name]
        if name not in self.begun:                     # the answer to HELLO
            self.begun.add(name)
            _, acts = core.on_welcome("scripted://verifier", frame, self.now)
            self.handle(name, acts + core.begin(self.now))
        else:
            self.handle(name, core.on_frames([("verifier", frame)], self.now))

    def timer(self, who: str, t: float) -> None:
        if self.wake.get(who) != t:                    # replaced by a later WakeAt, or already handled
            return
        self.wake[who] = None
        if who == "verifier":
            self.handle(who, self.verifier.decide(self.now))
        else:
            self.handle(who, self.drafters[who].on_timer(self.now))

    def handle(self, who: str, actions) -> None:
        for a in actions:
            if isinstance(a, Send):
                if who == "verifier":
                    self.at(self.now + self.one_way, lambda n=a.to, f=a.frame: self.to_drafter(n, f))
                else:
                    self.at(self.now + self.one_way, lambda n=who, f=a.frame: self.to_verifier(n, f))
            elif isinstance(a, Record):
                self.events.setdefault(who, []).append(a.event)
            elif isinstance(a, Output):
                self.outputs.append(a.result)
            elif isinstance(a, WakeAt):
                self.wake[who] = a.t
                self.at(max(a.t, self.now), lambda w=who, t=a.t: self.timer(w, t))
            elif isinstance(a, Compute):
                self.compute(who, a.work)

    def compute(self, who: str, work) -> None:
        if who == "verifier":
            backend, core = self.verifier.backend, self.verifier
        else:
            backend, core = self.drafters[who].backend, self.drafters[who]
        cost = backend.cost_s(work)
        result = backend.extend(work.session, work.tokens) if isinstance(work, DraftWork) else \
            backend.verify(list(work.requests))

        def done(who=who, core=core, result=result, cost=cost):
            self.handle(who, core.on_compute_done(result, cost, self.now))
            if who == "verifier":
                self.handle(who, self.verifier.decide(self.now))
        self.at(self.now + cost, done)


def drafter_config(name: str, index: int, alpha: float, draft_token_ms: float) -> DrafterConfig:
    return DrafterConfig(name=name, model={"backend": "synthetic", "vocab_size": V, "alpha": alpha,
                                           "draft_token_ms": draft_token_ms},
                         workload={"requests": REQUESTS, "sessions": SESSIONS, "max_new": MAX_NEW},
                         prompt_texts=PROMPTS, prompt_offset=index, speculation={"gamma": GAMMA}, seed=100 + index)


def rounds(events) -> dict[tuple[str, int], tuple[int, int]]:
    """(session, round) -> (window, accepted) of every drafted round."""
    return {(e.session, e.round): (e.gamma, e.accepted) for e in events if isinstance(e, E.Verdict) and e.round}


def test_cores_on_a_scripted_clock_match_the_zeromq_processes(tmp_path):
    scripted = ScriptedRun().run()
    assert all(core.done for core in scripted.drafters.values())
    assert len(scripted.outputs) == REQUESTS * len(DRAFTERS)

    with verifier("--backend", "synthetic", "--vocab-size", str(V), "--max-batch", "8", "--verify-base-ms", "3",
                  log=tmp_path / "verifier.jsonl") as (_, ep):
        procs = []
        for i, (name, alpha) in enumerate(DRAFTERS.items()):
            args = [a for t in PROMPTS for a in ("--prompt", t)]
            procs.append(start_drafter(ep, name, tmp_path / f"{name}.out", "--backend", "synthetic", "--vocab-size",
                                       str(V), "--alpha", str(alpha), "--draft-token-ms", "1", *args,
                                       "--requests", str(REQUESTS), "--sessions", str(SESSIONS), "--max-new",
                                       str(MAX_NEW), "--gamma", str(GAMMA), "--prompt-offset", str(i),
                                       "--seed", str(100 + i), log=tmp_path / f"{name}.jsonl"))
        finish(procs, timeout=120)

    for name in DRAFTERS:
        live = {r["session"]: r["tokens"] for r in read_jsonl(tmp_path / f"{name}.out")}
        mine = {r["session"]: r["tokens"] for r in scripted.outputs if r["drafter"] == name}
        assert mine == live and len(live) == REQUESTS
        for r in scripted.outputs:                     # lossless: the target's own (true) continuation
            if r["drafter"] == name:
                key = session_key(r["prompt_tokens"], 100 + list(DRAFTERS).index(name))
                assert r["tokens"] == [true_token(key, j, V) for j in range(MAX_NEW)]
        live_events, issues = E.read_events(tmp_path / f"{name}.jsonl")
        assert not issues
        assert rounds(scripted.events[name]) == rounds(live_events)
        assert len(rounds(live_events)) > REQUESTS * MAX_NEW / (GAMMA + 1)      # speculative rounds happened
        accepted = [a for _, a in rounds(live_events).values()]
        assert 0 < sum(accepted) < GAMMA * len(accepted)


def test_scripted_runs_are_deterministic_and_take_simulated_time():
    a, b = ScriptedRun().run(), ScriptedRun().run()
    assert a.events == b.events and a.outputs == b.outputs
    finish_t = max(e.t for evs in a.events.values() for e in evs)
    assert 0.1 < finish_t < 60                          # simulated seconds, not the wall clock's epoch
    slower = ScriptedRun(one_way_s=0.05).run()
    by_session = lambda run: {(r["drafter"], r["session"]): r for r in run.outputs}   # noqa: E731
    assert by_session(slower) == by_session(a)          # the network changes the timing (and the order sessions
                                                        # finish in), never the tokens
    assert max(e.t for evs in slower.events.values() for e in evs) > finish_t


def test_verifier_batches_what_arrived_while_it_computed():
    def mean_batch(verify_ms: float) -> float:
        run = ScriptedRun(verify_base_ms=verify_ms).run()
        batches = {e.batch_id: e.batch for e in run.events["verifier"] if isinstance(e, E.Verify)}
        return sum(batches.values()) / len(batches)
    # a slow verifier sees drafts pile up while it computes and verifies them together
    assert mean_batch(50.0) > 1.5 * mean_batch(0.0) and mean_batch(20.0) > mean_batch(0.0)


@pytest.mark.parametrize("policy", ["jsq", "round-robin"])
def test_drafters_that_see_no_load_spread_their_first_placements(policy):
    """Drafter-side JSQ sees only loads reported in verdicts: at the start every verifier reads 0, and ties by name
    sent all 80 of DSD's drafters to the first of 20 targets; every drafter's own round-robin counter started at
    the same first target. Ties are broken at random and counters start at an offset, seeded per drafter."""
    from nodes import protocol as P
    targets = [f"t{i}" for i in range(1, 9)]
    first = {}
    for i in range(16):
        cfg = DrafterConfig(name=f"d{i}", model={"backend": "synthetic", "vocab_size": V},
                            workload={"requests": 1, "max_new": 8}, prompt_texts=PROMPTS,
                            routing={"policy": policy}, seed=1000 + i)
        backend = SyntheticDraft(V, parse_alpha(0.8), ComputeProfile(), seed=cfg.seed, clock=lambda: 0.0)
        core = DrafterCore(cfg, backend, [(t, backend.encode(t)) for t in PROMPTS])
        for t in targets:
            core.on_welcome(f"sim://{t}", P.encode(P.Welcome(t, "synthetic", "synthetic", V)), 0.0)
        routes = [a.event for a in core.begin(0.0) if isinstance(a, Record) and isinstance(a.event, E.Route)]
        first[cfg.name] = routes[0].verifier
    assert len(set(first.values())) >= 4, first
    again = DrafterCore(DrafterConfig(name="d0", model={"backend": "synthetic", "vocab_size": V},
                                      workload={"requests": 1, "max_new": 8}, prompt_texts=PROMPTS,
                                      routing={"policy": policy}, seed=1000), backend, [(t, backend.encode(t))
                                                                                    for t in PROMPTS])
    for t in targets:
        again.on_welcome(f"sim://{t}", P.encode(P.Welcome(t, "synthetic", "synthetic", V)), 0.0)
    assert [a.event.verifier for a in again.begin(0.0) if isinstance(a, Record)
            and isinstance(a.event, E.Route)][0] == first["d0"]          # seeded: the same run places the same


def test_a_timed_drafter_does_not_wake_at_the_same_instant_forever_at_its_end():
    """workload.duration_s: the end's wake-up is at t0 + duration; there `now - t0 < duration` could still hold in
    floating point (0.7 + 0.1 - 0.7 < 0.1), so the drafter asked to be woken at that same instant again and a
    simulated clock never moved on (a simulator run hung at the end of its duration)."""
    cfg = DrafterConfig(name="d0", model={"backend": "synthetic", "vocab_size": V},
                        workload={"duration_s": 0.1, "sessions": 1, "max_new": 8}, prompt_texts=PROMPTS,
                        speculation={"gamma": GAMMA, "proactive": False})
    core = DrafterCore(cfg, SyntheticDraft(V, parse_alpha(0.8)), [(p, [1, 2, 3]) for p in PROMPTS])
    core.on_welcome("sim://v", _welcome(), 0.0)
    core.begin(0.7)
    end = 0.7 + 0.1
    assert end - 0.7 < 0.1                   # the float case itself
    wakes = [a.t for a in core.on_timer(end) if isinstance(a, WakeAt)]
    assert wakes and all(t > end for t in wakes), wakes


def _welcome() -> bytes:
    from nodes import protocol as P
    return P.encode(P.Welcome("v", "synthetic", SyntheticDraft(V).fingerprint, V))
