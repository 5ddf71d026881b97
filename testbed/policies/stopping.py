"""Drafter-side stop rules: end a draft window early, while it is being drafted.

The verifier's window policy (speculation.py) tells the drafter the window cap in each verdict; a stop rule
runs in the drafter, which calls `should_stop(confidences)` after each drafted token with the draft model's own
probabilities of the tokens drafted so far in this window, and sends the window as soon as the rule says stop
or the cap is reached (the drafter enforces the cap, not the rule).

Users configure both halves with one `speculation.policy` spec; `split_speculation` turns it into what the
verifier runs and what the drafter runs.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from testbed.policies.spec_checks import check_int, check_num, check_window_bounds, named_spec


class StopRule(Protocol):
    name: str

    def should_stop(self, confidences: Sequence[float]) -> bool: ...


@dataclass(frozen=True)
class ThresholdStop:
    """SpecDec++-style adaptive stopping: after each drafted token, stop once the probability that at least one
    token so far is rejected, 1 − Π c_j, exceeds `bound`, never before gamma_min tokens. c_j estimates
    P(token j accepted).

    SpecDec++ (Huang et al. 2024) trains an acceptance-prediction head on the draft model for c_j; we have no
    such head and use the draft model's own probability of the token it drafted (its max prob under greedy)
    as the proxy. Default bound 0.7 from DSD-Sim's "Spec++" baseline (γ ∈ [2, 8] there). Confidences are
    clipped to [0, 1]; NaN counts as 0 (stop)."""
    bound: float = 0.7
    gamma_min: int = 1
    name = "threshold"

    def __post_init__(self) -> None:
        check_num(self.name, "bound", self.bound, 0.0, 1.0)
        check_int(self.name, "gamma_min", self.gamma_min, 0)

    def should_stop(self, confidences: Sequence[float]) -> bool:
        if len(confidences) < self.gamma_min:
            return False
        keep = 1.0
        for c in confidences:
            keep *= min(1.0, max(0.0, c))
        return 1.0 - keep > self.bound


STOP_RULES: dict[str, Callable[..., StopRule]] = {"threshold": ThresholdStop}

# A threshold spec's fields that bound the window the verifier tells the drafter, not where the drafter stops.
_CAP_FIELDS = ("gamma_max", "allowed")
_DEFAULT_CAP = 16         # the window policies' default gamma_max


def split_speculation(spec) -> tuple[Mapping | str, dict | None]:
    """(window spec for speculation.make_speculation, stop spec for make_stop_rule or None) from a
    `speculation.policy` spec as users write it: a policy name or {"policy": name, field: value, ...}.

    Only `threshold` has a drafter half. Its verifier half is a static window at the cap: the largest allowed
    window if `allowed` is given, else gamma_max (default 16), so every verdict tells the drafter the cap and the
    drafter stops earlier by the rule. Its drafter half is {"rule": "threshold", "bound": ..., "gamma_min": ...},
    defaults filled in. Other specs are returned as they are, with no stop rule (make_speculation checks them).
    A bad threshold spec raises ValueError naming the field."""
    if spec == "threshold":
        params: dict = {}
    elif isinstance(spec, Mapping) and spec.get("policy") == "threshold":
        params = {k: v for k, v in spec.items() if k != "policy"}
    else:
        return spec, None
    known = [*inspect.signature(ThresholdStop).parameters, *_CAP_FIELDS]
    for key in params:
        if key not in known:
            raise ValueError(f"speculation threshold: unknown field {key!r} (fields: {', '.join(known)})")
    cap_params = {k: params.pop(k) for k in _CAP_FIELDS if k in params}
    rule = make_stop_rule({"rule": "threshold", **params})
    gamma_max = cap_params.get("gamma_max", _DEFAULT_CAP)
    allowed = check_window_bounds(rule.name, rule.gamma_min, gamma_max, cap_params.get("allowed"))
    cap = allowed[-1] if allowed else gamma_max
    return {"policy": "static", "gamma": cap, "gamma_max": cap}, {"rule": rule.name, **dataclasses.asdict(rule)}


def make_stop_rule(spec: Mapping | str | None) -> StopRule | None:
    """A stop rule from "name" or {"rule": name, field: value, ...}; None for None. Checked here (ValueError
    naming the field), so a bad config fails before any session starts."""
    if spec is None:
        return None
    _, ctor, params = named_spec(spec, "rule", None, STOP_RULES, "stop rule", "stop rule: rule")
    return ctor(**params)
