# Over 400 lines: certified bisections keep it bit-identical to the tests' reference; scipy's brentq would not.
"""Joint band split and speculation lengths at one access point, for proportional fairness in goodput.

N drafters share an AP's band B (Hz). Drafter k has spectral efficiency s_k (bits/s/Hz), acceptance rate α_k,
payload c_k bytes per drafted token plus a fixed frame of F bytes, a base round time τ_k (RTT and compute,
everything but the uplink serialisation) and t_k seconds of draft + verify time per drafted token. With band
fraction f_k and window γ_k its goodput (tokens/s) is

    G_k = μ_k(γ_k) / (τ_k + 8 (F + γ_k c_k) / (f_k B s_k) + γ_k t_k),   μ_k(γ) = (1 − α_k^{γ+1}) / (1 − α_k)

and we choose f (Σ f_k = 1, f_k ≥ 0) and integers γ_k in [γ_min, γ_max] to maximise U = Σ_k log G_k (μ is
acceptance.mu_array).
This joins GoodSpeed's log utility with Zhu et al.'s uplink band split; the combination is ours [D].

Method: block-coordinate ascent, alternating two exact sub-problems.
- Fixed γ: with A_k = τ_k + γ_k t_k and D_k = 8 (F + γ_k c_k) / (B s_k), maximise −Σ_k h_k(f_k) with
  h(f) = log(A + D/f) = log(A f + D) − log f, which is convex on f > 0 (h'' = 1/f² − A²/(A f + D)² > 0).
  KKT: −h_k'(f_k) = D_k / (f_k (A_k f_k + D_k)) = λ for every k with D_k > 0, whose root is
  f_k(λ) = 2 D_k / (λ D_k + sqrt(λ² D_k² + 4 λ A_k D_k)) (the stable form of the quadratic's root), decreasing
  in λ; λ is found by bisection so that Σ f_k(λ) = 1: the global optimum for that γ. (With A_k = 0 for all k,
  f_k = 1/λ: an equal split, whatever the channels, because log G_k then separates into log f_k + const.)
  A drafter with D_k = 0 (nothing to send) gets no band.
- Fixed f: U is separable in γ, so each γ_k is an exhaustive 1-D search over [γ_min, γ_max].
Each step cannot lower U and γ takes finitely many values, so it stops at a coordinate-wise optimum (γ
unchanged; max_iter guards against cycling through ties). The joint problem is not concave (γ is integer and couples with f), so this is a *local* method:
it runs from several starts (uniform γ at spread values, the per-drafter best γ under an equal split, and the
γ of a Lagrangian relaxation, see _dual_starts) and keeps the best. `brute_force` grids f and enumerates γ
for tiny instances to check it. Observed: without the Lagrangian start, the alternation fell short of the
brute-force grid on 7 of 150 random 3-drafter instances (all with γ_min = 0 and F = 0, where γ = 0 needs no
band); with it, none of 1,500 random 2-drafter and 150 3-drafter instances fell short.
"""
from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from testbed.policies.acceptance import mu_array
from testbed.policies.allocation import Station, check_stations, equal_split


@dataclass(frozen=True)
class Drafter:
    name: str
    efficiency: float           # s_k, bits/s/Hz, > 0
    alpha: float                # acceptance rate in [0, 1]
    bytes_per_token: float      # c_k, uplink bytes per drafted token
    base_s: float               # τ_k: RTT + compute, excluding uplink serialisation
    per_token_s: float          # t_k: draft + verify time per drafted token


_FIELDS = operator.attrgetter("efficiency", "alpha", "bytes_per_token", "base_s", "per_token_s")


def _arrays(drafters: Sequence[Drafter], band_hz: float, frame_bytes: float, grid: np.ndarray):
    """(log μ, A, D), each N x len(grid): per-drafter terms of U for every candidate γ."""
    if not (math.isfinite(band_hz) and band_hz > 0) or not frame_bytes >= 0:
        raise ValueError("band_hz must be finite and > 0, frame_bytes >= 0")
    flat = list(itertools.chain.from_iterable(map(_FIELDS, drafters)))
    cols = None
    if flat and set(map(type, flat)) <= {float, int}:
        cols = np.array(flat, dtype=float).reshape(-1, 5)
        low, high = cols.min(axis=0).tolist(), cols.max(axis=0).tolist()
        if not (math.isfinite(float(cols.sum())) and low[0] > 0 and low[1] >= 0 and high[1] <= 1
                and min(low[2:]) >= 0):
            cols = None
    if cols is None:                    # the checks one by one: the first offender, or other types as they come
        for d in drafters:
            if not (d.efficiency > 0 and 0 <= d.alpha <= 1 and d.bytes_per_token >= 0 and d.base_s >= 0
                    and d.per_token_s >= 0 and all(map(math.isfinite, (d.efficiency, d.bytes_per_token,
                                                                       d.base_s, d.per_token_s)))):
                raise ValueError(f"drafter {d.name!r}: need efficiency > 0, alpha in [0, 1], finite values >= 0")
        s, alpha, c, base, per = (np.array([getattr(d, name) for d in drafters])[:, None] for name in
                                  ("efficiency", "alpha", "bytes_per_token", "base_s", "per_token_s"))
    else:
        s, alpha, c, base, per = (cols[:, i, None] for i in range(5))
    g = grid[None, :].astype(float)
    mu = mu_array(g, alpha)
    a = base + g * per
    dd = 8 * (frame_bytes + g * c) / (band_hz * s)
    if (a + dd <= 0).any():
        raise ValueError("every drafter needs a positive round time (base_s, per_token_s or bytes > 0)")
    return np.log(mu), a, dd


