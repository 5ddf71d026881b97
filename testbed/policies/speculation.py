"""Speculation length: how many tokens a session drafts next.

One policy object per session: after each verified round the verifier calls `observe(RoundResult)`, and
`next_window(now, net)` gives the window the drafter is told to use next. Pure: time and network state are
passed in; nothing here reads a clock or a socket (except `decision_times`, the benchmark at the bottom).

- static     a fixed window.
- heuristic  HF transformers' assisted-generation schedule: +2 when every drafted token is accepted, else −1.
- backoff    DSD's acceptance back-off: AIMD on an EWMA of accepted/γ, or DSD-Sim's three levels.
- threshold  SpecDec++-style stop rule applied while drafting; `next_window` is only the cap.
- network    maximise expected goodput μ(γ)/T_round(γ) from acceptance, RTT, link rates, payload and speeds.

`make_speculation(spec)` validates a config and returns a per-session constructor. More policies (AWC,
testbed/policies/awc.py) join by adding a constructor to SPECULATION_POLICIES.
"""
from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Protocol, Sequence

GAMMA_LIMIT = 64          # the largest window anything here accepts (experiment.Speculation.gamma's bound)
_T_FLOOR = 1e-9           # s; a round that costs nothing at all still takes this long (no division by 0)


@dataclass(frozen=True)
class StaticGamma:
    """A fixed window: `gamma` if given, else whatever the session asked for at START (the verifier's
    current interface; the policies below replace it)."""
    gamma: int | None = None
    name = "static"

    def next_window(self, requested: int, accepted_history: list[int]) -> int:
        return requested if self.gamma is None else self.gamma


# --- what a policy is told -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoundResult:
    """What one verified round of one session tells the policy."""
    gamma: int                # tokens drafted this round
    accepted: int             # of them accepted (0..gamma); the verifier also emitted one correction/bonus token
    t: float                  # time of the verdict (s)
    rtt_s: float | None = None        # drafter-measured send → verdict time
    verify_s: float | None = None     # verifier compute time of the batch
    queue_s: float | None = None      # time the draft waited at the verifier
    draft_s: float | None = None      # drafter compute time for the window
    accept_probs: tuple[float, ...] | None = None   # min(1, p/q) per drafted position, when known

    def __post_init__(self) -> None:       # a miscounted round would silently skew every estimate
        if not 0 <= self.accepted <= self.gamma:
            raise ValueError(f"round result: accepted must be in [0, gamma={self.gamma}], got {self.accepted}")


@dataclass(frozen=True)
class NetworkView:
    """What the network-aware policy knows (from telemetry/channel state); None = unknown. Rates in Mbit/s."""
    rtt_s: float | None = None                 # base round-trip (propagation+queueing), without serialisation
    uplink_mbps: float | None = None
    downlink_mbps: float | None = None
    bytes_per_token_up: float = 24.0           # payload per drafted token (ids ≈ 24 B incl. framing; topk:K ≈ 8K+25)
    bytes_fixed_up: float = 120.0              # per DRAFT frame
    bytes_down: float = 120.0                  # per VERDICT frame
    draft_s_per_token: float | None = None
    verify_s_base: float | None = None
    verify_s_per_token: float | None = None
    gamma_hint: int | None = None              # a window chosen elsewhere (the AP's joint band + γ allocation)

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if value is not None and not value >= 0:     # `not >=` also catches NaN
                raise ValueError(f"network view: {name} must be >= 0, got {value!r}")


class SpeculationPolicy(Protocol):
    name: str

    def next_window(self, now: float, net: NetworkView | None = None) -> int: ...

    def observe(self, r: RoundResult) -> None: ...


# --- shared pieces ---------------------------------------------------------------------------------------

def _int(owner: str, name: str, value, lo: int, hi: int = GAMMA_LIMIT, bounds: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"speculation {owner}: {name} must be an integer in {bounds or f'[{lo}, {hi}]'}, "
                         f"got {value!r}")


def _num(owner: str, name: str, value, lo: float, hi: float, open_lo: bool = False, open_hi: bool = False) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (lo < value if open_lo else lo <= value) and (value < hi if open_hi else value <= hi))
    if not ok:
        raise ValueError(f"speculation {owner}: {name} must be a number in {'(' if open_lo else '['}{lo:g}, "
                         f"{hi:g}{')' if open_hi else ']'}, got {value!r}")


