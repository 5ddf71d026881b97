"""Band allocation policies: invariants on random instances, Zhu's closed form against brute force, and
max-min fairness checked by perturbation."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from testbed.policies.allocation import (ALLOCATION_POLICIES, EqualShare, MaxMinShare, ProportionalShare,
                                         Station, ZhuClosedForm, make_allocation, upload_latency)

POLICIES = [make_allocation(name) for name in ALLOCATION_POLICIES]


def random_stations(rng: random.Random, n: int, caps: bool = False) -> list[Station]:
    # About one station in six has zero demand and one in six is in outage, so the exclusion paths run often.
    return [Station(f"s{i}",
                    0.0 if rng.random() < 0.17 else rng.uniform(0.05, 8.0),
                    0.0 if rng.random() < 0.17 else rng.uniform(1.0, 5000.0),
                    (rng.choice([0.0, rng.uniform(0.01, 2.0)]) if caps and rng.random() < 0.4 else None))
            for i in range(n)]


def eligible(st: Station) -> bool:
    return st.demand > 0 and st.efficiency > 0


def effective_rate(st: Station, f: float) -> float:
    rate = f * st.efficiency
    return rate if st.max_rate is None else min(rate, st.max_rate)


# --- invariants shared by every policy ---

@pytest.mark.parametrize("policy", POLICIES, ids=ALLOCATION_POLICIES)
def test_fractions_nonnegative_and_sum_to_one(policy):
    rng = random.Random(1234)
    for _ in range(250):
        stations = random_stations(rng, rng.randint(1, 12), caps=rng.random() < 0.5)
        shares = policy.allocate(stations)
        assert set(shares) == {st.name for st in stations}
        assert all(f >= 0 and math.isfinite(f) for f in shares.values())
        assert math.isclose(sum(shares.values()), 1.0, abs_tol=1e-12)


@pytest.mark.parametrize("policy", POLICIES, ids=ALLOCATION_POLICIES)
def test_empty_list_gives_empty_dict(policy):
    assert policy.allocate([]) == {}


@pytest.mark.parametrize("policy", POLICIES, ids=ALLOCATION_POLICIES)
def test_nobody_can_use_the_band_gives_an_equal_split(policy):
    for stations in ([Station("a", 2.0, 0.0), Station("b", 0.0, 0.0), Station("c", 1.0, 0.0)],
                     [Station("a", 0.0, 5.0), Station("b", 0.0, 1.0), Station("c", 0.0, 0.0)]):
        if policy.name == "proportional" and any(st.demand for st in stations):
            continue  # proportional ignores the channel by design: tested below
        assert policy.allocate(stations) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


@pytest.mark.parametrize("policy", POLICIES, ids=ALLOCATION_POLICIES)
def test_duplicate_names_rejected(policy):
    with pytest.raises(ValueError, match="'a'.*twice"):
        policy.allocate([Station("a", 1.0), Station("a", 2.0)])


# --- equal and proportional ---

def test_equal_share_ignores_demand_and_channel():
    shares = EqualShare().allocate([Station("a", 0.0, 0.0), Station("b", 5.0, 10.0), Station("c", 1.0, 1.0),
                                    Station("d", 2.0, 3.0)])
    assert shares == {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}


def test_proportional_follows_demand_only():
    shares = ProportionalShare().allocate([Station("a", 1.0, 100.0), Station("b", 0.0, 300.0),
                                           Station("c", 4.0, 0.0)])
    assert shares == pytest.approx({"a": 0.25, "b": 0.75, "c": 0.0})


# --- Zhu's closed form ---

def zhu_latency_grid(stations: list[Station], step: float) -> tuple[float, np.ndarray]:
    """Best total latency over the simplex grid, and where it is."""
    d = np.array([st.demand for st in stations])
    s = np.array([st.efficiency for st in stations])
    ticks = np.arange(step, 1.0, step)
    if len(stations) == 2:
        f = np.stack([ticks, 1.0 - ticks], axis=1)
    else:
        f1, f2 = np.meshgrid(ticks, ticks, indexing="ij")
        f = np.stack([f1.ravel(), f2.ravel(), 1.0 - f1.ravel() - f2.ravel()], axis=1)
        f = f[f[:, 2] > step / 2]
    lat = (d / (f * s)).sum(axis=1)
    best = int(np.argmin(lat))
    return float(lat[best]), f[best]


@pytest.mark.parametrize("n,step", [(2, 0.001), (3, 0.002)])
def test_zhu_matches_brute_force(n, step):
    rng = random.Random(n)
    for _ in range(25):
        stations = [Station(f"s{i}", rng.uniform(0.1, 8.0), rng.uniform(1.0, 100.0)) for i in range(n)]
        shares = ZhuClosedForm().allocate(stations)
        closed = upload_latency(stations, shares, 1.0)
        brute, where = zhu_latency_grid(stations, step)
        assert closed <= brute * (1 + 1e-12)
        # The grid's best point sits next to the optimum (a couple of steps: the objective is flat there).
        assert np.abs(where - [shares[st.name] for st in stations]).max() <= 2 * step
        # And the optimum value is the one the derivation gives.
        assert closed == pytest.approx(sum(math.sqrt(st.demand / st.efficiency) for st in stations) ** 2)


def test_zhu_beats_every_other_policy():
    rng = random.Random(7)
    for _ in range(200):
        stations = random_stations(rng, rng.randint(1, 10))
        best = upload_latency(stations, ZhuClosedForm().allocate(stations), 20e6)
        for policy in POLICIES:
            assert best <= upload_latency(stations, policy.allocate(stations), 20e6) * (1 + 1e-9)


def test_zhu_excludes_zero_demand_and_outage():
    shares = ZhuClosedForm().allocate([Station("a", 1.0, 4.0), Station("b", 4.0, 4.0), Station("c", 0.0, 9.0),
                                       Station("d", 2.0, 0.0)])
    # sqrt(4/1) = 2 and sqrt(4/4) = 1.
    assert shares == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 0.0, "d": 0.0})


# --- max-min ---

def assert_max_min(stations: list[Station], shares: dict[str, float], eps: float = 1e-4) -> None:
    """Moving eps band from j to i may raise i's rate only by lowering j's rate, and j's rate must not
    exceed i's: no station gains at the expense of one that is already worse off (or at nobody's)."""
    rate = {st.name: effective_rate(st, shares[st.name]) for st in stations}
    for i in stations:
        for j in stations:
            if i is j or shares[j.name] < eps:
                continue
            gained = effective_rate(i, shares[i.name] + eps) - rate[i.name]
            if gained <= 1e-12 or not eligible(i):
                continue
            lost = rate[j.name] - effective_rate(j, shares[j.name] - eps)
            assert lost > 0 and eligible(j), (i.name, j.name, shares)
            assert rate[j.name] <= rate[i.name] + 1e-9, (i.name, j.name, shares)


def test_max_min_uncapped_rates_equal():
    rng = random.Random(99)
    for _ in range(200):
        stations = random_stations(rng, rng.randint(1, 10))
        shares = MaxMinShare().allocate(stations)
        usable = [st for st in stations if eligible(st)]
        if not usable:
            continue
        rates = [shares[st.name] * st.efficiency for st in usable]
        assert max(rates) == pytest.approx(min(rates), rel=1e-9)
        assert all(shares[st.name] == 0 for st in stations if not eligible(st))
        assert_max_min(stations, shares)


def test_max_min_inverse_efficiency():
    shares = MaxMinShare().allocate([Station("a", 1.0), Station("b", 2.0), Station("c", 4.0)])
    assert shares == pytest.approx({"a": 4 / 7, "b": 2 / 7, "c": 1 / 7})


def test_max_min_with_caps_is_water_filling():
    rng = random.Random(5)
    checked = 0
    for _ in range(300):
        stations = random_stations(rng, rng.randint(2, 10), caps=True)
        shares = MaxMinShare().allocate(stations)
        usable = [st for st in stations if eligible(st)]
        if not usable:
            continue
        rate = {st.name: shares[st.name] * st.efficiency for st in usable}
        uncapped = [st for st in usable if st.max_rate is None or rate[st.name] < st.max_rate - 1e-12]
        if uncapped:  # band left after the caps: capped stations get exactly their cap, the rest one level
            level = rate[uncapped[0].name]
            assert all(rate[st.name] == pytest.approx(level, rel=1e-9) for st in uncapped)
            for st in usable:
                if st not in uncapped:
                    assert rate[st.name] == pytest.approx(st.max_rate, rel=1e-9, abs=1e-12)
                    assert st.max_rate <= level * (1 + 1e-9)
            assert_max_min(stations, shares)
            checked += 1
    assert checked > 100


def test_max_min_caps_example_and_leftover():
    # Uncapped the level would be 1/(1 + 1/2 + 1/4) = 4/7; a's cap 0.2 binds, b and c share the remaining 0.8.
    shares = MaxMinShare().allocate([Station("a", 1.0, max_rate=0.2), Station("b", 2.0), Station("c", 4.0)])
    assert shares == pytest.approx({"a": 0.2, "b": 0.8 * 2 / 3, "c": 0.8 / 3})
    # Every cap met with band to spare: the spare is spread in proportion, keeping rates proportional to caps.
    shares = MaxMinShare().allocate([Station("a", 1.0, max_rate=0.1), Station("b", 2.0, max_rate=0.2),
                                     Station("z", 3.0, demand=0.0)])
    assert shares == pytest.approx({"a": 0.5, "b": 0.5, "z": 0.0})


# --- inputs and factory ---

@pytest.mark.parametrize("field,value", [("efficiency", -1.0), ("efficiency", math.nan), ("demand", -0.5),
                                         ("demand", math.nan), ("demand", math.inf), ("max_rate", -1.0),
                                         ("max_rate", math.nan)])
def test_invalid_station_rejected(field, value):
    kwargs = {"name": "sta7", "efficiency": 1.0, "demand": 1.0, field: value}
    with pytest.raises(ValueError, match=f"'sta7'.*{field}"):
        Station(**kwargs)


def test_make_allocation():
    assert [make_allocation(name).name for name in ALLOCATION_POLICIES] == list(ALLOCATION_POLICIES)
    with pytest.raises(ValueError, match="equal, proportional, max-min, zhu.*'fair'"):
        make_allocation("fair")


def test_upload_latency():
    stations = [Station("a", 2.0, 100.0), Station("b", 1.0, 0.0)]
    assert upload_latency(stations, {"a": 0.5, "b": 0.5}, 10.0) == pytest.approx(10.0)
    assert upload_latency(stations, {"a": 0.0, "b": 1.0}, 10.0) == math.inf
    assert upload_latency(stations, {"b": 1.0}, 10.0) == math.inf
    with pytest.raises(ValueError, match="band"):
        upload_latency(stations, {"a": 1.0}, 0.0)