def _scores(logmu: np.ndarray, a: np.ndarray, dd: np.ndarray, f: np.ndarray) -> np.ndarray:
    """log G for each drafter (rows) and γ (columns) at fractions f; D/f is 0 when D = 0, -inf if f = 0."""
    f = f[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        upload = np.where(dd == 0, 0.0, dd / f)
    return logmu - np.log(a + upload)


# Exactness. solve_joint is an optimised implementation of the plain one kept in tests/test_zhu_dp.py (the
# alternation from each start in turn, each f-step a 200-step bisection, the Lagrangian start another): it
# returns the same fractions, windows and U bit for bit. Every quantity that reaches the result or a
# comparison is computed by the same floating-point operations, on the same values, in the same order (sums
# of the same contiguous vectors, np.log of fresh contiguous arrays as there), and the two bisections take
# exactly the same steps: a step's comparison is evaluated exactly as before unless it is *certified*, i.e. a
# rigorous bound on rounding shows that it cannot come out the other way. With u = 2^-53:
#   * f_k(λ) as computed (8 roundings, one sqrt) is within 6u of its exact value, and a float sum of m
#     nonnegative terms in any order within (m-1)u of the exact sum; so Σ f is within θ = (m+8)·2u of it;
#   * exact f_k(λ) decreases in λ with elasticity in [-1, -1/2] (λ f'/f = -(A f + D)/(2 A f + D)), so the
#     exact Σ f_k is monotone: a computed Σ f beyond 1 ± 3θ at one λ settles the comparison for all λ beyond,
#     and a bisection whose every mid below λ̂(1-δ) goes up and above λ̂(1+δ) goes down ends within that
#     window (widened by its tolerance), so the f at λ̂ are within a known slack of the exact result;
#   * a computed score log μ - log(A + D/f) is within 2^-30 of its exact value (|log| <= 745 for doubles),
#     and moves by at most |Δ log f| when f does: so the γ-step from fractions within that slack is certain
#     where each drafter's best score leads by more than twice both;
#   * in the Lagrangian bisection, a drafter's value v_γ(λ) = max_f [log μ_γ - log(A_γ + D_γ/f) - λ f] is
#     convex in λ with slope -f_γ(λ); computed values are within ε of exact ones (ε from their magnitudes and
#     2^9 ulps), so the computed argmax at λ keeps its γ while the value gap (minus 4ε) exceeds how far the
#     values can move, and any computed choice is 2ε-optimal, which bounds how much the chosen Σ f can rise
#     with λ (by 4 n ε / Δλ; see _dual_starts).
# Comparisons that no bound settles are evaluated exactly, several candidate steps at a time.

_U2 = 2.0 ** -52        # 2u
_SCORE_ERR = 2.0 ** -30


def _fractions(a: np.ndarray, d: np.ndarray, lam) -> np.ndarray:
    """The f-step's f_k(λ) (the stable root of the KKT quadratic); lam a float or an array that broadcasts."""
    return 2 * d / (lam * d + np.sqrt((lam * d) ** 2 + 4 * lam * a * d))


def _roots(a: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: float) -> np.ndarray:
    """λ with Σ_k f_k(λ) = 1 for each row of a, d > 0 (Newton's method in log λ, kept inside [lo, hi]), to
    about the precision of the computed sums: an estimate, which the exact steps then certify or not.
    f_k = 2 / (λ + r_k), r_k = sqrt(λ (λ + B_k)), B_k = 4 A_k / D_k, and d log Σf / d log λ = -Σ (1/r_k) / Σ f.
    The start: f_k <= min(1/λ, 2/sqrt(λ B_k)), so the root is at most min(m, (Σ 2/sqrt(B_k))²), close when
    either bound is."""
    b = 4 * a / d
    lam = np.minimum(np.maximum(np.minimum(hi, np.square((2 / np.sqrt(b)).sum(axis=1))), lo), hi)
    for _ in range(40):
        col = lam[:, None]
        r = col + b
        r *= col
        np.sqrt(r, out=r)
        s = (2 / (col + r)).sum(axis=1)
        step = s * np.log(s) / (1 / r).sum(axis=1)
        lam = np.minimum(np.maximum(lam * np.exp(step), lo), hi)
        if not np.abs(step).max() > 1e-5:       # quadratic: now close (the window test checks); NaN stops
            break
    return np.where(np.isfinite(lam), lam, np.sqrt(lo * hi))


def _walk(lo: float, hi: float, steps: int, tol: float, below: float, above: float,
          known: dict) -> tuple[float, float, int, bool]:
    """Advance `for _ in range(200): mid = sqrt(lo·hi); (lo, hi) = (mid, hi) if up else (lo, mid); stop if
    hi <= lo·(1 + tol)`, where up is True for mid <= below, False for mid >= above, else known[mid] (an exact
    comparison). Returns (lo, hi, steps, ended); not ended means sqrt(lo·hi) is not yet known."""
    sqrt = math.sqrt
    grow = 1 + tol
    while steps < 200:
        mid = sqrt(lo * hi)
        if mid <= below:
            lo = mid
        elif mid >= above:
            hi = mid
        else:
            up = known.get(mid)
            if up is None:
                if mid == mid:
                    return lo, hi, steps, False
                up = False                      # λ = NaN: the sum is NaN, never > 1
            if up:
                lo = mid
            else:
                hi = mid
        steps += 1
        if hi <= lo * grow:
            break
    return lo, hi, steps, True


def _ahead(lo: float, hi: float, steps: int, tol: float, below: float, above: float, known: dict,
           centre: float, spread: float, budget: int = 24) -> list[float]:
    """The mids that _walk from this state may need next and that are neither certified nor known: the path
    that expects Σ f > 1 below `centre` (the estimated crossing) and <= 1 above it, then the other branch at
    each of its mids within `spread` of the centre (nearest first); at most `budget`. Only a guess at what will
    be needed: a wrong one costs another round, not a wrong step."""
    sqrt = math.sqrt
    grow = 1 + tol
    wanted: list[float] = []
    forks: list[tuple[float, float, float, int]] = []
    paths = [(lo, hi, steps)]
    while len(wanted) < budget:
        if not paths:
            if not forks:
                break
            forks.sort()
            _, lo, hi, steps = forks.pop(0)
        else:
            lo, hi, steps = paths.pop()
        while steps < 200 and len(wanted) < budget:
            mid = sqrt(lo * hi)
            if mid <= below:
                lo = mid
            elif mid >= above:
                hi = mid
            elif mid in known or mid != mid:
                if known.get(mid, False):
                    lo = mid
                else:
                    hi = mid
            else:
                wanted.append(mid)
                off = abs(mid - centre)
                if off <= spread:
                    forks.append((off, lo, mid, steps + 1) if mid < centre else (off, mid, hi, steps + 1))
                if mid < centre:
                    lo = mid
                else:
                    hi = mid
            steps += 1
            if hi <= lo * grow:
                break
    return wanted


def _above_one(at: np.ndarray, dt: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Whether Σ_k f_k(λ) > 1 as the f-step computes it (its operations; sums along contiguous rows), for
    columns of at, dt (m x points, the drafters' A and D for each point) at λ = lam (one per column). The
    points run along the inner axis so that every operation is one long loop."""
    t1 = lam * dt
    q = t1 * t1                                 # (λ d)²
    t = (4 * lam) * at
    t *= dt                                     # 4 λ a d
    q += t
    np.sqrt(q, out=q)
    q += t1
    f = (2 * dt) / q
    return np.ascontiguousarray(f.T).sum(axis=1) > 1


@dataclass
class _FSteps:
    """f-steps for several γ vectors (rows of a, dd), solved up to the exact bisection (see _prepare)."""
    a: np.ndarray
    dd: np.ndarray
    estimate: np.ndarray                            # fractions at the estimated crossing λ̂
    slack: np.ndarray                               # bound on |log f_estimate - log f_exact| (inf: none)
    crossing: np.ndarray                            # λ̂ per row (NaN: nobody sends)
    groups: list = field(default_factory=list)     # (m, rows, A, D, lo, hi, below, above, crossing)


def _prepare(a: np.ndarray, dd: np.ndarray) -> _FSteps:
    """The f-step up to its bisection, for each row of a, dd (one γ per drafter): the bracket [max D/(A+D), m],
    Newton's root λ̂ of Σ f(λ) = 1 and the window λ̂ (1 ± δ) outside which every comparison Σ f > 1 of the
    bisection is certified, all rows with the same number m of senders together; the fractions at λ̂, and
    how far they can be from the exact result."""
    rows, n = a.shape
    est = np.zeros((rows, n))
    steps = _FSteps(a, dd, est, np.full(rows, math.inf), np.full(rows, math.nan))
    need = dd > 0
    counts = need.sum(axis=1)
    for m in sorted(set(counts.tolist())):
        idx = np.nonzero(counts == m)[0]
        if m == 0:                      # nobody has anything to send: any split is optimal; use band fully
            est[idx] = 1.0 / n
            steps.slack[idx] = 0.0
            continue
        if m == n:
            A, D = a[idx], dd[idx]
        else:
            A = np.stack([a[i][need[i]] for i in idx])
            D = np.stack([dd[i][need[i]] for i in idx])
        k = len(idx)
        # Brackets: f_k(λ) <= 1/λ, so Σ f <= 1 at λ = m; g_k(1) = D/(A+D) >= λ means f_k(λ) >= 1.
        lo = (D / (A + D)).max(axis=1)
        hi = float(m)
        below = np.zeros(k)
        above = np.full(k, math.inf)
        dmax = float(D.max())
        # the rounding bounds need no under/overflow in λd, (λd)², 4λad for λ in [lo, m]
        usable = (float(D.min()) * float(lo.min()) > 1e-140 and dmax * hi < 1e140
                  and (float(A.max()) + 1.0) * dmax * hi < 1e280)
        if usable:
            lam = _roots(A, D, lo, hi)
            theta = (m + 8) * _U2
            delta = 8 * theta
            todo = np.arange(k)
            pts = np.concatenate((lam * (1 - delta), lam * (1 + delta), lam))
            f = _fractions(np.concatenate((A, A, A)), np.concatenate((D, D, D)), pts[:, None])
            est_f = f[2 * k:]
            for _ in range(4):
                s = f[:2 * len(todo)].sum(axis=1)
                t = len(todo)
                ok = (s[:t] > 1 + 3 * theta) & (s[t:] < 1 - 3 * theta)
                got = todo[ok]
                below[got] = pts[:t][ok]
                above[got] = pts[t:2 * t][ok]
                # the crossing of the computed sums, interpolated: where the exact steps will end
                lam[got] = (pts[:t] + (s[:t] - 1) / (s[:t] - s[t:]) * (pts[t:2 * t] - pts[:t]))[ok]
                # λ ends within δ + 3e-15 of λ̂; each f_k moves by at most that in log (elasticity >= -1),
                # their sum too, and each is computed within 6u, the sum within θ
                steps.slack[idx[got]] = 2.1 * (delta + 4e-15) + 2 * theta + 32 * 2.0 ** -53
                todo = todo[~ok]
                if not len(todo):
                    break
                delta *= 8
                pts = np.concatenate((lam[todo] * (1 - delta), lam[todo] * (1 + delta)))
                sel = np.concatenate((todo, todo))
                f = _fractions(A[sel], D[sel], pts[:, None])
        else:
            lam = np.sqrt(lo * hi)
            est_f = _fractions(A, D, lam[:, None])
        est_f = est_f / est_f.sum(axis=1)[:, None]
        if m == n:
            est[idx] = est_f
        else:
            for i, row in enumerate(idx):
                est[row, need[row]] = est_f[i]
        steps.groups.append((m, idx, A, D, lo, hi, below, above, lam))
        steps.crossing[idx] = lam
    return steps


def _best_fractions(steps: _FSteps, wanted: Sequence[int]) -> dict[int, np.ndarray]:
    """Exact maximiser of -Σ log(A_k + D_k/f_k) on the simplex for the rows `wanted` of a prepared set of
    f-steps: as the plain f-step, f_k(λ) with λ from a geometric bisection of Σ f(λ) = 1 on [max D/(A+D), m]
    to relative width 1e-15, then normalised; D = 0 gets no band; nobody to send, an equal split. The
    bisection takes the same steps: certified outside the window, exact inside it, where the comparisons it
    is expected to need are evaluated together."""
    out: dict[int, np.ndarray] = {}
    wanted_set = set(wanted)
    need = steps.dd > 0
    n = steps.a.shape[1]
    for m, idx, A, D, lo, hi, below, above, centre in steps.groups:
        mine = [i for i, row in enumerate(idx.tolist()) if row in wanted_set]
        if not mine:
            continue
        state = {i: (float(lo[i]), hi, 0) for i in mine}
        known: dict[int, dict] = {i: {} for i in mine}
        active = mine
        while active:
            stuck, asks, who = [], [], []
            for i in active:
                l, h, s_, ended = _walk(*state[i], 1e-15, below[i], above[i], known[i])
                state[i] = (l, h, s_)
                if not ended:
                    stuck.append(i)
                    ups = [x for x, up in known[i].items() if up]
                    downs = [x for x, up in known[i].items() if not up]
                    mid = (max(ups) + min(downs)) / 2 if ups and downs else float(centre[i])
                    mids = _ahead(l, h, s_, 1e-15, below[i], above[i], known[i], mid, 3e-15 * l)
                    asks += mids
                    who += [i] * len(mids)
            if len(stuck) == 1:             # one row: its A, D broadcast against a column of λ
                i = stuck[0]
                known[i].update(zip(asks, (_fractions(A[i], D[i], np.array(asks)[:, None]).sum(axis=1) > 1).tolist()))
            elif asks:
                ups = _above_one(A.T[:, who], D.T[:, who], np.array(asks)[None, :]).tolist()
                for i, mid, up in zip(who, asks, ups):
                    known[i][mid] = up
            active = stuck
        if len(mine) == 1:
            i = mine[0]
            f = _fractions(A[i], D[i], math.sqrt(state[i][0] * state[i][1]))[None, :]
        else:
            f = _fractions(A[mine], D[mine],
                           np.array([math.sqrt(state[i][0] * state[i][1]) for i in mine])[:, None])
        for j, i in enumerate(mine):
            row = int(idx[i])
            if m == n:
                out[row] = f[j] / f[j].sum()
            else:
                res = np.zeros(n)
                res[need[row]] = f[j] / f[j].sum()
                out[row] = res
    for row in wanted:
        if row not in out:              # nobody sends
            out[row] = np.full(n, 1.0 / n)
    return out


def _dual_starts(logmu: np.ndarray, a: np.ndarray, dd: np.ndarray, guess: np.ndarray,
                 lam0: float = math.nan) -> list[np.ndarray]:
    """γ indices from Lagrangian relaxation of Σ f = 1: at a band price λ each drafter picks the (γ, f)
    maximising log G_k - λ f on its own (f = f_k(λ) for each γ, closed form above). Its chosen f falls as λ
    rises, so bisection finds the λ where Σ f crosses 1; the γ on both sides of the crossing are returned
    (where Σ f meets 1 exactly that choice is globally optimal). Unlike the f/γ alternation, this can move a
    drafter between sending nothing (D = 0, e.g. γ = 0 with F = 0: no band) and sending, which the alternation
    cannot: with f_k = 0 every γ with D > 0 looks infinitely bad to the γ-step.

    The result is that of the plain bisection (over [1e-12, N] to relative width 1e-12, evaluating every
    drafter's every option at each step; `guess`, some γ indices, and `lam0`, roughly where Σ f = 1 for them,
    are only starting points). A drafter's choice is evaluated only where it is not certified: an evaluation
    at λ also gives the interval around λ where that choice provably stays (value gap against how far the
    values can move). With the choices known, a comparison is Σ f at them, and it is certified near the
    crossing (Newton's root for the choices there) by the window test of _prepare, and beyond the interval of
    fixed choices by 2ε-optimality: any computed choice at λ < x has f_k(λ) >= f_k(x, its choice at x) -
    4ε/(x - λ), so Σ f at λ is at least that at x less 4 n ε/(x - λ) (and symmetrically above). When every λ
    below the window is certified above 1 and every λ beyond it at most 1, the bisection ends with lo and hi
    inside the interval of fixed choices, so both results are those choices, without running it; otherwise it
    is run with what was certified. Call with numpy's floating-point errors ignored."""
    n, G = dd.shape
    rows = np.arange(n)
    theta = (n + 8) * _U2
    sends = bool((dd > 0).all())
    pos = dd if sends else dd[dd > 0]
    amax = float(a.max())
    dmax = float(pos.max()) if pos.size else 0.0
    # log(A + D/f) rises with λ; over [1e-12, N] it lies between log(A + 1e-12 D) and log(A + N D + sqrt(N A D))
    # (D/f >= λD; D/f <= λD + sqrt(λAD) <= 1.5 (A + λD)), so |log| is at most the larger at the extremes
    span = max(abs(math.log(float((a + dd * 1e-12).min()))), abs(math.log(1.5 * (amax + n * float(dd.max())))))
    eps = 2.0 ** -44 * (2.0 + float(np.abs(logmu).max()) + span)
    trusted = (math.isfinite(eps) and (not pos.size or (float(pos.min()) * 1e-12 > 1e-140 and dmax * n < 1e140
               and (amax + 1.0) * dmax * n < 1e280)))
    choice = np.zeros(n, dtype=np.intp)
    cert_lo = np.full(n, math.inf)          # choice[k] is certified for λ in [cert_lo[k], cert_hi[k]]
    cert_hi = np.full(n, -math.inf)

    def evaluate(lam: float) -> tuple[np.ndarray, float]:
        """The plain choose(lam): each drafter's computed argmax and the sum of the chosen f, bit for bit."""
        sub = np.nonzero(~((cert_lo <= lam) & (lam <= cert_hi)))[0]
        if len(sub) == n:
            A, D, M = a, dd, logmu
        elif len(sub):
            A, D, M = a[sub], dd[sub], logmu[sub]
        if len(sub):
            if sends:                       # np.where(D > 0, x, 0.0) is x itself
                t1 = lam * D
                f = 2 * D / (t1 + np.sqrt(t1 * t1 + 4 * lam * A * D))
                value = M - np.log(A + D / f) - lam * f
            else:
                f = np.where(D > 0, 2 * D / (lam * D + np.sqrt((lam * D) ** 2 + 4 * lam * A * D)), 0.0)
                value = M - np.log(A + np.where(D > 0, D / f, 0.0)) - lam * f
            gi = value.argmax(axis=1)
            r = np.arange(len(sub))
            fsel = f[r, gi]
            if trusted:
                top = value[r, gi]
                value[r, gi] = -math.inf
                h = top - value.max(axis=1) - 4 * eps      # NaN or inf gaps: not certified
                rho = np.minimum(h / (f.max(axis=1) * ((1 + 2.0 ** -48) * lam) + h), 0.5) * (1 - 1e-9)
                ok = rho > 0
                if ok.all():
                    choice[sub] = gi
                    cert_lo[sub] = lam * (1 - rho)
                    cert_hi[sub] = lam * (1 + rho)
                else:
                    choice[sub[ok]] = gi[ok]
                    cert_lo[sub[ok]] = lam * (1 - rho[ok])
                    cert_hi[sub[ok]] = lam * (1 + rho[ok])
            if len(sub) == n:
                return gi, float(fsel.sum())
            picks = choice.copy()
            picks[sub] = gi
        else:
            picks = choice.copy()
        A1, D1 = a[rows, picks], dd[rows, picks]
        f1 = np.where(D1 > 0, 2 * D1 / (lam * D1 + np.sqrt((lam * D1) ** 2 + 4 * lam * A1 * D1)), 0.0)
        return picks, float(f1.sum())

    below, above = 0.0, math.inf            # every λ <= below has Σ f > 1, every λ >= above has Σ f <= 1
    zone = None                 # (l, t, f, h): choices fixed on [l, h]; Σ f > 1 on [l, t], <= 1 on [f, h]
    if trusted:
        picks = np.asarray(guess, dtype=np.intp)
        lam = lam0 if 1e-12 <= lam0 <= n else None
        found = None
        for _ in range(6):                  # the crossing for the choices, until the choices there are the same
            if lam is None or found is not None:
                A1, D1 = a[rows, picks], dd[rows, picks]
                send = D1 > 0
                if not send.any():
                    break
                lam = float(_roots(A1[send][None], D1[send][None], np.array([1e-12]), float(n))[0])
            again, _ = evaluate(lam)
            if again.tobytes() == picks.tobytes():
                break
            picks, found = again, True
        else:
            lam = None
        zl, zh = float(cert_lo.max()), float(cert_hi.min())
        if lam is not None and zl < lam < zh and choice.tobytes() == picks.tobytes():
            A1, D1 = a[rows, picks], dd[rows, picks]
            delta = 8 * theta
            for _ in range(3):
                t, f = lam * (1 - delta), lam * (1 + delta)
                pts = np.array([math.sqrt(zl * t), t, f, math.sqrt(f * zh)])
                if not zl < pts[0] < t < f < pts[3] < zh:
                    break
                s = _fractions(A1, D1, pts[:, None])
                s = (s if sends else np.where(D1 > 0, s, 0.0)).sum(axis=1)
                if s[1] > 1 + 3 * theta and s[2] < 1 - 3 * theta:
                    zone = (zl, t, f, zh)
                    x, y = s[0] / (1 + theta) - 1 / (1 - theta), 1 / (1 + theta) - s[3] / (1 - theta)
                    if x > 0:
                        below = pts[0] - 4 * n * eps / x
                    if y > 0:
                        above = pts[3] + 4 * n * eps / y
                    break
                delta *= 8
    if (zone is not None and below >= zone[0] and above <= zone[3] and zone[0] < zone[1] * (1 - 1e-11)
            and zone[3] > zone[2] * (1 + 1e-11) and 1e-12 < zone[1] and zone[2] < n):
        # Every step's mid at or below zone[1] goes up, every one at or above zone[2] down, so the final
        # lo > zone[1] / (1 + 1e-12)² and hi < zone[2] (1 + 1e-12)²: both inside the zone, where the
        # choices are `picks`.
        return [picks.copy(), picks.copy()]
    lo, hi = 1e-12, float(n)
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if mid <= below:
            up = True
        elif mid >= above:
            up = False
        elif zone is not None and zone[0] <= mid <= zone[1]:
            up = True
        elif zone is not None and zone[2] <= mid <= zone[3]:
            up = False
        else:
            up = evaluate(mid)[1] > 1
        if up:
            lo = mid
        else:
            hi = mid
        if hi <= lo * (1 + 1e-12):
            break
    return [evaluate(lo)[0], evaluate(hi)[0]]


def objective(drafters: Sequence[Drafter], fractions: Sequence[float], gammas: Sequence[int], band_hz: float,
              frame_bytes: float = 0.0) -> float:
    """U = Σ_k log G_k (natural log; G in tokens/s); -inf if a drafter that must send gets no band."""
    logmu, a, dd = _arrays(drafters, band_hz, frame_bytes, np.asarray(gammas))
    idx = np.arange(len(drafters))
    return float(_scores(logmu, a, dd, np.asarray(fractions, dtype=float))[idx, idx].sum())


def solve_joint(drafters: Sequence[Drafter], band_hz: float, frame_bytes: float = 0.0, gamma_min: int = 1,
                gamma_max: int = 8, max_iter: int = 100) -> tuple[list[float], list[int], float]:
    """(fractions, gammas, U) in drafter order, by alternating exact f- and γ-steps from several starts.

    Each start's alternation is a deterministic walk over γ vectors, so an f-step (and the γ-step after it)
    is computed once per distinct γ vector however many starts pass through it, and the starts advance in
    lockstep so that each round's new f-steps are solved together. The exact f-step (its bisection run to the
    end) is needed only where the walk stops, for the result and U: elsewhere the γ-step is taken from the
    estimated fractions when it is certain (see the note on exactness above). The result is that of running
    the starts one after another."""
    if not 0 <= gamma_min <= gamma_max:
        raise ValueError(f"need 0 <= gamma_min <= gamma_max, got {gamma_min}, {gamma_max}")
    n = len(drafters)
    if n == 0:
        return [], [], 0.0
    grid = np.arange(gamma_min, gamma_max + 1)
    logmu, a, dd = _arrays(drafters, band_hz, frame_bytes, grid)
    rows = np.arange(n)
    equal = np.full(n, 1.0 / n)
    starts = [np.full(n, i, dtype=np.intp) for i in sorted({0, len(grid) // 3, 2 * len(grid) // 3, len(grid) - 1})]
    starts.append(np.argmax(_scores(logmu, a, dd, equal), axis=1).astype(np.intp))
    prepared: dict[bytes, tuple[_FSteps, int]] = {}                # γ indices -> its f-step, prepared
    nxt: dict[bytes, np.ndarray] = {}                              # γ indices -> the γ-step's result
    final: dict[bytes, tuple[np.ndarray, float]] = {}              # γ indices -> (exact f, U)
    zero = dd == 0

    def scores_of(f: np.ndarray) -> np.ndarray:                    # _scores for rows of f at once
        return logmu - np.log(a + np.where(zero, 0.0, dd / f[:, :, None]))

    def prepare(gis: list[np.ndarray]) -> None:
        """f-steps up to the exact bisection, and the γ-step after each where it is certain already: where
        every drafter's best score at the estimated fractions leads the next by more than twice what the
        estimate's slack and rounding can move a score. If that γ-step moves γ, no exact f is needed."""
        todo = list({gi.tobytes(): gi for gi in gis if gi.tobytes() not in prepared}.values())
        if not todo:
            return
        pick = np.stack(todo)
        prep = _prepare(a[rows, pick], dd[rows, pick])
        sc = scores_of(prep.estimate)
        guess = sc.argmax(axis=2)
        r, k = np.arange(len(todo))[:, None], rows[None, :]
        top = sc[r, k, guess]
        sc[r, k, guess] = -math.inf
        bound = 2 * (1.01 * prep.slack + 2 * _SCORE_ERR)
        sure = ((top - sc.max(axis=2) > bound[:, None]) | (prep.estimate == 0)).all(axis=1)
        for i, gi in enumerate(todo):
            key = gi.tobytes()
            prepared[key] = (prep, i)
            if sure[i] and guess[i].tobytes() != key:
                nxt[key] = guess[i]

    def solve(gis: list[np.ndarray]) -> None:
        """The exact f-step, U and γ-step for each γ vector that lacks them (bit for bit those of the plain
        alternation)."""
        prepare(gis)
        todo = list({gi.tobytes(): gi for gi in gis if gi.tobytes() not in final}.values())
        if not todo:
            return
        by_prep: dict[int, tuple[_FSteps, list[int]]] = {}
        for gi in todo:
            prep, i = prepared[gi.tobytes()]
            by_prep.setdefault(id(prep), (prep, []))[1].append(i)
        got = {pid: _best_fractions(prep, idx) for pid, (prep, idx) in by_prep.items()}
        f = np.stack([got[id(prepared[gi.tobytes()][0])][prepared[gi.tobytes()][1]] for gi in todo])
        sc = scores_of(f)
        new = sc.argmax(axis=2)             # first maximum: ties go to the smaller γ
        for j, gi in enumerate(todo):
            nxt[gi.tobytes()] = new[j]
            final[gi.tobytes()] = (f[j], float(sc[j][rows, gi].sum()))

    with np.errstate(all="ignore"):
        prepare(starts)
        eq = prepared[starts[-1].tobytes()]
        starts += [gi.astype(np.intp) for gi in
                   _dual_starts(logmu, a, dd, starts[-1], float(eq[0].crossing[eq[1]]))]
        current = list(starts)
        keys = [gi.tobytes() for gi in current]
        moves = [0] * len(starts)
        walking = [max_iter > 0] * len(starts)
        while any(walking):
            going = [gi for gi, w in zip(current, walking) if w]
            prepare(going)
            solve([gi for gi, w, key in zip(current, walking, keys) if w and key not in nxt])
            for i, key in enumerate(keys):
                if walking[i]:
                    new = nxt[key]
                    new_key = new.tobytes()
                    if new_key == key:
                        walking[i] = False
                    else:
                        current[i], keys[i] = new, new_key
                        moves[i] += 1
                        walking[i] = moves[i] < max_iter
        solve(current)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for gi in current:
        f, value = final[gi.tobytes()]
        if best is None or value > best[0]:
            best = (value, f, gi)
    assert best is not None
    return best[1].tolist(), grid[best[2]].tolist(), best[0]


def brute_force(drafters: Sequence[Drafter], band_hz: float, frame_bytes: float = 0.0, gamma_min: int = 1,
                gamma_max: int = 8, step: float = 0.01) -> tuple[list[float], list[int], float]:
    """Best (fractions, gammas, U) over every f on the simplex grid of `step` (all f_k > 0) and every γ vector.
    C(1/step - 1, N - 1) x (γ range)^N points: tiny instances only (tests)."""
    n = len(drafters)
    units = round(1 / step)
    grid = np.arange(gamma_min, gamma_max + 1)
    logmu, a, dd = _arrays(drafters, band_hz, frame_bytes, grid)
    best: tuple[float, list[float], list[int]] = (-math.inf, [], [])
    for cuts in itertools.combinations(range(1, units), n - 1):
        f = np.diff(np.array((0,) + cuts + (units,))) / units
        sc = _scores(logmu, a, dd, f)
        for gi in itertools.product(range(len(grid)), repeat=n):
            value = float(sum(sc[k, g] for k, g in enumerate(gi)))
            if value > best[0]:
                best = (value, f.tolist(), [int(grid[g]) for g in gi])
    return best[1], best[2], best[0]


@dataclass
class JointAllocation:
    """solve_joint as an allocation policy (allocation.AllocationPolicy): allocate(stations) -> fractions.

    The per-drafter terms a Station lacks are given beforehand with update(name, alpha, bytes_per_token,
    base_s, per_token_s); Station.efficiency is s_k. Station.demand only says whether the station wants band:
    its bytes are F + γ c_k, chosen here; max_rate is ignored. As in allocation.py, a station with demand 0
    or in outage (efficiency 0) gets 0 band, the rest share all of it, and if none is eligible the split is
    equal. The chosen windows are in `.gammas` after each allocate (gamma_min for ineligible stations)."""
    band_hz: float = 20e6
    frame_bytes: float = 0.0
    gamma_min: int = 1
    gamma_max: int = 8
    gammas: dict[str, int] = field(default_factory=dict, init=False)
    _info: dict[str, tuple[float, float, float, float]] = field(default_factory=dict, init=False, repr=False)
    name = "joint"

    def update(self, name: str, alpha: float, bytes_per_token: float, base_s: float, per_token_s: float) -> None:
        self._info[name] = (alpha, bytes_per_token, base_s, per_token_s)

    def allocate(self, stations: Sequence[Station]) -> dict[str, float]:
        check_stations(stations)
        self.gammas = {st.name: self.gamma_min for st in stations}
        eligible = [st for st in stations if st.demand > 0 and st.efficiency > 0]
        if not eligible:
            return equal_split(stations) if stations else {}
        missing = [st.name for st in eligible if st.name not in self._info]
        if missing:
            raise ValueError(f"no drafter parameters for {missing}: call update(name, ...) first")
        drafters = [Drafter(st.name, st.efficiency, *self._info[st.name]) for st in eligible]
        fractions, gammas, _ = solve_joint(drafters, self.band_hz, self.frame_bytes, self.gamma_min,
                                           self.gamma_max)
        result = {st.name: 0.0 for st in stations}
        for d, f, g in zip(drafters, fractions, gammas):
            result[d.name] = f
            self.gammas[d.name] = g
        return result

