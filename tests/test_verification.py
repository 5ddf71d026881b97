"""Verification maths: statistical losslessness of speculative sampling (a required acceptance test), greedy
edge cases, the drafter's q, and the tokens-per-round formula.

Goodness of fit is Pearson's chi-square test: bins with expected count < 5 are pooled into one bin (and that
bin into the smallest remaining one if it is still under 5), df = bins - 1, and H0 ("the output follows the
target's own sampling distribution") is rejected at significance 0.001. The chi-square tail comes from the
regularised incomplete gamma function below (scipy is not a dependency)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nodes.backends import DraftToken, Sampling
from nodes.verification import (
    _draw, _top_k_ids, acceptance_probs, expected_accepted, greedy_verify, sample_draft_token, softmax,
    stochastic_verify,
)

SIGNIFICANCE = 0.001
TRIALS = 4000


# ---------------------------------------------------------------------------------------------- chi-square

def chi2_sf(x: float, df: int) -> float:
    """P(chi2_df > x) = Q(df/2, x/2), the regularised upper incomplete gamma (Numerical Recipes gser/gcf)."""
    a, x = df / 2.0, x / 2.0
    if x <= 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # series for the lower function P converges fast here
        term = total = 1.0 / a
        ap = a
        while abs(term) > abs(total) * 1e-16:
            ap += 1
            term *= x / ap
            total += term
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300  # continued fraction (modified Lentz) for Q itself
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return math.exp(log_front) * h


def chi_square(observed: np.ndarray, probs: np.ndarray) -> tuple[float, int, float]:
    """Pearson chi-square of counts against expected probabilities, pooling bins with expected < 5.
    Returns (statistic, df, p-value). An observation in a zero-probability bin is impossible under H0: p = 0."""
    observed = np.asarray(observed, dtype=np.float64).ravel()
    expected = np.asarray(probs, dtype=np.float64).ravel() * observed.sum()
    if np.any((expected == 0) & (observed > 0)):
        return math.inf, 0, 0.0
    small = expected < 5
    obs, exp = list(observed[~small]), list(expected[~small])
    if small.any():
        pooled_o, pooled_e = observed[small].sum(), expected[small].sum()
        if pooled_e < 5 and exp:  # still too small: fold it into the smallest kept bin
            i = int(np.argmin(exp))
            obs[i] += pooled_o
            exp[i] += pooled_e
        else:
            obs.append(pooled_o)
            exp.append(pooled_e)
    o, e = np.array(obs), np.array(exp)
    keep = e > 0
    stat = float(np.sum((o[keep] - e[keep]) ** 2 / e[keep]))
    df = int(keep.sum()) - 1
    return stat, df, chi2_sf(stat, df)


def test_chi2_sf_matches_tables():
    # 95% quantiles from standard tables (and scipy.stats.chi2.ppf(0.95, df)).
    for x, df in [(3.841458820694124, 1), (18.307038053275146, 10), (124.34211340400407, 100)]:
        assert chi2_sf(x, df) == pytest.approx(0.05, abs=1e-9)
    assert chi2_sf(10.827566170662733, 1) == pytest.approx(0.001, abs=1e-9)


# ---------------------------------------------------------------------------------- tiny Markov LMs

def markov_tables(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Target P[prev] and a different draft model Q[prev]: seeded random logit tables, rows at temperature 1.
    Q shares part of P's logits so acceptance is middling (both accepts and rejections are exercised)."""
    rng = np.random.default_rng(seed)
    lp = rng.normal(scale=2.0, size=(vocab, vocab))
    lq = 0.5 * lp + rng.normal(scale=2.0, size=(vocab, vocab))
    return softmax(lp, 1.0), softmax(lq, 1.0)


def always_accept(draft, p_rows, rng):
    """Deliberately wrong verifier (negative control): trusts every draft, bonus from p."""
    return len(draft), _draw(np.asarray(p_rows[len(draft)], dtype=np.float64), rng)


