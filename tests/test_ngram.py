"""The `ngram` prompt-lookup drafter (nodes/backends/ngram.py): its lookup, commit semantics and payloads, the
config pairing rules, and losslessness with the real hf verifier (SmolLM2-135M): greedy output equal to the
target's own generate() for gamma 4 and 8, and under sampling the first token distributed as the target's p.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from nodes import protocol as P
from nodes.backends import Sampling
from nodes.backends.ngram import NgramDraft
from nodes.verification import stochastic_verify
from tests.test_stochastic_hf import chi2_sf

GREEDY = Sampling()


def draft(n=3, vocab=50):
    return NgramDraft(n, vocab_size=vocab)


def extend(d, prompt, k, sampling=GREEDY, sid="s"):
    d.open(sid, prompt, sampling)
    return [t.token for t in d.extend(sid, k)]


# ------------------------------------------------------------------------------------------ lookup

def test_most_recent_earlier_occurrence():
    assert extend(draft(), [1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3], 1) == [7]
    assert extend(draft(n=1), [4, 1, 8, 4, 1, 6, 1], 1) == [6]


def test_longest_suffix_wins_then_falls_back():
    # [1 2 3] matched (n=3) beats the more recent [3] (n=1)
    d = draft()
    d.open("s", [1, 2, 3, 4, 9, 3, 5, 1, 2, 3], GREEDY)
    (t,) = d.extend("s", 1)
    assert (t.token, t.confidence) == (4, 1.0)
    # no earlier [4 9 7] nor [9 7]: the most recent earlier 7 is followed by 4
    d.open("f", [5, 6, 7, 8, 6, 7, 4, 9, 7], GREEDY)
    (t,) = d.extend("f", 1)
    assert (t.token, t.confidence) == (4, pytest.approx(1 / 3))


def test_no_match_repeats_last_token_with_zero_confidence():
    d = draft()
    d.open("s", [1, 2, 3], GREEDY)
    a, b = d.extend("s", 2)
    assert (a.token, a.confidence) == (3, 0.0)
    assert (b.token, b.confidence) == (3, pytest.approx(1 / 3))   # the repeated 3 is now an earlier occurrence
    assert len(d.chain("s")) == 2                                  # always exactly k: the core relies on it


def test_chain_extends_itself_with_unverified_drafts():
    assert extend(draft(), [1, 2, 3, 4, 1, 2], 4) == [3, 4, 1, 2]
    # the most recent occurrence of the suffix [1 2 1] is inside the drafted chain: its follower (2) is a draft
    assert extend(draft(), [1, 2, 1], 4) == [2, 1, 2, 1]


def test_continuation_across_prompt_and_output():
    d = draft()
    d.open("s", [10, 11, 12], GREEDY)
    d.extend("s", 1)                                   # no match: 12
    assert d.commit("s", 0, 20, 1) == 0                # the verifier says 20
    d.extend("s", 1)
    assert d.commit("s", 0, 21, 1) == 0
    d.extend("s", 1)
    assert d.commit("s", 0, 11, 1) == 0
    assert d.tokens("s") == [10, 11, 12, 20, 21, 11]
    assert [t.token for t in d.extend("s", 3)] == [12, 20, 21]   # [11] → 12 (prompt), [11 12] → 20 (output), ...


def reference(seq, n_max):
    """The lookup from scratch: the follower of the most recent earlier occurrence of the longest suffix."""
    for n in range(min(n_max, len(seq) - 1), 0, -1):
        for f in range(len(seq) - 1, n - 1, -1):
            if seq[f - n:f] == seq[len(seq) - n:]:
                return seq[f]
    return seq[-1]


@pytest.mark.parametrize("seed", range(5))
def test_incremental_index_equals_lookup_from_scratch(seed):
    """Random small-vocabulary sessions with random verdicts and proactive hits, against a brute-force lookup."""
    rnd = random.Random(seed)
    n_max = rnd.randint(1, 4)
    d = draft(n=n_max, vocab=6)
    d.open("s", [rnd.randrange(6) for _ in range(rnd.randint(1, 12))], GREEDY)
    for _ in range(60):
        seq = d.tokens("s") + [t.token for t in d.chain("s")]
        for t in d.extend("s", rnd.randint(1, 4)):
            assert t.token == reference(seq, n_max)
            seq.append(t.token)
        chain = d.chain("s")
        window = rnd.randint(0, len(chain))
        accepted = rnd.randint(0, window)
        token = chain[window].token if accepted == window and window < len(chain) and rnd.random() < 0.5 \
            else rnd.randrange(6)
        d.commit("s", accepted, token, window)


# ------------------------------------------------------------------------------------------ commit

def test_commit_semantics():
    d = draft()
    d.open("s", [1, 2, 3, 4, 5, 1, 2], GREEDY)
    d.extend("s", 5)                                          # 3 4 5 1 2
    assert d.commit("s", 1, 9, 3) == 0                        # keep 3, then 9; the rest is dropped
    assert d.tokens("s")[-2:] == [3, 9] and d.chain("s") == []
    d.extend("s", 4)
    drafted = [t.token for t in d.chain("s")]
    # proactive hit: all 2 of the window accepted and the verifier's token is the next draft
    assert d.commit("s", 2, drafted[2], 2) == 1
    assert d.tokens("s")[-3:] == drafted[:3] and [t.token for t in d.chain("s")] == drafted[3:]
    d.extend("s", 2)
    assert d.commit("s", 1, 0 if d.chain("s")[1].token else 1, 1) == 0    # all accepted but the guess missed
    assert d.chain("s") == []
    with pytest.raises(ValueError):
        d.commit("s", 1, 0, 2)                                # more than was drafted
    with pytest.raises(KeyError):
        d.extend("nope", 1)


# ------------------------------------------------------------------------------------------ payloads

@pytest.mark.parametrize("payload", ["topk:1", "topk:4", "full"])
def test_one_hot_payload_travels(payload):
    V = 50
    s = Sampling(0.8, payload, 3)
    d = draft(vocab=V)
    d.open("s", [7, 8, 9, 49, 7, 8], s)
    toks = d.extend("s", 3)
    assert [t.token for t in toks] == [9, 49, 7]
    for t in toks:
        if payload == "full":
            assert t.q_ids is None and t.q_probs.shape == (V,) and t.q_probs[t.token] == 1 and t.q_probs.sum() == 1
        else:
            k = s.top_k
            assert t.q_ids.dtype == np.int32 and len(set(t.q_ids.tolist())) == k and t.q_ids[0] == t.token
            assert t.q_probs.tolist() == [1.0] + [0.0] * (k - 1) and t.q_ids.max() < V
    frame = P.encode(P.Draft.from_tokens("s", 1, 6, toks, payload, V, 0.0))
    back = P.decode(frame).draft_tokens()                      # the frame validates (distinct ids, sum 1, q(x) > 0)
    assert [t.token for t in back] == [9, 49, 7]
    assert all(b.q_probs[0 if payload != "full" else b.token] == 1 for b in back)


@pytest.mark.parametrize("payload", ["topk:3", "full"])
def test_one_hot_q_rejection_sampling_is_lossless(payload):
    """Verification maths alone: a fixed p, the ngram's one-hot q on token 2; the output follows p."""
    p = np.array([0.1, 0.2, 0.35, 0.05, 0.3])
    d = draft(vocab=5)
    d.open("s", [2, 2], Sampling(1.0, payload))
    (x,) = d.extend("s", 1)
    assert x.token == 2
    rng = np.random.default_rng(5)
    trials = 20000
    counts = np.zeros(5)
    for _ in range(trials):
        n, tok = stochastic_verify([x], np.stack([p, p]), rng)
        counts[2 if n else tok] += 1
    stat = float(((counts - p * trials) ** 2 / (p * trials)).sum())
    assert chi2_sf(stat, 4) > 0.001, counts


