"""Drafter-side stop rules (SpecDec++-style threshold) and how a `speculation.policy` spec splits into the
verifier's window policy and the drafter's stop rule."""
from __future__ import annotations

import random

import pytest

from testbed.policies.speculation import SPECULATION_POLICIES, make_speculation
from testbed.policies.stopping import STOP_RULES, ThresholdStop, make_stop_rule, split_speculation


def test_threshold_stops_exactly_when_rejection_probability_exceeds_bound():
    rng = random.Random(11)
    for _ in range(300):
        bound = rng.uniform(0.05, 0.95)
        stop = ThresholdStop(bound, gamma_min=1)
        confidences, keep = [], 1.0
        while len(confidences) < 64:            # the drafter's cap
            c = rng.uniform(0.5, 1.0)
            confidences.append(c)
            keep *= c
            stopped = stop.should_stop(confidences)
            assert stopped == (1.0 - keep > bound)
            if stopped:
                break


def test_threshold_boundary_min_and_nan():
    stop = ThresholdStop(0.5)
    assert not stop.should_stop([0.5])             # 1 − 0.5 = 0.5, not > 0.5
    assert stop.should_stop([0.5, 0.99])
    assert not stop.should_stop([])
    assert not ThresholdStop(0.7).should_stop([1.0] * 64)   # the cap is the drafter's, not the rule's
    assert not ThresholdStop(0.1, gamma_min=3).should_stop([0.1, 0.1])   # never before gamma_min
    assert ThresholdStop(0.1, gamma_min=3).should_stop([0.1, 0.1, 0.1])
    assert ThresholdStop(0.5).should_stop([float("nan")])
    assert ThresholdStop(0.5).should_stop([-3.0]) and not ThresholdStop(0.5).should_stop([7.0])   # clipped


def test_threshold_cap_is_the_verifiers_static_window():
    def cap(spec) -> int:
        return make_speculation(split_speculation(spec)[0])().next_window(0.0)
    assert cap({"policy": "threshold", "gamma_max": 3}) == 3
    assert cap({"policy": "threshold", "gamma_max": 10, "allowed": [2, 4, 8]}) == 8
    assert cap({"policy": "threshold", "gamma_max": 40}) == 40          # above the window policies' 16
    assert cap("threshold") == 16


def test_split_speculation():
    assert split_speculation("threshold") == ({"policy": "static", "gamma": 16, "gamma_max": 16},
                                              {"rule": "threshold", "bound": 0.7, "gamma_min": 1})
    window, stop = split_speculation({"policy": "threshold", "bound": 0.6, "gamma_min": 2, "gamma_max": 12,
                                      "allowed": [2, 4, 6, 20]})
    assert window == {"policy": "static", "gamma": 6, "gamma_max": 6}
    assert stop == {"rule": "threshold", "bound": 0.6, "gamma_min": 2}
    assert make_stop_rule(stop) == ThresholdStop(0.6, 2)
    spec = {"policy": "heuristic", "gamma0": 3}
    assert split_speculation(spec) == (spec, None) and split_speculation("network") == ("network", None)
    assert split_speculation({"gamma": 5}) == ({"gamma": 5}, None)


@pytest.mark.parametrize("spec, field", [
    ({"policy": "threshold", "bound": 1.5}, "bound"),
    ({"policy": "threshold", "gamma_min": -1}, "gamma_min"),
    ({"policy": "threshold", "gamma_min": 5, "gamma_max": 3}, "gamma_max"),
    ({"policy": "threshold", "allowed": [20, 30]}, "allowed"),
    ({"policy": "threshold", "allowed": "4,8"}, "allowed"),
    ({"policy": "threshold", "bund": 0.5}, "bund"),
])
def test_bad_threshold_specs_name_the_field(spec, field):
    with pytest.raises(ValueError, match=field):
        split_speculation(spec)
    with pytest.raises(ValueError, match=field):
        make_speculation(spec)


def test_make_stop_rule():
    assert make_stop_rule(None) is None
    assert make_stop_rule("threshold") == ThresholdStop()
    assert make_stop_rule({"rule": "threshold", "bound": 0.6}) == ThresholdStop(0.6)
    for spec, field in (({"rule": "nope"}, "rule"), ({"bound": 0.5}, "rule"), ({"rule": "threshold", "x": 1}, "'x'"),
                        ({"rule": "threshold", "bound": 2}, "bound"), (42, "stop rule")):
        with pytest.raises(ValueError, match=field):
            make_stop_rule(spec)
    assert set(STOP_RULES) == {"threshold"}


def test_threshold_is_a_stop_rule_not_a_window_policy():
    assert "threshold" not in SPECULATION_POLICIES
    policy = make_speculation({"policy": "threshold", "bound": 0.6})()       # experiment files still say so
    assert policy.name == "static" and policy.next_window(0.0) == 16
