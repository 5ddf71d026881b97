"""Synthetic backends driven directly (no sockets): losslessness against the true sequence, measured
acceptance against alpha, schedules on a fake clock, replay and recording, and compute pacing."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from nodes.backends import Sampling, VerifyRequest
from nodes.core.actions import DraftWork, VerifyWork
from nodes.shell import run_work
from nodes.backends.synthetic import (
    AcceptanceRecorder, AlphaSchedule, ComputeProfile, Replay, SyntheticDraft, SyntheticTarget, parse_alpha,
    session_key, true_token,
)
from testbed.policies.acceptance import mu

V = 32000


class Driver:
    """What a drafter node + verifier do, minus the network: rounds of extend -> batched verify -> commit.
    With proactive=True the drafter drafts a second window before the verdict of the first arrives."""

    def __init__(self, draft, target, n_sessions, gamma, proactive=False, sampling=Sampling(), prompt_len=5):
        self.draft, self.target, self.gamma, self.proactive, self.sampling = draft, target, gamma, proactive, sampling
        self.prompts = {f"s{i}": [100 + i] * prompt_len for i in range(n_sessions)}
        self.out = {s: [] for s in self.prompts}
        self.chain = {s: [] for s in self.prompts}   # mirror of the drafter's unverified chain (DraftTokens)
        self.rounds: list[tuple[int, int]] = []       # (window, accepted) per verified round
        self.hits = 0
        for s, prompt in self.prompts.items():
            draft.open(s, prompt, sampling)
            target.open(s, prompt)
        first = target.verify([VerifyRequest(s, [], sampling) for s in self.prompts])  # prefill
        for s, r in zip(self.prompts, first):
            assert r.accepted == 0
            self.out[s].append(r.token)
            assert draft.commit(s, 0, r.token, 0) == 0

    def step(self):
        requests = []
        for s in self.prompts:
            want = self.gamma * (2 if self.proactive else 1)
            if len(self.chain[s]) < want:
                self.chain[s] += self.draft.extend(s, want - len(self.chain[s]))
            requests.append(VerifyRequest(s, self.chain[s][: self.gamma], self.sampling))
        for req, r in zip(requests, self.target.verify(requests)):
            s, g = req.session, len(req.draft)
            self.rounds.append((g, r.accepted))
            self.out[s] += [d.token for d in req.draft[: r.accepted]] + [r.token]
            hit = r.accepted == g and len(self.chain[s]) > g and self.chain[s][g].token == r.token
            survivors = self.draft.commit(s, r.accepted, r.token, g)
            self.chain[s] = self.chain[s][g + 1:] if hit else []
            assert survivors == len(self.chain[s])
            assert [d.token for d in self.draft.chain(s)] == [d.token for d in self.chain[s]]
            self.hits += hit

    def run(self, n_tokens):
        while min(len(o) for o in self.out.values()) < n_tokens:
            self.step()
        return self

    def truth(self, s, n):
        key = session_key(self.prompts[s], self.sampling.seed)
        return [true_token(key, i, self.target.vocab_size) for i in range(n)]


# ---------------------------------------------------------------------------------------------- lossless

@pytest.mark.parametrize("proactive", [False, True])
@pytest.mark.parametrize("gamma", [1, 4, 8])
def test_output_equals_true_sequence(gamma, proactive):
    d = Driver(SyntheticDraft(V, alpha=0.8, seed=gamma), SyntheticTarget(V), 5, gamma, proactive).run(200)
    for s, out in d.out.items():
        assert out[:200] == d.truth(s, 200)
        assert d.draft.tokens(s) == out                # the drafter's committed view agrees
    if proactive:
        assert d.hits > 0                               # the proactive path was really exercised


def test_lossless_with_tiny_vocabulary_and_seeded_sampling():
    # V = 2: every wrong token is the other one; temperature/seed changes the truth but not losslessness.
    sampling = Sampling(temperature=0.7, payload="topk:2", seed=42)
    d = Driver(SyntheticDraft(2, alpha=0.5), SyntheticTarget(2), 3, 4, True, sampling).run(100)
    for s, out in d.out.items():
        assert out[:100] == d.truth(s, 100)
    assert session_key([1, 2], 0) != session_key([1, 2], 1) != session_key([1, 3], 0)


# ---------------------------------------------------------------------------------------------- acceptance

@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.9])
def test_measured_acceptance_matches_alpha(alpha):
    # gamma = 1: every proposal is tested, so accepted / proposed estimates alpha directly.
    d = Driver(SyntheticDraft(V, alpha=alpha, seed=1), SyntheticTarget(V), 5, 1)
    for _ in range(1000):
        d.step()
    proposed = sum(g for g, _ in d.rounds)
    assert proposed >= 5000
    assert sum(a for _, a in d.rounds) / proposed == pytest.approx(alpha, abs=0.02)


@pytest.mark.parametrize("alpha", [0.3, 0.9])
def test_tokens_per_round_match_formula(alpha):
    # gamma = 4: positions after a rejection are never tested, so alpha = accepted / tested positions, and
    # the mean tokens per round follows (1 - alpha^(gamma+1)) / (1 - alpha).
    d = Driver(SyntheticDraft(V, alpha=alpha, seed=2), SyntheticTarget(V), 5, 4)
    for _ in range(1000):
        d.step()
    accepted = sum(a for _, a in d.rounds)
    tested = sum(a + (a < g) for g, a in d.rounds)
    assert accepted / tested == pytest.approx(alpha, abs=0.02)
    assert np.mean([a + 1 for _, a in d.rounds]) == pytest.approx(mu(4, alpha), rel=0.03)


def test_schedule_switches_alpha_on_fake_clock():
    now = [100.0]
    draft = SyntheticDraft(V, alpha=[[0, 0.9], [10, 0.2]], seed=3, clock=lambda: now[0])
    d = Driver(draft, SyntheticTarget(V), 5, 1)

    def measure():
        start = len(d.rounds)
        for _ in range(1000):
            d.step()
        rounds = d.rounds[start:]
        return sum(a for _, a in rounds) / sum(g for g, _ in rounds)

    assert draft.alpha_now() == 0.9
    assert measure() == pytest.approx(0.9, abs=0.02)
    now[0] += 12.5                                     # 12.5 s after the backend was created
    assert draft.alpha_now() == 0.2
    assert measure() == pytest.approx(0.2, abs=0.02)


def test_alpha_schedule_lookup():
    s = parse_alpha([[0, 0.9], [10, 0.5], [20, 0.1]])
    assert [s.at(t) for t in (0, 9.99, 10, 15, 20, 1e9)] == [0.9, 0.9, 0.5, 0.5, 0.1, 0.1]
    assert parse_alpha([[5, 0.7], [6, 0.3]]).at(0) == 0.7   # before the first point: the first alpha
    assert parse_alpha(0.4) == AlphaSchedule(((0.0, 0.4),)) and parse_alpha(1) == AlphaSchedule(((0.0, 1.0),))


# ---------------------------------------------------------------------------------------------- replay

def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("gamma", [2, 4, 6])
def test_replay_reproduces_recorded_counts(tmp_path, gamma):
    records = [(4, 2), (4, 0), (4, 4), (4, 1), (4, 3)]
    path = write_lines(tmp_path / "r.jsonl", ["# hand-written", ""] +
                       [json.dumps({"gamma": g, "accepted": a}) for g, a in records])
    d = Driver(SyntheticDraft(V, replay=path), SyntheticTarget(V), 1, gamma)
    for _ in range(12):                                # cycles through the file
        d.step()
    assert [a for _, a in d.rounds] == [min(records[i % 5][1], gamma) for i in range(12)]
    assert d.out["s0"] == d.truth("s0", len(d.out["s0"]))


def test_recorder_replay_round_trip(tmp_path):
    path = tmp_path / "rec.jsonl"
    live = Driver(SyntheticDraft(V, alpha=0.6, seed=4), SyntheticTarget(V), 2, 4)
    with AcceptanceRecorder(path) as rec:
        for _ in range(100):
            live.step()
            for g, a in live.rounds[-2:]:
                rec.record(g, a)
    assert len(path.read_text().splitlines()) == 200
    replayed = Driver(SyntheticDraft(V, alpha={"replay": str(path)}), SyntheticTarget(V), 2, 4)
    for _ in range(100):
        replayed.step()
    assert replayed.rounds == live.rounds


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("spec", [1.5, -0.1, True, "0.5", None, [], [[0, 0.5], [0, 0.6]],
                                  [[1, 0.5], [0.5, 0.6]], [[-1, 0.5]], [[0, 2.0]], [[0]], {"foo": 1}])
def test_parse_alpha_rejects_bad_specs(spec):
    with pytest.raises(ValueError):
        parse_alpha(spec)


@pytest.mark.parametrize("lines", [[], ["# only a comment"], ["not json"], ['{"gamma": 2, "accepted": 3}'],
                                   ['{"gamma": 2}'], ['{"gamma": 2, "accepted": -1}'],
                                   ['{"gamma": 2.0, "accepted": 1}'], ['[2, 1]']])
def test_replay_file_errors(tmp_path, lines):
    with pytest.raises(ValueError, match="r.jsonl"):
        parse_alpha({"replay": str(write_lines(tmp_path / "r.jsonl", lines))})


def test_constructor_and_commit_errors(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", ['{"gamma": 1, "accepted": 1}'])
    assert isinstance(SyntheticDraft(V, replay=path).source, Replay)
    with pytest.raises(ValueError):
        SyntheticDraft(V, alpha=0.5, replay=path)
    with pytest.raises(ValueError):
        SyntheticDraft(1)
    with pytest.raises(ValueError):
        ComputeProfile(verify_base_s=-1)
    draft = SyntheticDraft(V)
    draft.open("a", [1], Sampling())
    with pytest.raises(ValueError):
        draft.open("a", [1], Sampling())
    draft.extend("a", 2)
    for accepted, window in [(0, 3), (2, 1), (-1, 1)]:
        with pytest.raises(ValueError):
            draft.commit("a", accepted, 5, window)
    with pytest.raises(KeyError):
        draft.extend("nope", 1)
    target = SyntheticTarget(V)
    target.open("a", [1])
    with pytest.raises(KeyError):
        target.verify([VerifyRequest("a", [], Sampling()), VerifyRequest("b", [], Sampling())])
    with pytest.raises(ValueError):
        target.verify([VerifyRequest("a", [], Sampling())] * 2)
    assert target.verify([VerifyRequest("a", [], Sampling())])[0].token == true_token(session_key([1], 0), 0, V)


def test_node_facing_helpers():
    # The drafter node builds it positionally (vocab, alpha, profile) and uses chain/encode/decode/eos.
    draft = SyntheticDraft(300, parse_alpha(0.5), ComputeProfile(draft_token_s=0.0), seed=7)
    assert draft.profile == ComputeProfile() and draft.seed == 7 and draft.eos_token_id is None
    assert draft.encode("hé") == [104, 0xC3 % 300, 0xA9 % 300]
    assert draft.decode([5, 17]) == "5 17"
    draft.open("a", draft.encode("hi"), Sampling())
    made = draft.extend("a", 3)
    assert [d.token for d in draft.chain("a")] == [d.token for d in made]


def test_identity_and_payload_shapes():
    draft, target = SyntheticDraft(V), SyntheticTarget(V, eos_token_id=2)
    assert draft.fingerprint == target.fingerprint == f"synthetic-v1:{V}"
    assert draft.model_id == target.model_id == "synthetic" and target.eos_token_id == 2
    draft.open("k", [1], Sampling(1.0, "topk:3"))
    draft.open("f", [1], Sampling(1.0, "full"))
    draft.open("g", [1], Sampling())
    k, f, g = draft.extend("k", 1)[0], draft.extend("f", 1)[0], draft.extend("g", 1)[0]
    assert k.q_ids.dtype == np.int32 and len(k.q_ids) == 3 and k.q_ids[0] == k.token
    assert k.q_probs.dtype == np.float32 and abs(float(k.q_probs.sum()) - 1) < 1e-6
    assert f.q_ids is None and f.q_probs.shape == (V,) and int(np.argmax(f.q_probs)) == f.token
    assert g.q_ids is None and g.q_probs is None


# ---------------------------------------------------------------------------------------------- pacing

def test_verify_paces_to_profile():
    """The backend says what the batch costs; the shell's run_work paces to it (a simulator would not)."""
    target = SyntheticTarget(V, ComputeProfile(verify_base_s=0.020))
    for s in "abc":
        target.open(s, [1, 2, 3])
    work = VerifyWork(tuple(VerifyRequest(s, [], Sampling()) for s in "abc"))
    assert target.cost_s(work) == pytest.approx(0.020)
    start = time.perf_counter()
    results, measured = run_work(target, work)
    wall = time.perf_counter() - start
    assert measured <= wall
    assert 0.020 <= wall < 0.040
    assert all(r.compute_s == pytest.approx(wall / 3, rel=0.1) for r in results)
    assert sum(r.compute_s for r in results) >= 0.020


def test_verify_cost_counts_tokens_and_sequences():
    target = SyntheticTarget(V, ComputeProfile(verify_per_token_s=0.001, verify_per_seq_s=0.002))
    target.open("a", [1] * 10)
    [first], _ = run_work(target, VerifyWork((VerifyRequest("a", [], Sampling()),)))   # prefill: 10 tokens fed
    assert first.extra == {"fed": 10, "batch": 1} and first.compute_s >= 0.012
    draft = SyntheticDraft(V, alpha=1.0, profile=ComputeProfile(draft_token_s=0.005))
    draft.open("a", [1] * 10, Sampling())
    draft.commit("a", 0, first.token, 0)
    tokens, draft_s = run_work(draft, DraftWork("a", 4))
    assert 0.020 <= draft_s < 0.040
    [later], _ = run_work(target, VerifyWork((VerifyRequest("a", tokens, Sampling()),)))   # 1 + 4 tokens fed
    assert later.accepted == 4 and later.extra["fed"] == 5 and later.compute_s >= 0.007