# ------------------------------------------------------------------------------------------ configs

def test_config_pairing():
    from nodes.config import DraftModel, VerifierModel
    from testbed.common.errors import ConfigError
    from testbed.run.experiment import experiment_from_dict
    from testbed.run.schema import DrafterOverride
    from tests.test_experiment import STAR
    assert DraftModel(backend="ngram", ngram_n=2).ngram_n == 2
    assert DrafterOverride(backend="ngram", ngram_n=4).ngram_n == 4
    with pytest.raises(ValueError):
        VerifierModel(backend="ngram")
    with pytest.raises(ValueError):
        DraftModel(backend="ngram", ngram_n=0)
    exp = experiment_from_dict({"name": "x", "topology": str(STAR), "drafters": {"backend": "ngram"}})
    assert exp.drafter_settings("d1")["backend"] == "ngram"
    with pytest.raises(ConfigError) as e:
        experiment_from_dict({"name": "x", "topology": str(STAR), "verifier": {"backend": "synthetic"},
                              "drafters": {"backend": "hf", "overrides": {"d2": {"backend": "ngram"}}}})
    text = str(e.value)
    assert "drafters.overrides.d2.backend: ngram drafters need a verifier with backend hf" in text
    with pytest.raises(ConfigError, match="different tokenizers"):
        experiment_from_dict({"name": "x", "topology": str(STAR),
                              "drafters": {"backend": "ngram", "model": "gemma3-270m"}})


