"""How the verifier splits its per-round token budget C among N drafters (GoodSpeed, Fixed-S, Random-S).

Synchronous rounds, as in GoodSpeed (papers.md §1): the verifier waits for all N drafts, verifies them in one
batch, feeds each verdict to `GoodSpeedEstimator.observe`, then calls `allocate(estimator.estimates(), C)`
once and sends every drafter its S_i(t+1) with its verdict. The schedulers are pure (no I/O, no clock); only
Random-S keeps state, its seeded RNG.

Notation: α_i per-position acceptance, X_i smoothed goodput (tokens per round), S_i drafted tokens,
μ(α, S) = (1 − α^{S+1})/(1 − α) expected tokens per round (accepted + the correction/bonus token;
acceptance.mu(S, α), with its limits 1 at α = 0 and S + 1 at α = 1).
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Iterable, Mapping, Protocol, Sequence

from testbed.policies.acceptance import mu

SCHEDULERS = ("goodspeed", "fixed", "random")
UTILITIES = ("log", "linear", "alpha-fair")


def _finite(value, lo: float, hi: float, what: str, *, open_lo: bool = False) -> float:
    # `not lo <= v` also rejects NaN; bools are ints in Python but never a meaningful rate.
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value > lo if open_lo else value >= lo) or value > hi:
        bound = f"{'(' if open_lo else '['}{lo}, {hi}]"
        raise ValueError(f"{what} must be a finite number in {bound}, got {value!r}")
    return float(value)


def _count(value, lo: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{what} must be an integer >= {lo}, got {value!r}")
    return value


@dataclass(frozen=True)
class DrafterEstimate:
    """The verifier's view of drafter i. alpha may be exactly 0 or 1 (an EWMA of 0/1 indicators reaches
    them in floating point after enough rounds), where μ takes its limits 1 and S + 1."""
    name: str
    alpha: float      # α̂_i, EWMA of mean min(1, p/q) over drafted positions (eq. 3)
    goodput: float    # X_i, EWMA of tokens per round, accepted + 1 (eq. 4), > 0

    def __post_init__(self) -> None:
        _finite(self.alpha, 0.0, 1.0, f"drafter {self.name!r}: alpha")
        _finite(self.goodput, 0.0, math.inf, f"drafter {self.name!r}: goodput", open_lo=True)


class GoodSpeedEstimator:
    """Per-drafter EWMAs of Algorithm 1 (papers.md §1), updated at the verifier after each verification:

    eq. (3)  α̂_i ← (1 − η) α̂_i + η · mean_j min(1, p_j(s_j)/q_ij(s_j)) over ALL S_i drafted positions;
    eq. (4)  X_i ← (1 − β) X_i + β · (accepted_i + 1).

    Defaults: β = 0.5 (the value the paper uses). η = 0.1: the paper gives none; its Theorem 1 wants
    η/β → 0 (acceptance learned more slowly than goodput tracks it), so η is set well below β. A new drafter
    starts at α̂ = 0.5 (the uninformative midpoint) and X = 1.0 (the least any round yields: the
    correction/bonus token), identical for all, so the first GoodSpeed round splits C evenly.

    accept_probs: min(1, p/q) for each drafted position when the verifier has q (the draft sends its
    distributions). Under greedy decoding p and q are one-hot, so the caller passes 1.0 where the drafted
    token equals the target's argmax at that position and 0.0 elsewhere, again for every drafted position,
    including those after the first mismatch. None (token-ID-only payloads, q unknown) falls back to
    accepted/drafted; that counts only the accepted prefix, so it is biased low:
    E[m]/S = (α − α^{S+1}) / ((1 − α) S) < α.
    A round with drafted = 0 carries no acceptance information: α̂ is left as it is (eq. 3 would divide
    by zero), while X still moves, toward 1.
    """

    def __init__(self, eta: float = 0.1, beta: float = 0.5, alpha0: float = 0.5, goodput0: float = 1.0):
        # eta = beta = 1 is allowed: "no memory", useful for tests and for an oracle-like scheduler.
        self.eta = _finite(eta, 0.0, 1.0, "eta", open_lo=True)
        self.beta = _finite(beta, 0.0, 1.0, "beta", open_lo=True)
        self.alpha0 = _finite(alpha0, 0.0, 1.0, "alpha0")
        self.goodput0 = _finite(goodput0, 0.0, math.inf, "goodput0", open_lo=True)
        self._alpha: dict[str, float] = {}
        self._goodput: dict[str, float] = {}

    def add(self, name: str) -> None:
        """Register a drafter with the initial values (idempotent), so it is scheduled before its first verdict."""
        self._alpha.setdefault(name, self.alpha0)
        self._goodput.setdefault(name, self.goodput0)

    def remove(self, name: str) -> None:
        """Forget a drafter that left; it no longer takes a share of the budget."""
        self._alpha.pop(name, None)
        self._goodput.pop(name, None)

    def observe(self, name: str, accept_probs: Sequence[float] | None, accepted: int, drafted: int) -> None:
        _count(drafted, 0, f"drafter {name!r}: drafted")
        _count(accepted, 0, f"drafter {name!r}: accepted")
        if accepted > drafted:
            raise ValueError(f"drafter {name!r}: accepted must be <= drafted ({drafted}), got {accepted}")
        if accept_probs is not None:
            if len(accept_probs) != drafted:
                raise ValueError(f"drafter {name!r}: accept_probs must have one value per drafted position "
                                 f"({drafted}), got {len(accept_probs)}")
            for j, a in enumerate(accept_probs):
                _finite(a, 0.0, 1.0, f"drafter {name!r}: accept_probs[{j}]")
        self.add(name)
        if drafted > 0:
            sample = sum(accept_probs) / drafted if accept_probs is not None else accepted / drafted
            # min() guards against 1 + rounding; the EWMA of values in [0, 1] stays in [0, 1] anyway.
            self._alpha[name] = min(1.0, (1.0 - self.eta) * self._alpha[name] + self.eta * sample)
        self._goodput[name] = (1.0 - self.beta) * self._goodput[name] + self.beta * (accepted + 1)

    def estimates(self) -> list[DrafterEstimate]:
        return [DrafterEstimate(n, self._alpha[n], self._goodput[n]) for n in sorted(self._alpha)]

    def estimate(self, name: str, as_name: str | None = None) -> DrafterEstimate:
        """One drafter's estimates (registered first if new), optionally under another name: the verifier
        schedules sessions, each with its draft server's estimates."""
        self.add(name)
        return DrafterEstimate(as_name or name, self._alpha[name], self._goodput[name])


