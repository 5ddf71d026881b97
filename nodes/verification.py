"""Speculative-decoding verification: the pure maths, no I/O, numpy only.

Drafter side: `sample_draft_token` turns the draft model's probability row into a DraftToken that carries
exactly the distribution q it was sampled from (nothing for greedy, the top-K ids and probabilities for
`topk:K`, the whole row for `full`).
Verifier side: `greedy_verify` (accept while draft == target argmax) and `stochastic_verify` (standard
speculative sampling, Leviathan et al. 2023 / Chen et al. 2023), which is lossless with respect to the target
distribution p provided q is the distribution the draft token was really drawn from.

q convention (both sides must agree, or losslessness breaks): the q that travels is float32; before use it is
cast to float64 and renormalised (`draft_q`). The drafter draws from that float64 q, and the verifier divides
by that same float64 q, so the q the token was sampled from and the q it is judged against are bit-identical.
"""
from __future__ import annotations

import numpy as np

from testbed.policies.acceptance import mu

from nodes.backends import DraftToken, Sampling


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of logits / temperature in float64 (last axis). Subtracting the row max first keeps
    exp() from overflowing; temperature must be > 0 (greedy never needs probabilities)."""
    if not temperature > 0:
        raise ValueError(f"softmax needs temperature > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def _draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one index from a non-negative (not necessarily normalised) float64 vector by inverse CDF.
    Faster than rng.choice for large V and never returns a zero-probability index: searchsorted 'right'
    skips flat stretches of the CDF."""
    cdf = np.cumsum(probs)
    total = cdf[-1]
    if not total > 0:
        raise ValueError("cannot sample from an all-zero distribution")
    i = int(np.searchsorted(cdf, rng.random() * total, side="right"))
    if i >= len(probs):  # u * total rounded up to total: fall back to the last index with mass
        i = int(np.flatnonzero(probs > 0)[-1])
    return i


