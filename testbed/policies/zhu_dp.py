# Over 400 lines: the cost model's derivation, the DP, its loop fallback and its exhaustive check belong together.
"""Joint task batching and speculation length by dynamic programming (Zhu et al. 2025, arXiv 2510.11331).

The paper's equations were not available (research/papers.md §2: "exact equations, DP state/recursion and
complexity are [NF]"). This module implements the digest's *placeholder* cost model [D], made precise below;
replace it if the text is obtained.

Cost model
----------
Tasks k = 1..K, each with input length I_k, output length O_k, acceptance rate α_k and an upload time u_k
(its input over the wireless uplink, e.g. from allocation.ZhuClosedForm's band split).

Tokens per round at speculation length l (Leviathan et al.):  μ(l, α) = (1 − α^{l+1}) / (1 − α)  (= l+1 at
α = 1; acceptance.mu). A task needs r_k(l) = ceil(O_k / μ(l, α_k)) rounds: the fluid (expected-value) round
count, not a random one. A batch of b tasks at length l runs, per round,

    draft stage   d(b, l) = l · (draft_a + draft_b · b)            l draft decode steps on the SBS
    verify stage  v(b, l) = verify_a + verify_b · b · (l + 1)      one parallel pass on the MBS (the fronthaul
                                                                   transfer can be folded into verify_a/_b)

and, once before its first round, a padded draft prefill P(b) = prefill_per_token · b · max_{k in batch} I_k.
Batches are static: a batch keeps all b slots for all of its rounds (finished tasks are padded), runs
R = max_{k in batch} r_k(l) rounds, and uses one l for all its tasks.

Two-stage pipeline (the paper: "drafting of one task batch overlaps with verification of another"). A batch's
own rounds cannot overlap: its next draft needs its previous verdict, so one batch alone costs d + v per round
(an earlier model charged max(d, v) per round, letting a batch overlap with itself: one task at d = v = 10 ms
for 20 rounds came to 0.21 s where 0.40 s is the least possible). The overlap is between *different* batches:
a planned batch of b >= 2 tasks is served as two task batches, A (the first ceil(b/2)) and B (the rest), that
alternate between the two stages: A verifies while B drafts and B verifies while A drafts. With d_X, v_X the
stages of X alone, the periodic schedule D_A at (i−1)c, V_A and D_B at (i−1)c + d_A, V_B at
(i−1)c + max(d_A + d_B, d_A + v_A) is feasible for the cycle c = max(d_A + d_B, v_A + v_B, d_A + v_A,
d_B + v_B) (each stage's load, each half's own chain: the maximum cycle mean of the two-batch cyclic schedule,
so it is also the least possible period), and every task of the batch has its verdict by
e = max(d_A + d_B, d_A + v_A) + v_B after its last round starts (an upper bound for A's tasks, exact for B's).
The split is used where it pays in steady state (c < d + v of the whole batch: per-task costs dominate the
fixed ones); otherwise, and for one task, the batch runs whole. So p = c and q = e − c (>= 0) for a split
batch, p = d + v and q = 0 otherwise, and `pipelined=False` never splits.

Batches are served one after another in the given order, each after its inputs are uploaded:

    service  S_m = U_m + P_m + R_m · p_m + q_m,      U_m = max_{k in m} u_k
    start    T_{m-1} = S_1 + ... + S_{m-1}           (T_0 = 0)
    task k in batch m completes at  C_k = T_{m-1} + U_m + P_m + r_k · p_m + q_m     (its own last round)

The upload of batch m is not overlapped with the service of batch m−1: a conservative simplification (it is
what keeps the model separable, below). Objectives: "sum" = Σ_k C_k (total serving latency: the paper's
"minimise total serving latency" read as the sum of per-task completion times) and "makespan" = T_M.

Why the DP is exact
-------------------
Tasks are put in a fixed order (given, or by length with order="length"), and batches are contiguous runs in
that order: the assumption that makes the DP exact, as in classic serial-batching DPs. With j tasks before a
batch covering tasks j+1..k, its service S delays every one of the K − k tasks after it, so

    sum:      cost(j, k, l) = (K − k) · S(j+1..k, l) + Σ_{i=j+1..k} (C_i − T_{m-1})
    makespan: cost(j, k, l) = S(j+1..k, l)

depend only on the batch and l, and the objective is Σ_m cost(j_m, k_m, l_m). Hence
f(k) = min_{k − max_batch ≤ j < k} [ f(j) + min_l cost(j, k, l) ], f(0) = 0, and f(K) is the optimum over all
contiguous partitions and per-batch lengths: O(K · max_batch · |L|) with running per-l maxima and sums.
`plan_exhaustive` enumerates the same space by simulation (no decomposition) to check it.

How a verifier uses it: online, batching.ZhuBatching (batching rule `zhu`) plans the pending sessions
whenever the verifier is free and verifies the plan's first batch at its length (receding horizon). Offline,
when a set of sessions is known (the paper's 100-request setting), call plan_dp once and serve Plan.batches in
order, each at its Plan.lengths entry as a static window.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from testbed.policies.acceptance import ALPHA_ONE, mu

OBJECTIVES = ("sum", "makespan")


@dataclass(frozen=True)
class Task:
    name: str
    input_len: int
    output_len: int
    alpha: float = 0.7
    upload_s: float = 0.0

    def __post_init__(self) -> None:
        if self.input_len < 0 or self.output_len < 1:
            raise ValueError(f"task {self.name!r}: need input_len >= 0 and output_len >= 1")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"task {self.name!r}: alpha must be in [0, 1], got {self.alpha!r}")
        if not (math.isfinite(self.upload_s) and self.upload_s >= 0):
            raise ValueError(f"task {self.name!r}: upload_s must be finite and >= 0, got {self.upload_s!r}")


@dataclass(frozen=True)
class CostModel:
    draft_a: float                  # s per draft decode step, fixed part
    draft_b: float                  # s per draft decode step per task in the batch
    verify_a: float                 # s per verify pass, fixed part
    verify_b: float                 # s per verify pass per verified token (b · (l+1) tokens)
    max_batch: int
    lengths: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)    # allowed l; 0 = autoregressive (the AD baseline)
    prefill_per_token: float = 0.0  # s per padded input token of the batch's draft prefill
    pipelined: bool = True

    def __post_init__(self) -> None:
        for field in ("draft_a", "draft_b", "verify_a", "verify_b", "prefill_per_token"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{field} must be finite and >= 0, got {value!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch!r}")
        if not self.lengths or any(l < 0 for l in self.lengths):
            raise ValueError(f"lengths must be a non-empty set of integers >= 0, got {self.lengths!r}")

    def _stage(self, b: int, l: int) -> tuple[float, float]:
        """(draft stage d, verify stage v) of one round of b tasks verified together at length l."""
        return l * (self.draft_a + self.draft_b * b), self.verify_a + self.verify_b * b * (l + 1)

    def stages(self, b: int, l: int) -> tuple[float, float]:
        """(period p, extra q) of a b-task batch at length l: its tasks' verdicts come r·p + q after its first
        round starts (r = their rounds); see "Two-stage pipeline" above."""
        return self._pipeline(b, l)[:2]

    def split(self, b: int, l: int) -> bool:
        """Whether a b-task batch at length l runs as two alternating halves (the first ceil(b/2) tasks first)."""
        return self._pipeline(b, l)[2]

    def _pipeline(self, b: int, l: int) -> tuple[float, float, bool]:
        d, v = self._stage(b, l)
        whole = d + v
        if not self.pipelined or b < 2:
            return whole, 0.0, False
        (da, va), (db, vb) = self._stage((b + 1) // 2, l), self._stage(b // 2, l)
        c = max(da + db, va + vb, da + va, db + vb)
        if not c < whole:
            return whole, 0.0, False
        return c, (max(da + db, da + va) + vb) - c, True


@dataclass(frozen=True)
class Plan:
    batches: tuple[tuple[str, ...], ...]    # served in this order
    lengths: tuple[int, ...]                # speculation length of each batch
    total_latency: float                    # evaluate() of this plan under the objective it was made for


def rounds(task: Task, l: int) -> int:
    # The 1e-9 keeps a float like O/μ = 2.0000000000000004 (μ computed inexactly) from costing a whole round.
    return max(1, math.ceil(task.output_len / mu(l, task.alpha) - 1e-9))


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")


def _ordered(tasks: Sequence[Task], order: str) -> list[Task]:
    if order == "given":
        return list(tasks)
    if order == "length":   # shortest first: the SPT order that suits the sum objective
        return sorted(tasks, key=lambda t: (t.output_len, t.input_len))
    raise ValueError(f"order must be 'given' or 'length', got {order!r}")


def _simulate(batches: Sequence[Sequence[Task]], lengths: Sequence[int], cost: CostModel, objective: str) -> float:
    """The cost model stated above, by direct time accumulation (deliberately not via the DP's decomposition)."""
    clock = 0.0
    total = 0.0
    for batch, l in zip(batches, lengths):
        b = len(batch)
        p, q = cost.stages(b, l)
        lead = max(t.upload_s for t in batch) + cost.prefill_per_token * b * max(t.input_len for t in batch)
        finishes = [clock + lead + rounds(t, l) * p + q for t in batch]
        clock = max(finishes)
        total += sum(finishes)
    return total if objective == "sum" else clock


def evaluate(tasks: Sequence[Task], batches: Sequence[Sequence[str]], lengths: Sequence[int], cost: CostModel,
             objective: str = "sum") -> float:
    """Total latency of serving `batches` (task names, in service order) at `lengths` (one l per batch).

    Any partition is accepted, contiguous or not; each task must appear exactly once, each batch must be
    non-empty and at most cost.max_batch. Any l >= 0 is accepted (not only cost.lengths), for baselines."""
    _check_objective(objective)
    by_name = {t.name: t for t in tasks}
    if len(by_name) != len(tasks):
        raise ValueError("task names must be unique")
    if len(batches) != len(lengths):
        raise ValueError("need exactly one length per batch")
    seen: list[str] = [name for batch in batches for name in batch]
    if sorted(seen) != sorted(by_name):
        raise ValueError("batches must cover every task exactly once")
    if any(not 1 <= len(batch) <= cost.max_batch for batch in batches):
        raise ValueError(f"every batch needs 1..{cost.max_batch} tasks")
    if any(l < 0 for l in lengths):
        raise ValueError("lengths must be >= 0")
    return _simulate([[by_name[n] for n in batch] for batch in batches], lengths, cost, objective)


def _plan(batches: list[list[Task]], lengths: list[int], cost: CostModel, objective: str) -> Plan:
    return Plan(tuple(tuple(t.name for t in batch) for batch in batches), tuple(lengths),
                _simulate(batches, lengths, cost, objective))


_U = 2.0 ** -53      # unit roundoff of float64


def _rounds_table(seq: Sequence[Task], ls: Sequence[int]) -> np.ndarray:
    """rounds(t, l) for every length (rows) and task (columns), as floats, equal to rounds() bit for bit.

    rounds() takes α^(l+1) from C's pow, one Python call per entry. Here it comes from numpy's power (which
    may be a vectorised routine that rounds differently, by a few ulps), and the resulting ceil is kept only
    where a bound on how far that can move O/μ (2^-40 relative in α^(l+1), far above any such routine's
    error, carried through 1 - α^(l+1), the division by 1 - α, O/μ and the subtraction of 1e-9) cannot cross
    an integer; entries it could (all but never) are recomputed with rounds() itself."""
    alpha = np.array([t.alpha for t in seq])
    out = np.array([t.output_len for t in seq], dtype=float)
    e = np.array([l + 1 for l in ls], dtype=float)[:, None]
    full = alpha > ALPHA_ONE                        # μ = l + 1 exactly (acceptance.mu's edge rule)
    with np.errstate(divide="ignore", invalid="ignore"):
        pw = np.power(np.where(full, 0.5, alpha), e)
        gap = 1.0 - pw
        ratio = out / np.where(full, e, gap / (1.0 - alpha))
        x = ratio - 1e-9
        slack = ratio * np.where(full, 0.0, (2.0 ** -40 * pw + 2.0 ** -52) / gap) + (ratio + 1.0) * 2.0 ** -48
        top = np.ceil(x)
        sure = (top - x > slack) & (x - (top - 1.0) > slack)     # NaN (gap = 0 at α^(l+1) = 1) is unsure
    table = np.maximum(1.0, top)
    if not sure.all():
        for li, k in zip(*np.nonzero(~sure)):
            table[li, k] = rounds(seq[k], ls[li])
    return table


def _stage_tables(cost: CostModel, maxb: int, ls: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(period, extra), each |L| x (maxb+1): cost.stages(b, l) for every l (row) and b, bit for bit (the same
    operations in the same order)."""
    lf = np.array(ls, dtype=float)[:, None]

    def stage(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return lf * (cost.draft_a + cost.draft_b * b), cost.verify_a + (cost.verify_b * b) * (lf + 1.0)
    bi = np.arange(maxb + 1)
    d, v = stage(bi.astype(float)[None, :])
    whole = d + v
    if not cost.pipelined:
        return whole, np.zeros_like(d)
    (da, va), (db, vb) = stage(((bi + 1) // 2).astype(float)[None, :]), stage((bi // 2).astype(float)[None, :])
    c = np.maximum(np.maximum(np.maximum(da + db, va + vb), da + va), db + vb)
    use = (c < whole) & (bi >= 2)[None, :]
    extra = (np.maximum(da + db, da + va) + vb) - c
    return np.where(use, c, whole), np.where(use, extra, 0.0)


def _back(q: np.ndarray, pad: int, n: int) -> np.ndarray:
    """View v[..., s, e] = q[..., pad + e - s] (s < n <= pad + 1) of a C-contiguous float array q (..., pad + K)
    that is padded in front; for reading only."""
    return np.ndarray(q.shape[:-1] + (n, q.shape[-1] - pad), q.dtype, q, pad * q.itemsize,
                      q.strides[:-1] + (-q.itemsize, q.itemsize))


def _simulate_table(seq: Sequence[Task], spans: Sequence[tuple[int, int, int]], r: np.ndarray,
                    period: np.ndarray, tail: np.ndarray, cost: CostModel, objective: str) -> float:
    """_simulate for contiguous batches (j, k, index of l), from tables equal bit for bit to rounds() and
    cost.stages(), with the same operations in the same order."""
    rows, per, fill = r.tolist(), period.tolist(), tail.tolist()
    upload = [t.upload_s for t in seq]
    inputs = [t.input_len for t in seq]
    clock = 0.0
    total = 0.0
    for j, k, li in spans:
        b = k - j
        p, q = per[li][b], fill[li][b]
        lead = max(upload[j:k]) + cost.prefill_per_token * b * max(inputs[j:k])
        finishes = [clock + lead + n * p + q for n in rows[li][j:k]]
        clock = max(finishes)
        total += sum(finishes)
    return total if objective == "sum" else clock


def _plan_dp_loop(seq: list[Task], cost: CostModel, objective: str) -> Plan:
    """The DP as a batch-by-batch loop (the original implementation): plan_dp's fallback for the absurd inputs
    whose costs overflow to inf or NaN, or whose round sums pass 2^53, where the array version's maxima, sums
    and ties need not behave the same."""
    K = len(seq)
    ls = sorted(set(cost.lengths))
    r = np.array([[rounds(t, l) for l in ls] for t in seq], dtype=float)
    maxb = min(cost.max_batch, K)
    pq = np.array([[cost.stages(b, l) for l in ls] for b in range(maxb + 1)])
    period, tail = pq[..., 0], pq[..., 1]
    f = [0.0] + [math.inf] * K
    back: list[tuple[int, int]] = [(0, 0)] * (K + 1)
    for k in range(1, K + 1):
        rmax = np.zeros(len(ls))
        rsum = np.zeros(len(ls))
        upload = 0.0
        longest_in = 0
        for j in range(k - 1, k - 1 - maxb, -1):
            if j < 0:
                break
            b = k - j
            rmax = np.maximum(rmax, r[j])
            rsum = rsum + r[j]
            upload = max(upload, seq[j].upload_s)
            longest_in = max(longest_in, seq[j].input_len)
            lead = upload + cost.prefill_per_token * b * longest_in + tail[b]
            service = lead + rmax * period[b]
            c = (K - k) * service + b * lead + rsum * period[b] if objective == "sum" else service
            li = int(np.argmin(c))
            total = f[j] + float(c[li])
            if total < f[k]:
                f[k], back[k] = total, (j, li)
    batches: list[list[Task]] = []
    lengths: list[int] = []
    k = K
    while k > 0:
        j, li = back[k]
        batches.append(seq[j:k])
        lengths.append(ls[li])
        k = j
    return _plan(batches[::-1], lengths[::-1], cost, objective)


def plan_dp(tasks: Sequence[Task], cost: CostModel, objective: str = "sum", order: str = "given") -> Plan:
    """Optimal contiguous batching with a best l per batch, f(k) = min_j [f(j) + min_l cost(j, k, l)].

    min_l cost(j, k, l) is computed for all batches with array operations, indexed by (t, e): the batch of
    tasks e-t..e, so b = t + 1, k = e + 1, j = e - t. A batch's largest round count is the larger of two
    shorter windows' maxima and its round sum a difference of cumulative sums, both read through strided
    views; t is taken in chunks (t < 8, then t0 <= t < min(2 t0, t0 + 32)) to keep the arrays small, and only
    e >= t0. The O(K · max_batch) recursion over k is the only sequential part. Every cost is formed by the same
    floating-point operations, in the same order, as the batch-by-batch loop of the original implementation
    (kept in tests/test_zhu_dp.py, which checks that the plans are identical), and ties break the same way:
    the shorter l, then the larger j. Inputs so extreme that a cost overflows fall back to that loop
    (_plan_dp_loop)."""
    _check_objective(objective)
    seq = _ordered(tasks, order)
    K = len(seq)
    if K == 0:
        return Plan((), (), 0.0)
    ls = sorted(set(cost.lengths))              # ascending, so ties go to the shorter window
    L = len(ls)
    r = _rounds_table(seq, ls)                  # |L| x K
    T = min(cost.max_batch, K)
    period, tail = _stage_tables(cost, T, ls)   # |L| x (T+1), column b
    upload = np.array([t.upload_s for t in seq])
    longest_in = np.array([t.input_len for t in seq], dtype=float)
    vals = np.concatenate((r, upload[None], longest_in[None]))          # |L|+2 x K: what is maximised
    total = objective == "sum"
    if float(r.sum(axis=1).max()) >= 2.0 ** 52:     # round sums would not be exact
        return _plan_dp_loop(seq, cost, objective)
    if total:
        csum = np.zeros((L, T + K + 1))             # csum[:, T + i] = sum of r over tasks 0..i-1 (exact)
        np.cumsum(r, axis=1, out=csum[:, T + 1:])
        before = _back(csum, T, T)                  # before[:, t, e] = csum[:, T + e - t]: tasks 0..e-t-1
        after = np.arange(K - 1.0, -1.0, -1.0)      # K - k tasks after the batch
    cols = np.empty((K, T))                         # cols[e, t] = min over l of cost(e-t, e+1, l)
    t0 = 0
    while t0 < T:
        # Chunk t0 <= t < t1, only e >= t0 (smaller e cannot hold a batch of t0+1 tasks). mx = the maxima of
        # vals over each batch e-t..e: by doubling in the first chunk; after it, the window of length t+1 ending
        # at e joins the one of length t0 ending at e (the previous chunk's last row) and the one of length t0
        # ending at e - (t+1-t0), hence t1 <= 2·t0.
        if t0 == 0:
            t1 = min(8, T)
            mx = np.zeros((L + 2, t1, K))
            mx[:, 0] = vals
            m = 1
            while m < t1:
                top = min(2 * m, t1)
                np.maximum(mx[:, m - 1:m, m:], mx[:, 0:top - m, :K - m], out=mx[:, m:top, m:])
                m = top
        else:
            t1 = min(2 * t0, T, t0 + 32)
            padded = np.zeros((L + 2, T + K))
            padded[:, T + t0 - 1:] = last
            mx = np.maximum(last[:, None, 1:], _back(padded, T, t1 - t0 + 1)[:, 1:, t0:])
        if t1 < T:
            last = mx[:, -1, t1 - 1 - t0:].copy()   # its windows of length t1, for e >= t1-1
        size = np.arange(t0 + 1.0, t1 + 1.0)[:, None]                  # b
        lead = mx[L] + (cost.prefill_per_token * size) * mx[L + 1]
        lead = lead + tail[:, t0 + 1:t1 + 1, None]
        per = period[:, t0 + 1:t1 + 1, None]
        c = mx[:L]
        c *= per
        c += lead                                   # service = lead + rmax · p
        if total:
            c *= after[t0:]
            lead *= size
            c += lead
            rs = csum[:, None, T + 1 + t0:] - before[:, t0:t1, t0:K]   # rsum over tasks e-t..e
            rs *= per
            c += rs                                 # (K-k) · service + b · lead + rsum · p
        np.minimum.reduce(c, axis=0, out=cols[t0:, t0:t1].T)
        t0 = t1
    if not np.isfinite(cols[np.tri(K, T, dtype=bool)]).all():
        return _plan_dp_loop(seq, cost, objective)
    # f(k) = min over t of f(k-1-t) + cols[k-1, t], t < min(k, T) (so only e >= t is ever read); the first
    # minimum in t is the largest j, as a loop over j from k-1 downwards keeping strict improvements picks.
    f = np.zeros(K + 1)
    rev = f[::-1]                                   # rev[K - j] = f[j]
    cut = [0] * (K + 1)
    for k in range(1, K + 1):
        cand = rev[K + 1 - k:K + 1 - k + T] + cols[k - 1, :k]
        t = int(cand.argmin())
        cut[k] = k - 1 - t
        f[k] = cand[t]
    if not np.isfinite(f[K]):
        return _plan_dp_loop(seq, cost, objective)
    starts = []
    k = K
    while k > 0:
        k = cut[k]
        starts.append(k)
    starts.reverse()
    ends = starts[1:] + [K]
    # The chosen batches' l: their costs again, by the same operations (maxima and sums are exact), and the
    # first minimum over l.
    b = np.array(ends, dtype=float) - starts
    bi = np.array(ends) - starts
    lead = (np.maximum.reduceat(upload, starts)
            + (cost.prefill_per_token * b) * np.maximum.reduceat(longest_in, starts)) + tail[:, bi]
    per = period[:, bi]
    c = np.maximum.reduceat(r, starts, axis=1) * per
    c += lead
    if total:
        c *= after[np.array(ends) - 1]
        lead *= b
        c += lead
        c += np.add.reduceat(r, starts, axis=1) * per
    spans = list(zip(starts, ends, np.argmin(c, axis=0).tolist()))
    return Plan(tuple(tuple(task.name for task in seq[j:k]) for j, k, _ in spans), tuple(ls[li] for *_, li in spans),
                _simulate_table(seq, spans, r, period, tail, cost, objective))


def plan_exhaustive(tasks: Sequence[Task], cost: CostModel, objective: str = "sum", order: str = "given") -> Plan:
    """Every contiguous partition (batch sizes <= max_batch) times every l per batch, each simulated: the
    DP's reference. Exponential (about |L| · (|L|+1)^(K-1) plans), for tests on small K only."""
    _check_objective(objective)
    seq = _ordered(tasks, order)
    K = len(seq)
    if K == 0:
        return Plan((), (), 0.0)
    ls = sorted(set(cost.lengths))
    # Each (batch, l)'s completion offsets are simulated once and reused across the plans that contain it;
    # the plan total still accumulates the clock batch by batch, as _simulate does.
    offsets: dict[tuple[int, int, int], tuple[float, float, int]] = {}

    def batch(a: int, z: int, l: int) -> tuple[float, float, int]:
        if (a, z, l) not in offsets:
            group = seq[a:z]
            p, q = cost.stages(len(group), l)
            lead = (max(t.upload_s for t in group)
                    + cost.prefill_per_token * len(group) * max(t.input_len for t in group))
            done = [lead + rounds(t, l) * p + q for t in group]
            offsets[a, z, l] = (sum(done), max(done), len(group))
        return offsets[a, z, l]

    best: tuple[float, list[tuple[int, int]], tuple[int, ...]] | None = None
    for cuts in itertools.product((False, True), repeat=K - 1):     # cut after task i or not
        bounds = [0] + [i + 1 for i, cut in enumerate(cuts) if cut] + [K]
        spans = list(zip(bounds, bounds[1:]))
        if any(z - a > cost.max_batch for a, z in spans):
            continue
        for lengths in itertools.product(ls, repeat=len(spans)):
            clock = total = 0.0
            for (a, z), l in zip(spans, lengths):
                done_sum, service, b = batch(a, z, l)
                total += b * clock + done_sum
                clock += service
            value = total if objective == "sum" else clock
            if best is None or value < best[0]:
                best = (value, spans, lengths)
    assert best is not None     # all-singletons is always feasible
    return _plan([seq[a:z] for a, z in best[1]], list(best[2]), cost, objective)

