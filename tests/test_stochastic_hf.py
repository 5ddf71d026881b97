"""Stochastic verification through the real HfTarget is lossless.

Each trial opens a fresh target session on a fixed prompt and verifies one draft token that the int8 draft model
sampled from its top-8 truncated q (temperature 1). Verification runs in batches of 16 sessions. The first
generated token (the draft token if accepted, else the correction) must follow the target's own distribution
p(. | prompt). Test: chi-square goodness of fit over 2000 trials at significance 0.001, bins with an expected
count below 5 merged into one.
"""
import math

import numpy as np
import pytest
import torch

from nodes.backends import Sampling, VerifyRequest
from nodes.verification import sample_draft_token, softmax

PROMPT = "My favourite colour is"
TRIALS, BATCH = 2000, 16


def chi2_sf(x: float, df: int) -> float:
    """Survival function of the chi-square distribution (regularised upper incomplete gamma, by series)."""
    a, z = df / 2, x / 2
    term = total = 1 / a
    k = 1
    while term > 1e-15 * total and k < 10_000:
        term *= z / (a + k)
        total += term
        k += 1
    lower = math.exp(a * math.log(z) - z - math.lgamma(a)) * total
    return max(0.0, 1 - lower)


@pytest.fixture(scope="module")
def models():
    from nodes.backends.hf import HfDraft, HfTarget
    return HfTarget("smollm2-135m"), HfDraft("smollm2-135m:int8")


def test_first_token_follows_target_distribution(models):
    target, draft = models
    sampling = Sampling(temperature=1.0, payload="topk:8", seed=1)
    ids = target.tokenizer(PROMPT)["input_ids"]
    with torch.inference_mode():
        p = softmax(target.model(torch.tensor([ids])).logits[0, -1].double().numpy(), 1.0)
        q_row = softmax(draft.model(torch.tensor([ids])).logits[0, -1].double().numpy(), 1.0)
    rng = np.random.default_rng(7)
    counts: dict[int, int] = {}
    accepted = 0
    for start in range(0, TRIALS, BATCH):
        reqs = []
        for i in range(start, start + BATCH):
            target.open(f"t{i}", ids)
            d = sample_draft_token(q_row, sampling, rng)
            reqs.append(VerifyRequest(f"t{i}", [d], sampling, np.random.default_rng(1000 + i)))
        for req, res in zip(reqs, target.verify(reqs)):
            tok = req.draft[0].token if res.accepted else res.token
            counts[tok] = counts.get(tok, 0) + 1
            accepted += res.accepted
            target.close(req.session)
    expected = p * TRIALS
    big = [t for t in range(len(p)) if expected[t] >= 5]
    observed = [counts.get(t, 0) for t in big] + [TRIALS - sum(counts.get(t, 0) for t in big)]
    exp = [expected[t] for t in big] + [TRIALS - sum(expected[t] for t in big)]
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, exp) if e > 0)
    pvalue = chi2_sf(stat, len(big))
    assert 0.2 < accepted / TRIALS < 1.0          # both paths (accept and correct) were exercised
    assert len(big) >= 3
    assert pvalue > 0.001, f"chi2 {stat:.1f} on {len(big)} df, p = {pvalue:.2g}"