class BudgetScheduler(Protocol):
    name: str

    def allocate(self, estimates: Sequence[DrafterEstimate], budget: int) -> dict[str, int]: ...


@dataclass(frozen=True)
class _Bounds:
    """min_s/max_s per drafter, shared by every scheduler so their comparisons spend the same budget."""
    min_s: int = 0
    max_s: int | None = None

    def __post_init__(self) -> None:
        _count(self.min_s, 0, "min_s")
        if self.max_s is not None:
            _count(self.max_s, self.min_s, "max_s")

    def _names(self, estimates: Sequence[DrafterEstimate], budget: int) -> list[str]:
        """Sorted names after checking the budget can give everyone min_s (else no allocation is feasible)."""
        _count(budget, 0, "budget")
        names = sorted(e.name for e in estimates)
        if len(set(names)) != len(names):
            raise ValueError(f"estimates: drafter names must be unique, got {names}")
        if len(names) * self.min_s > budget:
            raise ValueError(f"budget {budget} cannot give each of {len(names)} drafters min_s = {self.min_s}")
        return names

    def _spend(self, n: int, budget: int) -> int:
        """Tokens above the minimums handed out: all of the budget unless every drafter hits max_s first."""
        if n == 0:
            return 0
        extra = budget - n * self.min_s
        return extra if self.max_s is None else min(extra, n * (self.max_s - self.min_s))


