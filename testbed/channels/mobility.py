"""Station positions over time, for driving the radio channel (testbed/channels/radio.py) from movement.

Every model answers `position(t_s) -> (x_m, y_m)` for any time, deterministically: scripted paths
(`Waypoints`), a standing station (`Fixed`) and the classic random waypoint model (`RandomWaypoint`),
whose legs are drawn lazily from a seeded generator and cached, so queries in any order agree.
`distance` turns a position into the distance to an access point.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from testbed.channels.radio import is_finite, require_param   # one rule for validating numbers

Point = tuple[float, float]


class Mobility(Protocol):
    def position(self, t_s: float) -> Point: ...


def _lerp(a: Point, b: Point, f: float) -> Point:
    return (a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f)


def distance(pos: Point, ap: Point = (0.0, 0.0)) -> float:
    """Euclidean distance in metres from `pos` to the access point `ap`."""
    return math.hypot(pos[0] - ap[0], pos[1] - ap[1])


@dataclass(frozen=True)
class Fixed:
    """A station that does not move."""
    x: float
    y: float

    def __post_init__(self) -> None:
        require_param(is_finite(self.x), "x", "a finite number", self.x)
        require_param(is_finite(self.y), "y", "a finite number", self.y)

    def position(self, t_s: float) -> Point:
        return (float(self.x), float(self.y))


class Waypoints:
    """Piecewise-linear path through (t_s, x_m, y_m) points. Before the first time the station is at the
    first point, after the last at the last one; with `loop`, times after the first repeat with period
    last t - first t (repeat the first point at the end for a closed path, or the station jumps back)."""

    def __init__(self, points: Sequence[tuple[float, float, float]], loop: bool = False) -> None:
        require_param(len(points) >= 1, "points", "a non-empty list of (t_s, x_m, y_m)", points)
        for p in points:
            require_param(len(p) == 3 and all(is_finite(v) for v in p), "points", "(t_s, x_m, y_m) finite triples", p)
        self._t = [float(p[0]) for p in points]
        self._xy: list[Point] = [(float(p[1]), float(p[2])) for p in points]
        require_param(all(a < b for a, b in zip(self._t, self._t[1:])), "points", "in strictly increasing time",
                 self._t)
        require_param(not loop or len(points) >= 2, "points", "at least 2 points when loop=True", points)
        self.loop = loop

    def position(self, t_s: float) -> Point:
        require_param(is_finite(t_s), "t_s", "a finite number", t_s)
        t0, t1 = self._t[0], self._t[-1]
        if t_s <= t0:
            return self._xy[0]
        if t_s >= t1:
            if not self.loop:
                return self._xy[-1]
            t_s = t0 + math.fmod(t_s - t0, t1 - t0)
        i = bisect.bisect_right(self._t, t_s) - 1          # self._t[i] <= t_s < self._t[i + 1]
        f = (t_s - self._t[i]) / (self._t[i + 1] - self._t[i])
        return _lerp(self._xy[i], self._xy[i + 1], f)


@dataclass(frozen=True)
class Leg:
    """One random-waypoint leg: leave `origin` at start_s, arrive at `dest` at arrive_s, pause until end_s."""
    start_s: float
    arrive_s: float
    end_s: float
    origin: Point
    dest: Point
    speed_mps: float

    def position(self, t_s: float) -> Point:
        if t_s >= self.arrive_s:
            return self.dest
        return _lerp(self.origin, self.dest, (t_s - self.start_s) / (self.arrive_s - self.start_s))


class RandomWaypoint:
    """Random waypoint model: from the current point, pick a destination uniform in [0, w] x [0, h], travel
    there in a straight line at a speed uniform in [min, max], pause `pause_s`, repeat. Time starts at 0
    (earlier times give the start point). Legs are drawn in order from `seed` and cached, so position(t) is
    the same whatever order times are asked in."""

    def __init__(self, area_m: tuple[float, float], speed_mps: tuple[float, float], pause_s: float, seed: int,
                 start: Point | None = None) -> None:
        w, h = area_m
        require_param(is_finite(w) and is_finite(h) and w > 0 and h > 0, "area_m", "(width, height) > 0", area_m)
        lo, hi = speed_mps
        # A minimum speed of 0 would allow arbitrarily slow legs that never end (and makes the long-run mean
        # speed decay to 0, the model's known flaw), so it must be strictly positive.
        require_param(is_finite(lo) and is_finite(hi) and 0 < lo <= hi, "speed_mps", "(min, max) with 0 < min <= max",
                 speed_mps)
        require_param(is_finite(pause_s) and pause_s >= 0, "pause_s", "a finite number >= 0", pause_s)
        self.area_m, self.speed_mps, self.pause_s = (float(w), float(h)), (float(lo), float(hi)), float(pause_s)
        self._rng = np.random.default_rng(seed)
        if start is None:
            start = self._uniform_point()
        else:
            sx, sy = start
            require_param(is_finite(sx) and is_finite(sy) and 0 <= sx <= w and 0 <= sy <= h, "start",
                     f"a point inside the area [0, {w}] x [0, {h}]", start)
        self.start: Point = (float(start[0]), float(start[1]))
        self._legs: list[Leg] = []
        self._starts: list[float] = []                     # leg start times, for bisection

    def _uniform_point(self) -> Point:
        x, y = self._rng.random(2)
        return (float(x) * self.area_m[0], float(y) * self.area_m[1])

    def _extend(self) -> None:
        origin, t = (self._legs[-1].dest, self._legs[-1].end_s) if self._legs else (self.start, 0.0)
        dest = self._uniform_point()
        speed = float(self._rng.uniform(*self.speed_mps))
        arrive = t + distance(origin, dest) / speed
        self._legs.append(Leg(t, arrive, arrive + self.pause_s, origin, dest, speed))
        self._starts.append(t)

    def legs(self, until_s: float) -> list[Leg]:
        """All legs that start at or before `until_s` (drawing them if needed)."""
        require_param(is_finite(until_s), "until_s", "a finite number", until_s)
        while not self._legs or self._legs[-1].end_s <= until_s:
            self._extend()
        return self._legs[:bisect.bisect_right(self._starts, until_s)]

    def position(self, t_s: float) -> Point:
        require_param(is_finite(t_s), "t_s", "a finite number", t_s)
        if t_s <= 0:
            return self.start
        self.legs(t_s)                                     # make sure the leg covering t_s exists
        leg = self._legs[bisect.bisect_right(self._starts, t_s) - 1]
        return leg.position(t_s)