def test_drafter_flags_build_an_ngram_config():
    from nodes.config import DrafterConfig, build_config
    from nodes.drafter import config_from_flags, flags
    c = build_config(DrafterConfig, config_from_flags(flags(["--backend", "ngram", "--ngram-n", "5",
                                                               "--prompt", "x"])), "flags")
    assert (c.model.backend, c.model.ngram_n) == ("ngram", 5)


# ------------------------------------------------------------------------------------------ real models

CODE = ("class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n"
        "class Vector:\n    def __init__(self,")
PROMPTS = [CODE, "for i in range(10):\n    print(i)\nfor j in range(10):\n", "The capital of France is"]
MAX_NEW = 20


@pytest.fixture(scope="module")
def target():
    from nodes.backends.hf import HfTarget
    return HfTarget("smollm2-135m", threads=1)


def test_greedy_ngram_drafting_equals_target_generate(tmp_path, target):
    import torch
    from tests.nodeproc import finish, read_jsonl, start_drafter, verifier
    reference = {}
    for p in PROMPTS:
        ids = target.tokenizer(p, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            reference[p] = target.model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False)[0, ids.shape[1]:].tolist()
    configs = {"g4": ["--gamma", "4"], "g8": ["--gamma", "8", "--no-proactive"],
               "t1": ["--gamma", "4", "--temperature", "0.8", "--payload", "topk:1", "--seed", "3"]}
    prompt_args = [a for p in PROMPTS for a in ("--prompt", p)]
    with verifier("--threads", "1", "--max-batch", "8", log=tmp_path / "verifier.jsonl") as (_, ep):
        procs = [start_drafter(ep, name, tmp_path / f"{name}.jsonl", "--backend", "ngram", "--model", "smollm2-135m",
                               *prompt_args, "--max-new", str(MAX_NEW), "--sessions", "2", *extra,
                               log=tmp_path / f"{name}.events.jsonl") for name, extra in configs.items()]
        finish(procs, timeout=300)
    results = {name: read_jsonl(tmp_path / f"{name}.jsonl") for name in configs}
    for name in ("g4", "g8"):
        assert len(results[name]) == len(PROMPTS)
        for s in results[name]:
            assert s["tokens"] == reference[s["prompt"]], f"{name} {s['prompt']!r}"
    code = next(s for s in results["g4"] if s["prompt"] == CODE)
    assert code["accepted"] >= 8, f"the repeated class body should be looked up: {code}"
    assert sum(s["proactive_hits"] for s in results["g4"]) > 0
    sampled = results["t1"]                     # sampled with one-hot q: ran, and some drafts were accepted
    assert len(sampled) == len(PROMPTS) and all(len(s["tokens"]) for s in sampled)
    assert sum(s["accepted"] for s in sampled) > 0


@pytest.mark.parametrize("payload", ["topk:4", "full"])
def test_sampled_first_token_follows_target_distribution(target, payload):
    """The ngram proposes ' blue' (target p ~0.15); 1200 fresh sessions verify it by rejection sampling at
    temperature 1, 100 per batch; the first generated token must follow the target's p (chi-square, 0.001)."""
    import torch
    from nodes.backends import VerifyRequest
    from nodes.verification import softmax
    prompt, trials, batch = "red, green, blue, red, green,", 1200, 100
    sampling = Sampling(1.0, payload, 1)
    ids = target.tokenizer(prompt)["input_ids"]
    with torch.inference_mode():
        p = softmax(target.model(torch.tensor([ids])).logits[0, -1].double().numpy(), 1.0)
    d = NgramDraft(3, vocab_size=target.vocab_size)
    counts: dict[int, int] = {}
    accepted = 0
    for start in range(0, trials, batch):
        reqs = []
        for i in range(start, start + batch):
            target.open(f"t{i}", ids)
            d.open(f"t{i}", ids, sampling)
            reqs.append(VerifyRequest(f"t{i}", d.extend(f"t{i}", 1), sampling, np.random.default_rng(1000 + i)))
        for req, res in zip(reqs, target.verify(reqs)):
            tok = req.draft[0].token if res.accepted else res.token
            counts[tok] = counts.get(tok, 0) + 1
            accepted += res.accepted
            target.close(req.session)
            d.close(req.session)
    x = reqs[0].draft[0].token
    assert 0.05 < accepted / trials < 0.5 and abs(accepted / trials - p[x]) < 0.06
    expected = p * trials
    big = [t for t in range(len(p)) if expected[t] >= 5]
    observed = [counts.get(t, 0) for t in big] + [trials - sum(counts.get(t, 0) for t in big)]
    exp = [expected[t] for t in big] + [trials - sum(expected[t] for t in big)]
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, exp) if e > 0)
    assert len(big) >= 3
    assert chi2_sf(stat, len(big)) > 0.001, f"chi2 {stat:.1f} on {len(big)} df"