@dataclass(frozen=True)
class GoodSpeedScheduler(_Bounds):
    """Eq. (5): maximise Σ_i w_i μ(α_i, S_i) s.t. Σ S_i ≤ C, S_i ∈ [min_s, max_s] integers, w_i = U'(X_i).

    utility: "log" (the paper's proportional fairness) w = 1/X; "linear" w = 1 (total expected tokens);
    "alpha-fair" w = X^-a (a = 1 is log, a = 0 linear, a → ∞ approaches max-min).

    Greedy is exact. Δ_i(s) = w_i(μ(α_i, s+1) − μ(α_i, s)) = w_i α_i^{s+1} is ≥ 0 and nonincreasing in s
    (0 ≤ α ≤ 1), i.e. each term is concave. Any feasible S scores Σ_i w_i μ(α_i, min_s) plus the first
    S_i − min_s increments of each drafter, K = Σ(S_i − min_s) increments in all; no K of them can beat the
    K largest of the whole pool {Δ_i(s) : min_s ≤ s < max_s}. Taking the largest remaining increment
    C − N·min_s times (capped by max_s) picks exactly those K largest, and since each drafter's list is
    nonincreasing that choice is a prefix per drafter, hence a feasible S: it reaches the bound. As every
    Δ ≥ 0, a larger K never scores less, so the whole budget is spent (unless all drafters hit max_s).
    A heap keyed (−gain, name) makes it O(N + C log N) and breaks exact ties by name.

    min_s defaults to 1, not 0: eq. 3 averages over the S_i drafted positions, so it presumes S_i ≥ 1. A drafter
    given S_i = 0 teaches the estimator nothing, its α̂ freezes where it was, and greedy keeps it at 0: with
    α = 0.9…0.4, C = 16, η = 0.1, β = 0.5 the two weakest starved in 38–97 % of rounds and U(x̄) ended below
    Fixed-S's (tests/test_goodspeed_longrun.py). min_s = 0 stays available for studies that want AR steps.
    """
    min_s: int = 1
    utility: str = "log"
    a: float = 1.0
    name = "goodspeed"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.utility not in UTILITIES:
            raise ValueError(f"utility must be one of {', '.join(UTILITIES)}, got {self.utility!r}")
        _finite(self.a, 0.0, math.inf, "a")

    def weight(self, goodput: float) -> float:
        if self.utility == "linear":
            return 1.0
        return 1.0 / goodput if self.utility == "log" else goodput ** -self.a

    def objective(self, estimates: Sequence[DrafterEstimate], alloc: Mapping[str, int]) -> float:
        """Σ w_i μ(α_i, S_i), the per-round objective of eq. (5) that allocate() maximises."""
        return sum(self.weight(e.goodput) * mu(alloc[e.name], e.alpha) for e in estimates)

    def allocate(self, estimates: Sequence[DrafterEstimate], budget: int) -> dict[str, int]:
        self._names(estimates, budget)
        alloc = {e.name: self.min_s for e in estimates}
        # Gains computed afresh as w·α^(s+1), not by repeated multiplication, so no rounding accumulates.
        heap = [(-self.weight(e.goodput) * e.alpha ** (self.min_s + 1), e.name, e) for e in estimates
                if self.max_s is None or self.max_s > self.min_s]
        heapq.heapify(heap)
        for _ in range(self._spend(len(alloc), budget)):
            _, name, e = heapq.heappop(heap)
            s = alloc[name] = alloc[name] + 1
            if self.max_s is None or s < self.max_s:
                heapq.heappush(heap, (-self.weight(e.goodput) * e.alpha ** (s + 1), name, e))
        return alloc


@dataclass(frozen=True)
class FixedScheduler(_Bounds):
    """Fixed-S: S_i = C // N each; the remainder C mod N goes one token each to the first drafters by name
    (so C = 20, N = 8 gives 3,3,3,3,2,2,2,2 and the whole budget is spent, like GoodSpeed's). Clipped at
    max_s; estimates are ignored except for their names."""
    name = "fixed"

    def allocate(self, estimates: Sequence[DrafterEstimate], budget: int) -> dict[str, int]:
        names = self._names(estimates, budget)
        if not names:
            return {}
        share, rest = divmod(budget, len(names))
        cap = math.inf if self.max_s is None else self.max_s
        return {n: int(min(cap, share + (k < rest))) for k, n in enumerate(names)}


@lru_cache(maxsize=64)
def _ways(parts: int, total: int, cap: int) -> tuple[tuple[int, ...], ...]:
    """ways[i][r] = number of compositions of r into i parts, each in [0, cap] (exact big integers)."""
    rows = [tuple([1] + [0] * total)]
    for _ in range(parts):
        prev, prefix = rows[-1], [0]
        for v in prev:
            prefix.append(prefix[-1] + v)
        # ways[i][r] = Σ_{k=0..min(cap, r)} ways[i-1][r-k], a window sum over the prefix sums.
        rows.append(tuple(prefix[r + 1] - prefix[max(0, r - cap)] for r in range(total + 1)))
    return tuple(rows)


