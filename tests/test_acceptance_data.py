"""Acceptance with its real shape: per-position curves in the synthetic drafter, shipped traces and published
figures by name (nodes/acceptance), the alpha spec forms in configs, and their errors. No models, no sockets."""
from __future__ import annotations

import math

import pytest

import nodes.acceptance as acc
from nodes.backends.synthetic import AlphaSchedule, Curve, Replay, SyntheticDraft, SyntheticTarget, parse_alpha
from nodes.config import DraftModel, NodeConfigError, build_config
from tests.test_synthetic import Driver

V = 32000


def per_position(rounds, gamma):
    """Conditional acceptance per position: accepted at i given positions before i were."""
    reached = [0] * gamma
    passed = [0] * gamma
    for g, a in rounds:
        for i in range(min(a + 1, g)):
            reached[i] += 1
            passed[i] += a > i
    return [p / r for p, r in zip(passed, reached)], reached


def test_curve_measured_per_position_matches():
    curve = [0.9, 0.6, 0.3]
    d = Driver(SyntheticDraft(V, {"curve": curve}, seed=3), SyntheticTarget(V), n_sessions=8, gamma=5)
    for _ in range(600):
        d.step()
    measured, reached = per_position(d.rounds, 5)
    expected = curve + [curve[-1]] * 2            # past the end: the last value
    for m, e, n in zip(measured, expected, reached):
        assert n > 100
        assert abs(m - e) < 5 * math.sqrt(e * (1 - e) / n), (measured, expected, reached)


def test_curve_is_reproducible_and_lossless():
    def run():
        d = Driver(SyntheticDraft(V, {"curve": [0.8, 0.4]}, seed=11), SyntheticTarget(V), 3, 4, proactive=True)
        for _ in range(50):
            d.step()
        return d.rounds, d.out
    first, again = run(), run()
    assert first == again
    rounds, out = first
    assert any(a == 0 for _, a in rounds) and any(a == 4 for _, a in rounds)


def test_curve_of_one_value_is_constant_alpha():
    assert parse_alpha({"curve": [0.7]}) == Curve((0.7,))
    c = parse_alpha({"curve": [0.9, 0.2]})
    assert [c.at_position(i) for i in range(4)] == [0.9, 0.2, 0.2, 0.2]
    assert SyntheticDraft(V, {"curve": [0.5]}).alpha_now() is None


def test_shipped_traces_resolve_and_replay():
    names = acc.trace_names()
    assert "smollm2-135m-int8/builtin" in names
    for name in names:
        t = acc.trace(name)
        assert t.header["gamma"] == "8" and t.header["proactive"] == "False" and "command" in t.header
        src = parse_alpha({"trace": name})
        assert isinstance(src, Replay) and src.records == t.records and len(src.records) > 50
        assert all(g == 8 for g, _ in t.records)
        assert 0 < t.implied_alpha(4) < 1
        assert abs(acc.mean_tokens(t.implied_alpha(4), 4) - (1 + t.mean_accepted(4))) < 1e-9
        assert len(t.curve()) == 8 and all(0 <= a <= 1 for a in t.curve())
    # replayed at gamma 4, the trace's counts are capped at 4
    d = Driver(SyntheticDraft(V, {"trace": "smollm2-135m-int8/builtin"}), SyntheticTarget(V), 1, 4)
    for _ in range(40):
        d.step()
    recs = acc.trace("smollm2-135m-int8/builtin").records
    assert [a for _, a in d.rounds] == [min(a, 4) for _, a in recs[:40]]


def test_published_entries_resolve():
    entries = acc.published_entries()
    assert len(entries) >= 20
    for e in entries.values():
        assert e.url.startswith("http") and e.source
    assert parse_alpha({"published": "leviathan-t5xxl-t5small-ende-t0"}) == AlphaSchedule(((0.0, 0.75),))
    curve = parse_alpha({"published": "eagle-llama31-8b-mtbench-curve"})
    assert isinstance(curve, Curve) and curve.values[0] == 0.71
    with pytest.raises(ValueError, match="without a fixed gamma"):
        parse_alpha({"published": "specbench-sps-vicuna7b"})


def test_implied_alpha_inverts_mu():
    for alpha in (0.0, 0.3, 0.6, 0.85, 0.99):
        for gamma in (1, 4, 8):
            assert abs(acc.implied_alpha(acc.mean_tokens(alpha, gamma), gamma) - alpha) < 1e-6
    e = acc.Published("x", "t", "d", "ds", "s", "http://x", tau=3.0, gamma=4)
    assert abs(acc.mean_tokens(e.effective_alpha(), 4) - 3.0) < 1e-9
    with pytest.raises(ValueError):
        acc.implied_alpha(6.0, 4)


@pytest.mark.parametrize("spec, match", [
    ({"trace": "nope/none"}, "known traces are .*smollm2-135m-int8/builtin"),
    ({"published": "nope"}, "known ids are .*leviathan"),
    ({"curve": []}, "non-empty"),
    ({"curve": [0.5, 1.5]}, "alpha"),
    ({"curve": "0.5"}, "non-empty"),
    ({"curve": [0.5], "trace": "x"}, "mapping"),
    ({"bogus": 1}, "mapping"),
])
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_alpha(spec)


def test_config_accepts_the_new_forms():
    ok = [{"curve": [0.9, 0.5]}, {"trace": "smollm2-135m-int8/builtin"},
          {"published": "leviathan-lamda137b-lamda2b-dialog-t0"}, {"replay": "f.jsonl"}, 0.5, [[0, 0.5]]]
    for spec in ok:
        m = build_config(DraftModel, {"backend": "synthetic", "alpha": spec}, "x")
        assert m.alpha == spec
    for spec, words in [({"curve": [2]}, "curve"), ({"trace": "no/such"}, "known traces"),
                        ({"published": "no"}, "known ids"), ({"curve": [0.5], "replay": "f"}, "expected")]:
        with pytest.raises(NodeConfigError, match=words):
            build_config(DraftModel, {"backend": "synthetic", "alpha": spec}, "x")


def test_listing_runs(capsys):
    from nodes.acceptance.__main__ import main
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-int8/builtin" in out and "leviathan-t5xxl-t5small-ende-t0" in out