def _bounds(owner: str, gamma_min, gamma_max, allowed, floor: int = 0) -> tuple[int, ...] | None:
    """Checks the clamp fields; returns the allowed windows inside [gamma_min, gamma_max], sorted."""
    _int(owner, "gamma_min", gamma_min, floor)
    _int(owner, "gamma_max", gamma_max, gamma_min, bounds=f"[gamma_min={gamma_min}, {GAMMA_LIMIT}]")
    if allowed is None:
        return None
    if isinstance(allowed, (str, bytes)) or not isinstance(allowed, (list, tuple, set, frozenset)):
        raise ValueError(f"speculation {owner}: allowed must be a list of integers, got {allowed!r}")
    for value in allowed:
        _int(owner, "allowed", value, 0)
    inside = tuple(sorted(v for v in set(allowed) if gamma_min <= v <= gamma_max))
    if not inside:
        raise ValueError(f"speculation {owner}: allowed has no window in [gamma_min, gamma_max] = "
                         f"[{gamma_min}, {gamma_max}], got {sorted(allowed)}")
    return inside


def clamp_window(gamma: int, gamma_min: int, gamma_max: int, allowed: Sequence[int] | None = None) -> int:
    """gamma clamped to [gamma_min, gamma_max], then the nearest allowed window (ties → the smaller)."""
    gamma = min(max(gamma, gamma_min), gamma_max)
    return min(allowed, key=lambda a: (abs(a - gamma), a)) if allowed else gamma


@dataclass
class EWMA:
    """value ← (1 − eta)·value + eta·x; the first sample sets the value when no `value` (prior) is given."""
    eta: float
    value: float | None = None

    def __post_init__(self) -> None:
        _num("ewma", "eta", self.eta, 0.0, 1.0, open_lo=True)

    def update(self, x: float) -> float:
        self.value = x if self.value is None else (1.0 - self.eta) * self.value + self.eta * x
        return self.value


# --- closed forms (DESIGN §4) ----------------------------------------------------------------------------

