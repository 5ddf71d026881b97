"""How an access point splits its band among its stations, one direction at a time.

The AP owns a total band B per direction. Station k has a spectral efficiency s_k (bits/s/Hz at its current
SNR, 0 in outage) and a demand D_k (what it wants to send this round, e.g. gamma x payload bytes). A policy
returns band fractions f_k >= 0 with sum f_k = 1, so station k gets the rate f_k * B * s_k.

Shared conventions (the tests hold every policy to them):
- every station gets a key in the result, with 0.0 where it gets no band;
- the fractions always sum to 1: in this model an AP never leaves its band idle, so when no station can use it
  (all demands 0, or every station with demand in outage) the band is split equally rather than returned empty;
- an empty station list gives {}.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

ALLOCATION_POLICIES = ("equal", "proportional", "max-min", "zhu")


@dataclass(frozen=True)
class Station:
    name: str
    efficiency: float                # bits/s/Hz, >= 0 (0 = outage)
    demand: float = 1.0              # bytes (any consistent unit), >= 0
    max_rate: float | None = None    # max-min only: the most rate it can use, in units of B*s (None = uncapped)

    def __post_init__(self) -> None:
        # `not x >= 0` also catches NaN; inf is rejected too since no allocation is meaningful with it.
        for field in ("efficiency", "demand") + (("max_rate",) if self.max_rate is not None else ()):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"station {self.name!r}: {field} must be a finite number >= 0, got {value!r}")


class AllocationPolicy(Protocol):
    name: str

    def allocate(self, stations: Sequence[Station]) -> dict[str, float]: ...


def check_stations(stations: Sequence[Station]) -> None:
    # Results are keyed by name, so two stations with one name would silently share (and lose) a share.
    seen: set[str] = set()
    for st in stations:
        if st.name in seen:
            raise ValueError(f"station {st.name!r}: name appears twice")
        seen.add(st.name)


def equal_split(stations: Sequence[Station]) -> dict[str, float]:
    share = 1.0 / len(stations)
    return {st.name: share for st in stations}


def _normalised(stations: Sequence[Station], weights: dict[str, float]) -> dict[str, float]:
    """weights (for a subset of stations, all > 0) scaled to sum to 1; the other stations get 0."""
    total = sum(weights.values())
    if not weights or total <= 0:
        return equal_split(stations)
    return {st.name: weights.get(st.name, 0.0) / total for st in stations}


@dataclass(frozen=True)
class EqualShare:
    """1/N of the band each, whatever the demand or channel: the uniform baseline the papers compare with."""
    name = "equal"

    def allocate(self, stations: Sequence[Station]) -> dict[str, float]:
        check_stations(stations)
        return equal_split(stations) if stations else {}


@dataclass(frozen=True)
class ProportionalShare:
    """f_k proportional to D_k. It ignores the channel on purpose (a demand-only baseline), so a station in
    outage with demand still gets its share, which is wasted. All demands 0 gives an equal split."""
    name = "proportional"

    def allocate(self, stations: Sequence[Station]) -> dict[str, float]:
        check_stations(stations)
        if not stations:
            return {}
        return _normalised(stations, {st.name: st.demand for st in stations if st.demand > 0})


@dataclass(frozen=True)
class MaxMinShare:
    """Max-min fair rates by water-filling, over the stations that want and can use band.

    Eligible stations have demand > 0 and efficiency > 0. A zero-demand station gets nothing; so does one in
    outage, because no band gives it any rate and max-min would otherwise pour the whole band into it trying.
    Uncapped, max-min fair rates are equal rates: f_k = r / s_k with r = 1 / sum_j (1/s_j).

    Caps (Station.max_rate, in units of B*s, i.e. f_k * s_k <= max_rate) make it proper water-filling: the
    water level r rises until a station's cap is reached; that station is fixed at exactly its cap and the
    band left over keeps raising the others. If every eligible station reaches its cap and band is still left,
    the leftover is spread over them in proportion to the band they already have (rates stay proportional to
    the caps, just above them), since the band is never left idle. Other policies ignore max_rate.
    """
    name = "max-min"

    def allocate(self, stations: Sequence[Station]) -> dict[str, float]:
        check_stations(stations)
        if not stations:
            return {}
        eligible = [st for st in stations if st.demand > 0 and st.efficiency > 0]
        if not eligible:
            return equal_split(stations)
        band: dict[str, float] = {}
        remaining = 1.0
        # Band needed per unit of common rate by the stations still below their cap.
        inv_sum = sum(1.0 / st.efficiency for st in eligible)
        # Lowest cap first: once the level passes a cap, every lower cap has been passed too.
        capped = sorted((st for st in eligible if st.max_rate is not None), key=lambda st: st.max_rate)
        for st in capped:
            level = remaining / inv_sum
            if st.max_rate > level:
                break
            band[st.name] = st.max_rate / st.efficiency
            remaining -= band[st.name]
            inv_sum -= 1.0 / st.efficiency
        free = [st for st in eligible if st.name not in band]
        if free:
            # Rounding in the running sums can leave inv_sum a hair off; recompute it over the free set.
            level = max(remaining, 0.0) / sum(1.0 / st.efficiency for st in free)
            for st in free:
                band[st.name] = level / st.efficiency
        return _normalised(stations, {k: v for k, v in band.items() if v > 0})


@dataclass(frozen=True)
class ZhuClosedForm:
    """Minimises the total upload latency sum_k D_k / (f_k B s_k) subject to sum_k f_k = 1.

    Zhu et al. 2025 (arXiv 2510.11331) state a closed form for their bandwidth allocation; their text was not
    available, so this is the standard derivation (research/papers.md, placeholder [D]):

        Lagrangian  L = sum_k a_k / f_k + mu (sum_k f_k - 1),   a_k = D_k / (B s_k) > 0
        dL/df_k = -a_k / f_k^2 + mu = 0   =>   f_k = sqrt(a_k / mu),  and sum f_k = 1 fixes sqrt(mu)
        =>  f_k = sqrt(D_k/s_k) / sum_j sqrt(D_j/s_j)      (B cancels)

    The objective is convex on the simplex, so this stationary point is the global minimum; equivalently, by
    Cauchy-Schwarz, (sum a_k/f_k)(sum f_k) >= (sum sqrt(a_k))^2 with equality iff f_k is proportional to
    sqrt(a_k). The minimum latency is (sum_k sqrt(D_k/s_k))^2 / B.

    This is the per-station case (each upload useful on its own): where uploads feed Zhu et al.'s batches, a
    batch waits for its slowest upload, and zhu_joint.band_for_plan splits the band for the DP's objective
    (of which this form is the special case of one task per batch, equal weights).

    Stations with D_k = 0 get 0. A station with D_k > 0 and s_k = 0 makes the objective infinite whatever it is
    given, so it gets 0 band and is left out rather than wasting band; if no station is eligible the split is
    equal (module convention).
    """
    name = "zhu"

    def allocate(self, stations: Sequence[Station]) -> dict[str, float]:
        check_stations(stations)
        if not stations:
            return {}
        return _normalised(stations, {st.name: math.sqrt(st.demand / st.efficiency)
                                      for st in stations if st.demand > 0 and st.efficiency > 0})


def make_allocation(name: str) -> AllocationPolicy:
    if name == "equal":
        return EqualShare()
    if name == "proportional":
        return ProportionalShare()
    if name == "max-min":
        return MaxMinShare()
    if name == "zhu":
        return ZhuClosedForm()
    raise ValueError(f"allocation policy must be one of {', '.join(ALLOCATION_POLICIES)}, got {name!r}")


def upload_latency(stations: Sequence[Station], fractions: dict[str, float], band: float) -> float:
    """sum_k D_k / (f_k * band * s_k): the total upload time, in seconds when demand is in bits and band in Hz
    (demand in bytes: multiply the result by 8). Stations with no demand add nothing; one with demand but no
    rate (f_k = 0, missing from fractions, or s_k = 0) makes it inf."""
    if not (math.isfinite(band) and band > 0):
        raise ValueError(f"band must be a finite number > 0, got {band!r}")
    total = 0.0
    for st in stations:
        if st.demand == 0:
            continue
        rate = fractions.get(st.name, 0.0) * band * st.efficiency
        if rate <= 0:
            return math.inf
        total += st.demand / rate
    return total