@dataclass(frozen=True)
class RandomScheduler(_Bounds):
    """Random-S: each call draws S uniformly at random from all integer vectors with S_i ∈ [min_s, max_s] and
    Σ S_i ≤ C, the paper's own constraint ("random S_i with Σ S_i ≤ C"): every such vector equally likely, so
    on average it spends less than C, unlike GoodSpeed and Fixed-S (which always spend C when they can). With
    no binding max_s this is stars and bars with one slack part, C(R+N, N) outcomes for R = C − N·min_s. If
    N·max_s < C the totals run up to N·max_s. Deterministic per seed: the same seed and the same sequence of
    calls give the same allocations (parts are assigned to drafters sorted by name)."""
    seed: int = 0
    name = "random"
    _rng: random.Random = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        super().__post_init__()
        _count(self.seed, 0, "seed")
        object.__setattr__(self, "_rng", random.Random(self.seed))  # the one piece of state: the draw stream

    def allocate(self, estimates: Sequence[DrafterEstimate], budget: int) -> dict[str, int]:
        names = self._names(estimates, budget)
        n, extra = len(names), self._spend(len(names), budget)
        if not names:
            return {}
        cap = extra if self.max_s is None else min(extra, self.max_s - self.min_s)
        if cap >= extra:
            # Stars and bars over N parts and one slack part: N distinct bars among R+N slots, uniformly.
            bars = sorted(self._rng.sample(range(extra + n), n))
            edges = [-1] + bars
            parts = [edges[k + 1] - edges[k] - 1 for k in range(n)]
        else:
            # A binding cap: the total first, with probability ∝ its number of vectors, then part by part with
            # probabilities ∝ the number of completions (exact big integers).
            ways = _ways(n, extra, cap)
            pick = self._rng.randrange(sum(ways[n]))
            left = 0
            while pick >= ways[n][left]:
                pick -= ways[n][left]
                left += 1
            parts = []
            for i in range(n, 0, -1):
                pick = self._rng.randrange(ways[i][left])
                k = 0
                while pick >= ways[i - 1][left - k]:
                    pick -= ways[i - 1][left - k]
                    k += 1
                parts.append(k)
                left -= k
        return {name: self.min_s + p for name, p in zip(names, parts)}


_CLASSES = {"goodspeed": GoodSpeedScheduler, "fixed": FixedScheduler, "random": RandomScheduler}


def make_scheduler(name: str, **params) -> BudgetScheduler:
    """`make_scheduler("goodspeed", min_s=1, utility="log")`; unknown names or parameters raise ValueError."""
    if name not in _CLASSES:
        raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {name!r}")
    cls = _CLASSES[name]
    allowed = {f.name for f in fields(cls) if f.init}
    for key in params:
        if key not in allowed:
            raise ValueError(f"scheduler {name!r}: unknown parameter {key!r} (takes {', '.join(sorted(allowed))})")
    return cls(**params)


def _goodput_list(goodputs: Iterable[float] | Mapping[str, float]) -> list[float]:
    xs = list(goodputs.values() if isinstance(goodputs, Mapping) else goodputs)
    if not xs:
        raise ValueError("goodputs must not be empty")
    return [_finite(x, 0.0, math.inf, f"goodputs[{k}]") for k, x in enumerate(xs)]


def log_utility(goodputs: Iterable[float] | Mapping[str, float]) -> float:
    """Σ ln x_i, the paper's U(x) (Fig. 4); −inf when some drafter has goodput 0."""
    xs = _goodput_list(goodputs)
    return -math.inf if min(xs) == 0 else sum(math.log(x) for x in xs)


def jain(goodputs: Iterable[float] | Mapping[str, float]) -> float:
    """Jain's index (Σx)²/(N Σx²) in [1/N, 1]; all-zero goodputs count as perfectly equal (1.0)."""
    xs = _goodput_list(goodputs)
    sq = sum(x * x for x in xs)
    return 1.0 if sq == 0 else sum(xs) ** 2 / (len(xs) * sq)