def resample_from_p(draft, p_rows, rng):
    """Subtler wrong verifier (negative control): correct accept test, but the correction is drawn from p
    instead of the residual max(0, p - q), which over-weights tokens the drafter already favours."""
    n, _ = stochastic_verify(draft, p_rows, rng)
    return (n, _draw(np.asarray(p_rows[n], dtype=np.float64), rng)) if n < len(draft) else stochastic_verify(
        [], p_rows[n:], rng)


def generate_two(P, Q, sampling, gamma, verify, rng, start=0) -> tuple[int, int]:
    """Draft -> verify rounds from context `start` until two tokens are out; returns the first two."""
    out: list[int] = []
    prev = start
    while len(out) < 2:
        draft, ctx = [], prev
        for _ in range(gamma):
            dt = sample_draft_token(Q[ctx], sampling, rng)
            draft.append(dt)
            ctx = dt.token
        rows = P[[prev] + [d.token for d in draft]]  # row j: target after prefix + draft[:j]
        n, tok = verify(draft, rows, rng)
        out += [d.token for d in draft[:n]] + [tok]
        prev = out[-1]
    return out[0], out[1]


def run_fit(vocab, gamma, payload, verify, trials=TRIALS, seed=0):
    """Chi-square of (first token) and (first, second) pair against the target's own distribution."""
    P, Q = markov_tables(vocab, seed)
    rng = np.random.default_rng(seed + 1)
    sampling = Sampling(temperature=1.0, payload=payload, seed=seed)
    first = np.zeros(vocab)
    pairs = np.zeros((vocab, vocab))
    for _ in range(trials):
        a, b = generate_two(P, Q, sampling, gamma, verify, rng)
        first[a] += 1
        pairs[a, b] += 1
    return chi_square(first, P[0]), chi_square(pairs, P[0][:, None] * P)


CASES = [(v, g, m) for v in (8, 50) for g in (1, 3) for m in ("topk:3", "full")]


@pytest.mark.parametrize("vocab,gamma,payload", CASES)
def test_stochastic_verification_is_lossless(vocab, gamma, payload):
    (s1, d1, p1), (s2, d2, p2) = run_fit(vocab, gamma, payload, stochastic_verify)
    assert p1 > SIGNIFICANCE, f"first token: chi2={s1:.1f} df={d1} p={p1:.2g}"
    assert p2 > SIGNIFICANCE, f"token pair: chi2={s2:.1f} df={d2} p={p2:.2g}"


@pytest.mark.parametrize("vocab,gamma,payload", [(8, 3, "topk:3"), (50, 1, "full")])
def test_negative_control_always_accept_fails(vocab, gamma, payload):
    (s1, d1, p1), (s2, d2, p2) = run_fit(vocab, gamma, payload, always_accept)
    assert p1 < SIGNIFICANCE and p2 < SIGNIFICANCE, (s1, d1, p1, s2, d2, p2)


def test_negative_control_wrong_correction_fails():
    (s1, d1, p1), (s2, d2, p2) = run_fit(8, 3, "topk:3", resample_from_p)
    assert p1 < SIGNIFICANCE and p2 < SIGNIFICANCE, (s1, d1, p1, s2, d2, p2)


# ---------------------------------------------------------------------------------- greedy

def test_greedy_verify_edge_cases():
    assert greedy_verify([], [7]) == (0, 7)                      # autoregressive step: target token only
    assert greedy_verify([1, 2, 3], [1, 2, 3, 9]) == (3, 9)      # all accepted + bonus
    assert greedy_verify([1, 2, 3], [5, 2, 3, 9]) == (0, 5)      # first rejected: correction
    assert greedy_verify([1, 2, 3], [1, 2, 4, 9]) == (2, 4)      # last rejected
    assert greedy_verify([1, 2, 3], [1, 6, 3, 9]) == (1, 6)      # later agreement does not count
    assert greedy_verify(np.array([4]), np.array([4, 4])) == (1, 4)
    for bad in ([1, 2, 3], [1, 2, 3, 4, 5], []):
        with pytest.raises(ValueError):
            greedy_verify([1, 2, 3], bad)


