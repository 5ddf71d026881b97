"""Distributed speculative decoding with the embedded default real models is lossless.

SmolLM2-135M (target, verifier) and its int8 copy (draft, three drafter processes) over ZeroMQ on loopback:
every greedy output must equal the target's own `generate(do_sample=False)` token for token, for gamma 1, 4
and 8, with proactive drafting on and off, and for the autoregressive baseline (gamma 0).
One verifier serves all drafters, so its batches mix sessions of different drafters and lengths.
"""
import pytest

from nodes.backends import DraftToken, Sampling, VerifyRequest
from tests.nodeproc import finish, read_jsonl, start_drafter, verifier

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "The three primary colors are", "Photosynthesis is the process by which"]
MAX_NEW = 20


@pytest.fixture(scope="module")
def target():
    from nodes.backends.hf import HfTarget
    return HfTarget("smollm2-135m", threads=2)


@pytest.fixture(scope="module")
def reference(target):
    """The target model's own greedy continuation of each prompt."""
    out = {}
    for p in PROMPTS:
        ids = target.tokenizer(p, return_tensors="pt")["input_ids"]
        gen = target.model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False)
        out[p] = gen[0, ids.shape[1]:].tolist()
    return out


def run_drafters(tmp_path, configs, verifier_args=()):
    """configs: name -> extra drafter args. Returns name -> list of session results."""
    prompt_args = [a for p in PROMPTS for a in ("--prompt", p)]
    with verifier("--threads", "1", "--max-batch", "8", *verifier_args, log=tmp_path / "verifier.jsonl") as (_, ep):
        procs = [start_drafter(ep, name, tmp_path / f"{name}.jsonl", *prompt_args, "--max-new", str(MAX_NEW),
                               "--sessions", "2", "--threads", "1", *extra, log=tmp_path / f"{name}.events.jsonl")
                 for name, extra in configs.items()]
        finish(procs)
    return {name: read_jsonl(tmp_path / f"{name}.jsonl") for name in configs}


@pytest.mark.parametrize("proactive", ["--proactive", "--no-proactive"])
def test_greedy_speculative_equals_target_generate(tmp_path, reference, proactive):
    record = tmp_path / "g4.acceptance.jsonl"
    configs = {f"g{g}": ["--gamma", str(g), proactive] for g in (1, 4, 8)}
    configs["g4"] += ["--record-acceptance", str(record)]
    results = run_drafters(tmp_path, configs)
    # The real-model run is recorded in the synthetic backend's replay format, one line per round.
    recorded = read_jsonl(record)
    assert len(recorded) == sum(s["rounds"] for s in results["g4"])
    assert sum(r["accepted"] for r in recorded) == sum(s["accepted"] for s in results["g4"])
    assert all(r["gamma"] == 4 for r in recorded)
    for name, sessions in results.items():
        assert len(sessions) == len(PROMPTS)
        for s in sessions:
            assert s["tokens"] == reference[s["prompt"]], f"{name} {s['prompt']!r}"
        accepted = sum(s["accepted"] for s in sessions) / sum(s["proposed"] for s in sessions)
        assert 0.2 < accepted < 1.0, f"{name}: acceptance {accepted:.2f} is implausible for an int8 self-draft"
    hits = sum(s["proactive_hits"] for ss in results.values() for s in ss)
    assert (hits > 0) == (proactive == "--proactive")
    batches = [e["batch"] for e in read_jsonl(tmp_path / "verifier.jsonl") if e["event"] == "verify"]
    assert max(batches) > 1, "the verifier never batched sessions together"


def test_autoregressive_baseline_equals_target_generate(tmp_path, reference):
    results = run_drafters(tmp_path, {"ar": ["--gamma", "0"]})
    for s in results["ar"]:
        assert s["tokens"] == reference[s["prompt"]]
        # One target token per round trip: the prefill gives the first, each empty draft one more.
        assert s["proposed"] == 0 and s["rounds"] + 1 == len(s["tokens"])


def test_batched_and_one_by_one_verification_agree(target):
    """8 sessions of different lengths, 4 rounds: one batched pass per round vs one pass per session."""
    import copy
    alone = copy.copy(target)
    alone.sessions = {}
    prompts = [PROMPTS[i % 5] * (1 + i % 3) for i in range(8)]
    for t in (target, alone):
        for i, p in enumerate(prompts):
            t.open(f"s{i}", t.tokenizer(p)["input_ids"])
    greedy = Sampling()
    first = [VerifyRequest(f"s{i}", [], greedy) for i in range(8)]
    assert [(r.accepted, r.token) for r in target.verify(first)] == \
           [(r.accepted, r.token) for q in first for r in alone.verify([q])]
    for rnd in range(4):
        # Drafts: the target's own next tokens with one position corrupted per session, so acceptance varies.
        reqs = []
        for i in range(8):
            ref = target.sessions[f"s{i}"].tokens
            guess = reference_continuation(target, ref, 6)
            if (i + rnd) % 3:
                guess[(i + rnd) % 6] = (guess[(i + rnd) % 6] + 1) % target.vocab_size
            reqs.append(VerifyRequest(f"s{i}", [DraftToken(t) for t in guess[:1 + (i + rnd) % 6]], greedy))
        batched = [(r.accepted, r.token) for r in target.verify(reqs)]
        single = [(r.accepted, r.token) for q in reqs for r in alone.verify([q])]
        assert batched == single, f"round {rnd}"
        assert len({a for a, _ in batched}) > 1, "acceptance should vary across sessions"
    for i in range(8):
        assert target.sessions[f"s{i}"].tokens == alone.sessions[f"s{i}"].tokens


def reference_continuation(target, tokens, n):
    import torch
    with torch.inference_mode():
        out = target.model.generate(torch.tensor([tokens]), max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[0, len(tokens):].tolist()