def _top_k_ids(p: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest entries of p, ordered by descending probability, ties broken by lower id.
    O(V) partition instead of a full sort, because V can be 150k+ and this runs once per drafted token."""
    v = len(p)
    if k >= v:
        return np.lexsort((np.arange(v), -p)).astype(np.int32)
    kth = np.partition(p, v - k)[v - k]              # value of the k-th largest entry
    above = np.flatnonzero(p > kth)
    ties = np.flatnonzero(p == kth)[: k - len(above)]  # flatnonzero is ascending: lower ids win ties
    ids = np.concatenate([above, ties])
    return ids[np.lexsort((ids, -p[ids]))].astype(np.int32)


def _to_q32(probs: np.ndarray) -> np.ndarray:
    """float64 probabilities -> the float32 q that travels on the wire, renormalised after the cast."""
    q = (probs / probs.sum()).astype(np.float32)
    return q / q.sum(dtype=np.float32)


def _q64(q_probs: np.ndarray) -> np.ndarray:
    """Wire q (float32) -> the float64, renormalised q that is sampled from and verified against."""
    q = np.asarray(q_probs, dtype=np.float64)
    return q / q.sum()


def draft_q(dt: DraftToken) -> np.ndarray:
    """The float64 q a DraftToken stands for (over its q_ids for topk, over the vocabulary for full).
    Used by BOTH the drafter's draw and the verifier's ratio."""
    if dt.q_probs is None:
        raise ValueError("draft token carries no q (greedy 'ids' payload cannot be verified stochastically)")
    return _q64(dt.q_probs)


def sample_draft_token(probs_row: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> DraftToken:
    """Drafter: choose the next draft token from the draft model's probabilities (already at temperature).
    greedy -> argmax, no q; topk:K -> sample from the renormalised top-K; full -> sample from the full row.
    The token is drawn from exactly the q returned (see module docstring)."""
    p = np.asarray(probs_row, dtype=np.float64)
    if sampling.greedy:
        top = int(np.argmax(p))
        return DraftToken(token=top, confidence=float(p[top] / p.sum()))
    k = sampling.top_k
    if k is not None:
        if k < 1:
            raise ValueError(f"topk needs K >= 1, got {sampling.payload!r}")
        ids = _top_k_ids(p, k)
        q32 = _to_q32(p[ids])
        j = _draw(_q64(q32), rng)
        return DraftToken(token=int(ids[j]), q_ids=ids, q_probs=q32, confidence=float(q32[j]))
    if sampling.payload == "full":
        q32 = _to_q32(p)
        j = _draw(_q64(q32), rng)
        return DraftToken(token=j, q_probs=q32, confidence=float(q32[j]))
    raise ValueError(f"payload {sampling.payload!r} cannot carry q for temperature {sampling.temperature}")


def greedy_verify(draft: list[int], target_argmax: list[int]) -> tuple[int, int]:
    """Greedy verification: target_argmax[j] is the target's argmax after the prefix plus draft[:j], so it has
    one more entry than the draft. Accept while they agree; the next argmax is the correction (first
    mismatch) or the bonus (all accepted). Returns (accepted, token)."""
    if len(target_argmax) != len(draft) + 1:
        raise ValueError(f"need len(draft)+1 = {len(draft) + 1} target argmaxes, got {len(target_argmax)}")
    n = 0
    while n < len(draft) and int(draft[n]) == int(target_argmax[n]):
        n += 1
    return n, int(target_argmax[n])


def _q_of(dt: DraftToken, token: int) -> float:
    """q(token) under the draft token's (sparse or dense) q; 0 outside a sparse support."""
    q = draft_q(dt)
    if dt.q_ids is None:
        return float(q[token]) if 0 <= token < len(q) else 0.0
    hit = np.flatnonzero(np.asarray(dt.q_ids) == token)
    return float(q[hit[0]]) if len(hit) else 0.0


def _residual(p: np.ndarray, dt: DraftToken) -> np.ndarray:
    """max(0, p - q) with q zero outside its support (unnormalised; _draw normalises)."""
    r = p.copy()
    q = draft_q(dt)
    if dt.q_ids is None:
        r -= q
    else:
        r[np.asarray(dt.q_ids, dtype=np.int64)] -= q
    return np.maximum(r, 0.0)


def acceptance_probs(draft: list[DraftToken], p_rows: np.ndarray) -> np.ndarray:
    """min(1, p_j(x_j) / q_j(x_j)) for every drafted position: the per-position acceptance probability that
    the alpha-hat estimator (GoodSpeed eq. 3) averages. Positions with q(x) = 0 count as 0."""
    out = np.zeros(len(draft))
    for j, dt in enumerate(draft):
        qx = _q_of(dt, dt.token)
        out[j] = min(1.0, float(p_rows[j, dt.token]) / qx) if qx > 0 else 0.0
    return out


def stochastic_verify(draft: list[DraftToken], p_rows: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """Speculative sampling. p_rows[j] is the target distribution (at temperature) after prefix + draft[:j],
    shape [len(draft)+1, V]. Accept x_j with probability min(1, p_j(x_j)/q_j(x_j)); at the first rejection
    draw the correction from norm(max(0, p_j - q_j)); if all are accepted draw the bonus from p_last.
    Returns (accepted, token). The output is distributed exactly as sampling from p token by token."""
    p_rows = np.asarray(p_rows, dtype=np.float64)
    if p_rows.ndim != 2 or p_rows.shape[0] != len(draft) + 1:
        raise ValueError(f"need p_rows of shape [{len(draft) + 1}, V], got {p_rows.shape}")
    for j, dt in enumerate(draft):
        x = int(dt.token)
        qx = _q_of(dt, x)
        # q(x) = 0 means the drafter could not have drawn x: a bug upstream. Rejecting keeps the output valid.
        # u < p/q with u ~ U[0,1) accepts with probability exactly min(1, p/q), and never when p(x) = 0.
        if qx > 0 and rng.random() < p_rows[j, x] / qx:
            continue
        r = _residual(p_rows[j], dt)
        # Residual is all zero only when p <= q everywhere, i.e. p == q: then rejection has probability 0 in
        # exact arithmetic, and p is the right distribution to fall back on.
        return j, _draw(r if r.sum() > 0 else p_rows[j], rng)
    return len(draft), _draw(p_rows[len(draft)], rng)


def acceptance_probability(dt: DraftToken, p_row: np.ndarray) -> float:
    """min(1, p(x)/q(x)) for draft token x: the chance speculative sampling accepts it (0 if q(x) = 0)."""
    qx = _q_of(dt, int(dt.token))
    return float(min(1.0, p_row[int(dt.token)] / qx)) if qx > 0 else 0.0


def expected_accepted(alpha: float, gamma: int) -> float:
    """Expected tokens per round (accepted drafts plus the correction/bonus) with gamma drafts and i.i.d.
    per-token acceptance alpha: testbed.policies.acceptance.mu(gamma, alpha), arguments in this order."""
    return mu(gamma, alpha)


def cut_output(new: list[int], room: int, eos: int | None) -> tuple[list[int], bool]:
    """The part of a round's new tokens that is output, and whether the session ends with it: generation stops
    after the first EOS and at `room` tokens (max_new minus what was already generated). The verifier decides
    with this and the drafter mirrors it, so both count the same tokens."""
    done = False
    if eos is not None and eos in new:
        new, done = new[:new.index(eos) + 1], True
    if len(new) >= room:
        new, done = new[:max(0, room)], True
    return new, done