def mu(gamma: int, alpha: float) -> float:
    """Expected tokens per round with window gamma and per-token acceptance alpha (iid): Σ_{k=0..γ} α^k =
    (1 − α^{γ+1})/(1 − α), counting the correction/bonus token; γ + 1 in the α → 1 limit."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if alpha > 1.0 - 1e-12:      # the closed form is 0/0 at 1 and loses all digits just below it
        return gamma + 1.0
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def _cost_line(net: NetworkView) -> tuple[float, float]:
    """T_round(γ) = a + b·γ: (a, b) in seconds. Unknown terms count 0; Mbit/s → bit/s is the 1e6."""
    a, b = net.rtt_s or 0.0, 0.0
    if net.uplink_mbps is not None:
        up = net.uplink_mbps * 1e6
        a += 8.0 * net.bytes_fixed_up / up if up > 0 else math.inf     # 0 Mbit/s: an outage, nothing gets up
        b += 8.0 * net.bytes_per_token_up / up if up > 0 else 0.0
    if net.downlink_mbps is not None:
        down = net.downlink_mbps * 1e6
        a += 8.0 * net.bytes_down / down if down > 0 else math.inf
    a += net.verify_s_base or 0.0
    b += (net.draft_s_per_token or 0.0) + (net.verify_s_per_token or 0.0)
    return a, b


def round_time(gamma: int, net: NetworkView) -> float:
    """T_round(γ) = rtt + 8(bytes_fixed_up + γ·bytes_per_token_up)/uplink + 8·bytes_down/downlink
    + γ·draft_s_per_token + verify_s_base + γ·verify_s_per_token. Proactive drafting (the next window drafted
    while the verdict is in flight) is NOT modelled: drafting is counted as serial with the network."""
    a, b = _cost_line(net)
    return a + b * gamma


def expected_goodput(gamma: int, alpha: float, net: NetworkView | None = None) -> float:
    """G(γ) = μ(γ)/T_round(γ), tokens per second (T floored at 1 ns so a view with no costs is defined)."""
    t = round_time(gamma, net or NetworkView())
    return 0.0 if math.isinf(t) else mu(gamma, alpha) / max(t, _T_FLOOR)


def best_gamma(alpha: float, net: NetworkView | None, gamma_max: int, allowed: Sequence[int] | None = None,
               gamma_min: int = 0) -> int:
    """argmax of expected_goodput over [gamma_min, gamma_max] (∩ allowed), exhaustively; ties → smaller γ.
    The range is ≤ 65 windows, so the exhaustive search costs microseconds and needs no concavity argument."""
    candidates = range(gamma_min, gamma_max + 1) if allowed is None else \
        [g for g in sorted(allowed) if gamma_min <= g <= gamma_max]
    if not candidates:
        raise ValueError(f"no window in [{gamma_min}, {gamma_max}] among allowed {allowed!r}")
    a, b = _cost_line(net or NetworkView())
    best, best_g = -1.0, candidates[0]
    for g in candidates:
        t = a + b * g
        value = 0.0 if math.isinf(t) else mu(g, alpha) / max(t, _T_FLOOR)
        if value > best:         # strict: an equal later (larger) window does not replace an earlier one
            best, best_g = value, g
    return best_g


# --- policies --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StaticWindow:
    """A fixed window."""
    gamma: int = 4
    gamma_min: int = 0
    gamma_max: int = 16
    allowed: tuple[int, ...] | None = None
    name = "static"

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", _bounds(self.name, self.gamma_min, self.gamma_max, self.allowed))
        _int(self.name, "gamma", self.gamma, self.gamma_min, self.gamma_max)

    def next_window(self, now: float, net: NetworkView | None = None) -> int:
        return clamp_window(self.gamma, self.gamma_min, self.gamma_max, self.allowed)

    def observe(self, r: RoundResult) -> None:
        pass


@dataclass(eq=False)
class HeuristicSchedule:
    """HF transformers' "heuristic" schedule: start at gamma0; +2 after a round with every drafted token
    accepted, else −1, never below 1. Source: transformers/generation/candidate_generator.py,
    AssistedCandidateGenerator.update_candidate_strategy, `num_assistant_tokens_schedule in {"heuristic",
    "heuristic_transient"}`: `num_matches == len(scores[0]) - 1` → `+= 2`, else `max(1, n - 1)` (transformers
    5.23). HF's counter has no cap; ours stays in [max(1, gamma_min), gamma_max], so one bad round after a long
    accepted run shrinks the window at once. One counter per session, like "heuristic_transient" (plain
    "heuristic" keeps it across generate() calls). HF starts at 20 (num_assistant_tokens); we at 4."""
    gamma0: int = 4
    gamma_min: int = 1
    gamma_max: int = 16
    allowed: tuple[int, ...] | None = None
    name = "heuristic"
    _gamma: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.allowed = _bounds(self.name, self.gamma_min, self.gamma_max, self.allowed)
        _int(self.name, "gamma0", self.gamma0, self.gamma_min, self.gamma_max)
        self._gamma = max(1, self.gamma0)

    def next_window(self, now: float, net: NetworkView | None = None) -> int:
        return clamp_window(self._gamma, self.gamma_min, self.gamma_max, self.allowed)

    def observe(self, r: RoundResult) -> None:
        # "All accepted" is judged on what was really drafted (HF: the candidates it got), not on the counter.
        step = 2 if r.accepted == r.gamma else -1
        self._gamma = min(max(self._gamma + step, 1, self.gamma_min), self.gamma_max)


@dataclass(eq=False)
class AcceptanceBackoff:
    """DSD's acceptance back-off. Known (papers.md §3): DSD-Sim's "Simple" baseline sets γ = 2 if the last
    acceptance ≤ 0.25, 8 if ≥ 0.6, else 4; the paper's own rule is not public. Two modes:
    - "aimd" (default; our choice): a = EWMA_eta(accepted/γ); a ≤ low: γ ← max(gamma_min, ⌊γ·decrease⌋)
      (multiplicative decrease); a ≥ high: γ ← γ + increase (additive increase); else hold. Defaults: DSD-Sim's
      thresholds low 0.25 / high 0.6, eta 0.5, decrease 0.5, increase 1. accepted/γ falls as γ outgrows the
      acceptance (iid α: E[accepted]/γ = α(1 − α^γ)/((1 − α)γ)), so the loop settles at a window that fits α.
    - "levels": DSD-Sim's rule on the EWMA: gamma_min / gamma0 / gamma_max. Its exact baseline is
      {"policy": "backoff", "mode": "levels", "eta": 1, "gamma_min": 2, "gamma_max": 8}.
    Rounds with γ = 0 carry no acceptance and are ignored, so gamma_min must be ≥ 1 here."""
    gamma0: int = 4
    gamma_min: int = 1
    gamma_max: int = 16
    allowed: tuple[int, ...] | None = None
    low: float = 0.25
    high: float = 0.6
    eta: float = 0.5
    decrease: float = 0.5
    increase: int = 1
    mode: str = "aimd"
    name = "backoff"
    _gamma: int = field(init=False, repr=False)
    _acc: EWMA = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.allowed = _bounds(self.name, self.gamma_min, self.gamma_max, self.allowed, floor=1)
        _int(self.name, "gamma0", self.gamma0, self.gamma_min, self.gamma_max)
        _num(self.name, "low", self.low, 0.0, 1.0)
        _num(self.name, "high", self.high, self.low, 1.0)
        _num(self.name, "eta", self.eta, 0.0, 1.0, open_lo=True)
        _num(self.name, "decrease", self.decrease, 0.0, 1.0, open_lo=True, open_hi=True)
        _int(self.name, "increase", self.increase, 1)
        if self.mode not in ("aimd", "levels"):
            raise ValueError(f"speculation backoff: mode must be aimd or levels, got {self.mode!r}")
        self._gamma, self._acc = self.gamma0, EWMA(self.eta)

    @property
    def acceptance(self) -> float | None:
        return self._acc.value

    def next_window(self, now: float, net: NetworkView | None = None) -> int:
        return clamp_window(self._gamma, self.gamma_min, self.gamma_max, self.allowed)

    def observe(self, r: RoundResult) -> None:
        if r.gamma == 0:
            return
        a = self._acc.update(r.accepted / r.gamma)
        if self.mode == "levels":
            self._gamma = self.gamma_min if a <= self.low else self.gamma_max if a >= self.high else self.gamma0
        elif a <= self.low:
            self._gamma = max(self.gamma_min, int(self._gamma * self.decrease))
        elif a >= self.high:
            self._gamma = min(self.gamma_max, self._gamma + self.increase)


@dataclass(frozen=True)
class ThresholdStop:
    """SpecDec++-style adaptive stopping, applied by the drafter while it drafts: after each drafted token,
    stop once the probability that at least one token so far is rejected, 1 − Π c_j, exceeds `bound`
    (never before gamma_min tokens; always at the cap, `next_window`). c_j estimates P(token j accepted).

    SpecDec++ (Huang et al. 2024) trains an acceptance-prediction head on the draft model for c_j; we have no
    such head and use the draft model's own probability of the token it drafted (its max prob under greedy)
    as the proxy. Default bound 0.7 from DSD-Sim's "Spec++" baseline (γ ∈ [2, 8] there). Confidences are
    clipped to [0, 1]; NaN counts as 0 (stop). `allowed` limits only the cap, not where drafting stops."""
    bound: float = 0.7
    gamma_min: int = 1
    gamma_max: int = 16
    allowed: tuple[int, ...] | None = None
    name = "threshold"

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", _bounds(self.name, self.gamma_min, self.gamma_max, self.allowed))
        _num(self.name, "bound", self.bound, 0.0, 1.0)

    def should_stop(self, confidences: Sequence[float]) -> bool:
        n = len(confidences)
        if n >= self.next_window(0.0):
            return True
        if n < self.gamma_min:
            return False
        keep = 1.0
        for c in confidences:
            keep *= min(1.0, max(0.0, c))
        return 1.0 - keep > self.bound

    def next_window(self, now: float, net: NetworkView | None = None) -> int:
        return self.allowed[-1] if self.allowed else self.gamma_max

    def observe(self, r: RoundResult) -> None:
        pass


@dataclass(eq=False)
class NetworkAware:
    """The window maximising expected goodput G(γ) = μ(γ)/T_round(γ) (`round_time`, `best_gamma`).
    α: GoodSpeed's eq. (3), EWMA_eta of mean(accept_probs), once rounds carry them; else hits/(hits + misses),
    hits = EWMA_eta(accepted), misses = EWMA_eta(1 if a token was rejected): under iid acceptance E[accepted] =
    α(1 − α^γ)/(1 − α) and P(reject) = 1 − α^γ, so the ratio is α, free of accepted/γ's truncation bias for any
    mix of windows. alpha0 before the first round.
    T_round terms the NetworkView leaves None are learnt from rounds (EWMA_eta): rtt_s from rtt_s − modelled
    serialisation (the latest view's rates; 0 when unknown, so it folds into the RTT) − verify time (verify_s,
    else the view's model); draft_s_per_token from draft_s/γ; verify_s_base from verify_s, taken as
    γ-independent (verifying a few tokens is memory-bound), when the view has no verify term. No cost known at
    all: gamma0. Proactive drafting overlap is not modelled. gamma_min defaults to 1: a γ = 0 round says
    nothing about α, so γ = 0 would never be left again."""
    gamma0: int = 4
    gamma_min: int = 1
    gamma_max: int = 16
    allowed: tuple[int, ...] | None = None
    eta: float = 0.2
    alpha0: float = 0.6
    name = "network"
    _est: dict[str, EWMA] = field(init=False, repr=False)      # probs, hits, misses, rtt, draft, verify
    _net: NetworkView = field(init=False, repr=False)            # the latest view (its rates, for observe)

    def __post_init__(self) -> None:
        self.allowed = _bounds(self.name, self.gamma_min, self.gamma_max, self.allowed)
        _int(self.name, "gamma0", self.gamma0, self.gamma_min, self.gamma_max)
        _num(self.name, "eta", self.eta, 0.0, 1.0, open_lo=True)
        _num(self.name, "alpha0", self.alpha0, 0.0, 1.0)
        self._est = {k: EWMA(self.eta) for k in ("probs", "hits", "misses", "rtt", "draft", "verify")}
        self._net = NetworkView()

    @property
    def alpha(self) -> float:
        probs, hits, misses = (self._est[k].value for k in ("probs", "hits", "misses"))
        if probs is not None:
            return min(1.0, max(0.0, probs))
        return hits / (hits + misses) if hits is not None and hits + misses > 0 else self.alpha0

    def view(self, net: NetworkView | None = None) -> NetworkView:
        """The view the decision uses: `net` with its unknown terms filled in from observation."""
        net = net or NetworkView()
        modelled_verify = net.verify_s_base is not None or net.verify_s_per_token is not None
        est = self._est
        return replace(net, rtt_s=net.rtt_s if net.rtt_s is not None else est["rtt"].value,
                       draft_s_per_token=(net.draft_s_per_token if net.draft_s_per_token is not None
                                          else est["draft"].value),
                       verify_s_base=net.verify_s_base if modelled_verify else est["verify"].value)

    def next_window(self, now: float, net: NetworkView | None = None) -> int:
        self._net = net or NetworkView()
        view = self.view(net)
        if round_time(self.gamma_max, view) <= 0.0:
            return clamp_window(self.gamma0, self.gamma_min, self.gamma_max, self.allowed)
        return best_gamma(self.alpha, view, self.gamma_max, self.allowed, self.gamma_min)

    def observe(self, r: RoundResult) -> None:
        est, net = self._est, self._net
        if r.accept_probs:
            est["probs"].update(sum(r.accept_probs) / len(r.accept_probs))
        if r.gamma > 0:
            est["hits"].update(r.accepted)
            est["misses"].update(1.0 if r.accepted < r.gamma else 0.0)
            if r.draft_s is not None:
                est["draft"].update(r.draft_s / r.gamma)
        if r.verify_s is not None:
            est["verify"].update(r.verify_s)
        if r.rtt_s is not None:
            serial = round_time(r.gamma, replace(net, rtt_s=None, draft_s_per_token=None, verify_s_base=None,
                                                 verify_s_per_token=None))
            verify = r.verify_s if r.verify_s is not None else \
                (net.verify_s_base or 0.0) + r.gamma * (net.verify_s_per_token or 0.0)
            if math.isfinite(serial):        # an outage in the view: the sample says nothing about the RTT
                est["rtt"].update(max(0.0, r.rtt_s - serial - verify))


@dataclass(frozen=True)
class ChannelHint:
    """Take the window the access point chose together with the drafter's band share (allocation `joint`,
    testbed/policies/joint.py), published with the link state; `gamma0` until there is one."""
    gamma0: int = 4
    gamma_min: int = 0
    gamma_max: int = 16
    name = "channel"

    def __post_init__(self) -> None:
        _bounds("channel", self.gamma_min, self.gamma_max, None)
        _int("channel", "gamma0", self.gamma0, self.gamma_min, self.gamma_max)

    def next_window(self, now: float, net: NetworkView | None = None) -> int:
        hint = net.gamma_hint if net is not None and net.gamma_hint is not None else self.gamma0
        return clamp_window(int(hint), self.gamma_min, self.gamma_max)

    def observe(self, r: RoundResult) -> None:
        pass


# --- configuration ---------------------------------------------------------------------------------------

SPECULATION_POLICIES: dict[str, Callable[..., SpeculationPolicy]] = {
    "static": StaticWindow, "heuristic": HeuristicSchedule, "backoff": AcceptanceBackoff,
    "threshold": ThresholdStop, "network": NetworkAware, "channel": ChannelHint,
}


def make_speculation(spec: Mapping | str,
                     registry: Mapping[str, Callable[..., SpeculationPolicy]] | None = None
                     ) -> Callable[[], SpeculationPolicy]:
    """A constructor of fresh per-session policies from "name" or {"policy": name, field: value, ...}
    (no "policy": static). Fields are the constructor's keyword arguments. Everything is checked here, by
    building one policy, so a bad config fails before any session starts (ValueError naming the field)."""
    registry = SPECULATION_POLICIES if registry is None else registry
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("policy", "static")
    else:
        raise ValueError(f"speculation must be a policy name or a mapping with a 'policy' field, got {spec!r}")
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"speculation policy must be one of {', '.join(registry)}, got {name!r}")
    ctor = registry[name]
    accepted = inspect.signature(ctor).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    for key in params:
        if not takes_any and (key not in accepted or accepted[key].kind is inspect.Parameter.POSITIONAL_ONLY):
            fields = ", ".join(k for k in accepted if not k.startswith("_")) or "none"
            raise ValueError(f"speculation {name}: unknown field {key!r} (fields: {fields})")
    if isinstance(params.get("allowed"), list):
        params["allowed"] = tuple(params["allowed"])        # YAML gives lists; frozen policies want tuples
    ctor(**params)
    return partial(ctor, **params)


# --- decision time (called by `make bench`; not a test) --------------------------------------------------

def decision_times(n_sessions: int = 64, rounds: int = 50, seed: int = 0,
                   policies: Mapping[str, Callable[[], SpeculationPolicy]] | None = None) -> dict[str, float]:
    """Seconds per decision (observe + next_window, one session's round) for each policy (default: every
    registered one), averaged over n_sessions sessions × rounds rounds, best of 3 passes (the least disturbed
    by other load). With the default set, also "threshold.should_stop": seconds per stop check on a window
    growing to 8 tokens."""
    rng = random.Random(seed)
    results = [RoundResult(g, rng.randint(0, g), 0.05 * k, rtt_s=rng.uniform(0.02, 0.2),
                           verify_s=rng.uniform(0.01, 0.05), draft_s=g * rng.uniform(0.002, 0.01),
                           accept_probs=tuple(rng.random() for _ in range(g)) if k % 2 else None)
               for k, g in enumerate(rng.randint(1, 8) for _ in range(rounds))]
    net = NetworkView(rtt_s=None, uplink_mbps=20.0, downlink_mbps=50.0, bytes_per_token_up=8 * 16 + 25)
    times: dict[str, float] = {}
    for name, ctor in (SPECULATION_POLICIES if policies is None else policies).items():
        best = math.inf
        for _ in range(3):
            sessions = [ctor() for _ in range(n_sessions)]
            start = time.perf_counter()
            for r in results:
                for p in sessions:
                    p.observe(r)
                    p.next_window(r.t, net)
            best = min(best, (time.perf_counter() - start) / (rounds * n_sessions))
        times[name] = best
    if policies is not None:
        return times
    stop, confidences = ThresholdStop(), [rng.uniform(0.7, 1.0) for _ in range(8)]
    start = time.perf_counter()
    for _ in range(n_sessions * rounds // 8):
        for n in range(1, 9):
            stop.should_stop(confidences[:n])
    times["threshold.should_stop"] = (time.perf_counter() - start) / (n_sessions * rounds)
    return times
