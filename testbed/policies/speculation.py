"""Speculation length: how many tokens a session drafts next.

One policy object per session: after each verified round the verifier calls `observe(RoundResult)`, and
`next_window(now, net)` gives the window the drafter is told to use next. Pure: time and network state are
passed in; nothing here reads a clock or a socket (their benchmark is in testbed/bench/policies.py).

- static     a fixed window.
- heuristic  HF transformers' assisted-generation schedule: +2 when every drafted token is accepted, else −1.
- backoff    DSD's acceptance back-off: AIMD on an EWMA of accepted/γ, or DSD-Sim's three levels.
- network    maximise expected goodput μ(γ)/T_round(γ) from acceptance, RTT, link rates, payload and speeds.
- channel    the window the access point chose with the drafter's band share (allocation `joint`).

`make_speculation(spec)` validates a config and returns a per-session constructor. More policies (AWC,
testbed/policies/awc.py) join by adding a constructor to SPECULATION_POLICIES. `threshold` is a drafter-side
stop rule (stopping.py); make_speculation builds its verifier half, a static window at the cap.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, ClassVar, Protocol, Sequence

from testbed.policies.acceptance import mu
from testbed.policies.spec_checks import check_int, check_num, check_window_bounds, named_spec
from testbed.policies.stopping import split_speculation

_T_FLOOR = 1e-9           # s; a round that costs nothing at all still takes this long (no division by 0)


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
    """One session's window policy. `start_field` names its starting-window field ("gamma" for static, "gamma0"
    for the others): the field a session's requested window (at START) fills when the spec leaves it out."""
    name: str
    start_field: ClassVar[str]

    def next_window(self, now: float, net: NetworkView | None = None) -> int: ...

    def observe(self, r: RoundResult) -> None: ...


# --- shared pieces ---------------------------------------------------------------------------------------

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
        check_num("ewma", "eta", self.eta, 0.0, 1.0, open_lo=True)

    def update(self, x: float) -> float:
        self.value = x if self.value is None else (1.0 - self.eta) * self.value + self.eta * x
        return self.value


# --- closed forms (DESIGN §4) ----------------------------------------------------------------------------

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
    start_field: ClassVar[str] = "gamma"

    def __post_init__(self) -> None:
        allowed = check_window_bounds(self.name, self.gamma_min, self.gamma_max, self.allowed)
        object.__setattr__(self, "allowed", allowed)
        check_int(self.name, "gamma", self.gamma, self.gamma_min, self.gamma_max)

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
    start_field: ClassVar[str] = "gamma0"
    _gamma: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.allowed = check_window_bounds(self.name, self.gamma_min, self.gamma_max, self.allowed)
        check_int(self.name, "gamma0", self.gamma0, self.gamma_min, self.gamma_max)
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
    start_field: ClassVar[str] = "gamma0"
    _gamma: int = field(init=False, repr=False)
    _acc: EWMA = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.allowed = check_window_bounds(self.name, self.gamma_min, self.gamma_max, self.allowed, floor=1)
        check_int(self.name, "gamma0", self.gamma0, self.gamma_min, self.gamma_max)
        check_num(self.name, "low", self.low, 0.0, 1.0)
        check_num(self.name, "high", self.high, self.low, 1.0)
        check_num(self.name, "eta", self.eta, 0.0, 1.0, open_lo=True)
        check_num(self.name, "decrease", self.decrease, 0.0, 1.0, open_lo=True, open_hi=True)
        check_int(self.name, "increase", self.increase, 1)
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
    start_field: ClassVar[str] = "gamma0"
    _est: dict[str, EWMA] = field(init=False, repr=False)      # probs, hits, misses, rtt, draft, verify
    _net: NetworkView = field(init=False, repr=False)            # the latest view (its rates, for observe)

    def __post_init__(self) -> None:
        self.allowed = check_window_bounds(self.name, self.gamma_min, self.gamma_max, self.allowed)
        check_int(self.name, "gamma0", self.gamma0, self.gamma_min, self.gamma_max)
        check_num(self.name, "eta", self.eta, 0.0, 1.0, open_lo=True)
        check_num(self.name, "alpha0", self.alpha0, 0.0, 1.0)
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
    start_field: ClassVar[str] = "gamma0"

    def __post_init__(self) -> None:
        check_window_bounds("channel", self.gamma_min, self.gamma_max, None)
        check_int("channel", "gamma0", self.gamma0, self.gamma_min, self.gamma_max)

    def next_window(self, now: float, net: NetworkView | None = None) -> int:
        hint = net.gamma_hint if net is not None and net.gamma_hint is not None else self.gamma0
        return clamp_window(int(hint), self.gamma_min, self.gamma_max)

    def observe(self, r: RoundResult) -> None:
        pass


# --- configuration ---------------------------------------------------------------------------------------

SPECULATION_POLICIES: dict[str, Callable[..., SpeculationPolicy]] = {
    "static": StaticWindow, "heuristic": HeuristicSchedule, "backoff": AcceptanceBackoff,
    "network": NetworkAware, "channel": ChannelHint,
}


def make_speculation(spec: Mapping | str,
                     registry: Mapping[str, Callable[..., SpeculationPolicy]] | None = None
                     ) -> Callable[[], SpeculationPolicy]:
    """A constructor of fresh per-session policies from "name" or {"policy": name, field: value, ...}
    (no "policy": static). Fields are the constructor's keyword arguments. Everything is checked here, by
    building one policy, so a bad config fails before any session starts (ValueError naming the field).
    "threshold" (stopping.py) gives its verifier half, a static window at the cap, its stop rule checked too."""
    registry = SPECULATION_POLICIES if registry is None else registry
    spec, _ = split_speculation(spec)
    _, ctor, params = named_spec(spec, "policy", "static", registry, "speculation", "speculation policy")
    if isinstance(params.get("allowed"), list):
        params["allowed"] = tuple(params["allowed"])        # YAML gives lists; frozen policies want tuples
    ctor(**params)
    return partial(ctor, **params)