# ---------------------------------------------------------------------------------- stochastic edge cases

def test_stochastic_verify_edge_cases():
    rng = np.random.default_rng(0)
    p = np.array([[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    # q(x) = 0 (x outside the sparse support): impossible draft, rejected; residual max(0, p-q) is all zero
    # here (p == q on the support), so the correction falls back to p.
    bad = DraftToken(0, np.array([1, 2], np.int32), np.array([0.5, 0.5], np.float32))
    for _ in range(50):
        n, tok = stochastic_verify([bad], p, rng)
        assert n == 0 and tok in (1, 2)
    # p(x) = 0: never accepted, correction from the residual (token 2 only: p - q = [0, -.5, .5]).
    zero_p = DraftToken(0, np.array([0, 1], np.int32), np.array([0.5, 0.5], np.float32))
    p2 = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert all(stochastic_verify([zero_p], p2, rng) == (0, 2) for _ in range(50))
    # p == q: always accepted, bonus from the last row.
    same = DraftToken(1, None, np.array([0.0, 0.5, 0.5], np.float32))
    assert all(stochastic_verify([same], p, rng)[0] == 1 for _ in range(50))
    with pytest.raises(ValueError):
        stochastic_verify([same], p[:1], rng)
    with pytest.raises(ValueError):
        stochastic_verify([DraftToken(1)], p, rng)  # greedy token carries no q
    assert acceptance_probs([same, zero_p], np.vstack([p[0], p2[0]])).tolist() == [1.0, 0.0]


# ---------------------------------------------------------------------------------- drafter's q

def test_softmax_rows_and_stability():
    s = softmax(np.array([[1000.0, 1000.0], [0.0, math.log(3)]]), 1.0)
    assert s.dtype == np.float64 and np.allclose(s, [[0.5, 0.5], [0.25, 0.75]])
    assert np.allclose(softmax(np.array([0.0, 1.0]), 0.5), softmax(np.array([0.0, 2.0]), 1.0))
    with pytest.raises(ValueError):
        softmax(np.zeros(3), 0.0)


def test_sample_draft_token_shapes_and_topk():
    rng = np.random.default_rng(0)
    p = softmax(np.random.default_rng(1).normal(size=100), 1.0)
    g = sample_draft_token(p, Sampling(), rng)
    assert g.token == int(np.argmax(p)) and g.q_ids is None and g.q_probs is None
    t = sample_draft_token(p, Sampling(1.0, "topk:5"), rng)
    assert t.q_ids.dtype == np.int32 and t.q_probs.dtype == np.float32
    assert t.q_ids.tolist() == np.argsort(-p)[:5].tolist() and t.token in t.q_ids.tolist()
    assert abs(float(t.q_probs.sum()) - 1) < 1e-6 and np.all(np.diff(t.q_probs) <= 0)
    assert np.allclose(t.q_probs, p[t.q_ids] / p[t.q_ids].sum(), rtol=1e-6)
    f = sample_draft_token(p, Sampling(1.0, "full"), rng)
    assert f.q_ids is None and f.q_probs.shape == (100,) and f.q_probs.dtype == np.float32
    assert abs(float(f.q_probs.sum()) - 1) < 1e-6
    assert len(sample_draft_token(p[:3] / p[:3].sum(), Sampling(1.0, "topk:8"), rng).q_ids) == 3  # K > V
    with pytest.raises(ValueError):
        sample_draft_token(p, Sampling(1.0, "ids"), rng)


def test_topk_ties_broken_by_lower_id():
    p = np.array([0.1, 0.3, 0.1, 0.3, 0.2])
    assert _top_k_ids(p, 2).tolist() == [1, 3]
    assert _top_k_ids(p, 3).tolist() == [1, 3, 4]
    assert _top_k_ids(p, 4).tolist() == [1, 3, 4, 0]
    assert _top_k_ids(p, 5).tolist() == [1, 3, 4, 0, 2]
    rng = np.random.default_rng(2)
    for _ in range(200):  # heavy ties: compare with a stable full sort
        q = rng.integers(0, 5, size=40).astype(np.float64)
        k = int(rng.integers(1, 41))
        assert _top_k_ids(q, k).tolist() == np.argsort(-q, kind="stable")[:k].tolist()


@pytest.mark.parametrize("payload", ["topk:4", "full"])
def test_draft_frequencies_match_q(payload):
    rng = np.random.default_rng(3)
    p = softmax(np.random.default_rng(4).normal(scale=1.5, size=12), 1.0)
    draws = [sample_draft_token(p, Sampling(1.0, payload), rng) for _ in range(20000)]
    q_ids = draws[0].q_ids if draws[0].q_ids is not None else np.arange(12)
    counts = np.zeros(len(q_ids))
    index = {int(t): i for i, t in enumerate(q_ids)}
    for d in draws:
        counts[index[d.token]] += 1  # KeyError if a token fell outside q's support
    stat, df, pval = chi_square(counts, draws[0].q_probs.astype(np.float64))
    assert pval > SIGNIFICANCE, (stat, df, pval)


# ---------------------------------------------------------------------------------- tokens per round

def test_expected_accepted_formula():
    assert expected_accepted(1.0, 4) == 5.0
    assert expected_accepted(0.0, 4) == 1.0
    assert expected_accepted(0.8, 0) == 1.0
    for a, g in [(0.3, 1), (0.8, 4), (0.95, 8)]:
        assert expected_accepted(a, g) == pytest.approx((1 - a ** (g + 1)) / (1 - a))
    with pytest.raises(ValueError):
        expected_accepted(1.2, 3)


@pytest.mark.parametrize("alpha,gamma", [(0.3, 4), (0.8, 4), (0.9, 8)])
def test_expected_accepted_matches_bernoulli_simulation(alpha, gamma):
    rng = np.random.default_rng(5)
    ok = rng.random((20000, gamma)) < alpha
    accepted = np.where(ok.all(axis=1), gamma, np.argmin(ok, axis=1))  # first rejection index
    assert (accepted + 1).mean() == pytest.approx(expected_accepted(alpha, gamma), abs=0.05)


def test_expected_accepted_matches_speculative_sampling():
    """With context-free p and q, acceptance per position is alpha = sum(min(p, q)) and tokens per round
    through the real stochastic_verify must average expected_accepted(alpha, gamma)."""
    rng = np.random.default_rng(6)
    p = softmax(rng.normal(size=10), 1.0)
    q = softmax(rng.normal(size=10), 1.0)
    gamma, sampling = 3, Sampling(1.0, "full")
    alpha = float(np.minimum(p, _to_q(q)).sum())
    tokens = []
    for _ in range(8000):
        draft = [sample_draft_token(q, sampling, rng) for _ in range(gamma)]
        tokens.append(stochastic_verify(draft, np.tile(p, (gamma + 1, 1)), rng)[0] + 1)
    assert np.mean(tokens) == pytest.approx(expected_accepted(alpha, gamma), abs=0.05)


def _to_q(q: np.ndarray) -> np.ndarray:
    """The float64 q the drafter really samples from (float32 round trip)."""
    q32 = (q / q.sum()).astype(np.float32)
    q64 = q32.astype(np.float64)
    return q64 / q64.sum()


def test_cut_output_stops_at_eos_and_room():
    from nodes.verification import cut_output
    assert cut_output([5, 6, 7], room=10, eos=2) == ([5, 6, 7], False)
    assert cut_output([5, 2, 7], room=10, eos=2) == ([5, 2], True)      # EOS is output, what follows is not
    assert cut_output([5, 6, 7], room=2, eos=None) == ([5, 6], True)
    assert cut_output([5, 6], room=2, eos=None) == ([5, 6], True)       # exactly filling max_new ends it
    assert cut_output([5, 6], room=0, eos=None) == ([], True)
