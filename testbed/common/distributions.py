"""Parameter distributions written in YAML, and deterministic draws from them.

Shared by topology pools (testbed/net/pools.py: a link field of a pool drawn per member) and experiments
(`drafters.distributions`: a drafter setting drawn per drafter). Pure: no I/O, no project imports.

Syntax (one key names the distribution):
  {uniform: [lo, hi]}                                  lo <= hi
  {normal: {mean: m, std: s, min: a, max: b}}          std >= 0; min/max optional: draws are clipped to them
  {lognormal: {mean: m, sigma: s, min: a, max: b}}     exp(N(m, s)): mean and sigma of the underlying normal
                                                       (as numpy and Python's lognormvariate), so the median
                                                       is e^m; min/max clip the drawn value
  {choice: [v1, v2, ...], weights: [w1, w2, ...]}      weights optional (equal), >= 0, same length, sum > 0
Integer fields round each draw to the nearest whole number (halves up).

Draws are deterministic: each value comes from its own `Stream`, keyed by a string naming what is drawn
(seed, pool or node, member, field), so adding a member, a pool or a field never shifts anyone else's draws.
"""
from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

NAMES = ("uniform", "normal", "lognormal", "choice")
KEYS = NAMES + ("weights",)
SYNTAX = "{uniform: [lo, hi]}, {normal: {mean, std}}, {lognormal: {mean, sigma}} or {choice: [...]}"

Found = list[tuple[tuple, str]]     # (field path relative to the distribution, message)


def number(x: Any) -> bool:
    """A YAML number: booleans are ints to Python but never a number a user meant."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def looks_like(value: Any) -> bool:
    """A mapping whose keys name a distribution (to flag distributions where a field does not take one)."""
    return isinstance(value, dict) and bool(value) and any(k in KEYS for k in value)


class Stream:
    """Uniform numbers in [0, 1) from blake2b(key, counter): independent per key, the same on every machine
    and Python version, and ~8x cheaper to start than random.Random(str) (100000 pool members draw in well
    under a second)."""

    __slots__ = ("_key", "_n")

    def __init__(self, key: str):
        self._key, self._n = key.encode(), 0

    def random(self) -> float:
        digest = hashlib.blake2b(self._key + self._n.to_bytes(4, "little"), digest_size=8).digest()
        self._n += 1
        return (int.from_bytes(digest, "little") >> 11) / 2.0 ** 53

    def normal(self) -> float:
        """A standard normal draw (Box-Muller; written out so no library's algorithm can change the draws)."""
        u1, u2 = self.random(), self.random()
        return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


def stream(*parts: Any) -> Stream:
    return Stream("/".join(str(p) for p in parts))


def _fmt(x: Any) -> str:
    return f"{x:g}" if number(x) else repr(x)


@dataclass(frozen=True)
class Distribution:
    kind: str                     # one of NAMES
    a: float = 0.0                # uniform: lo; normal/lognormal: mean
    b: float = 0.0                # uniform: hi; normal: std; lognormal: sigma
    lo: float | None = None       # normal/lognormal: clip
    hi: float | None = None
    values: tuple = ()            # choice
    cum: tuple = ()               # choice: cumulative weights
    integer: bool = False         # round draws

    def draw(self, s: Stream) -> Any:
        if self.kind == "choice":
            if len(self.values) == 1:
                return self.as_drawn(self.values[0])
            i = bisect_right(self.cum, s.random() * self.cum[-1])
            return self.as_drawn(self.values[min(i, len(self.values) - 1)])
        if self.kind == "uniform":
            x = self.a + (self.b - self.a) * s.random()
        else:
            x = self.a + self.b * s.normal()
            if self.kind == "lognormal":
                x = math.exp(min(x, 700.0))       # beyond e^700 a float overflows; the limits reject it anyway
        if self.lo is not None:
            x = max(x, self.lo)
        if self.hi is not None:
            x = min(x, self.hi)
        return _round(x) if self.integer else x

    def as_drawn(self, v: Any) -> Any:
        """A choice's value as a draw returns it (rounded for an integer field)."""
        return _round(v) if self.integer and number(v) else v

    def describe(self) -> str:
        if self.kind == "uniform":
            return f"uniform [{self.a:g}, {self.b:g}]"
        if self.kind == "choice":
            return "choice [" + ", ".join(_fmt(v) for v in self.values) + "]"
        clip = "".join(f", {k} {v:g}" for k, v in (("min", self.lo), ("max", self.hi)) if v is not None)
        return f"{self.kind} mean {self.a:g} {'std' if self.kind == 'normal' else 'sigma'} {self.b:g}{clip}"


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def parse(spec: Any, *, numeric: bool = True, integer: bool = False,
          numbers_only: bool = True) -> tuple[Distribution | None, Found]:
    """A distribution from its YAML mapping, or None and the problems (paths relative to the mapping).
    numeric: uniform/normal/lognormal allowed (else only choice); integer: draws are rounded;
    numbers_only: choice values must be numbers (else the caller validates each drawn value)."""
    if not isinstance(spec, dict) or not spec:
        return None, [((), f"expected a distribution: {SYNTAX}, got {spec!r}")]
    found: Found = []
    for k in spec:
        if k not in KEYS:
            found.append(((k,), f"unknown distribution {k!r}; expected uniform, normal, lognormal or choice"))
    kinds = [k for k in spec if k in NAMES]
    if found:
        return None, found
    if len(kinds) != 1:
        return None, [((), f"expected one distribution, got {' and '.join(kinds) or 'only weights'}")]
    kind = kinds[0]
    if "weights" in spec and kind != "choice":
        return None, [(("weights",), "weights go with choice only")]
    if kind != "choice" and not numeric:
        return None, [((kind,), f"this field is not a number: it takes {{choice: [...]}} only")]
    body = spec[kind]
    if kind == "uniform":
        if not (isinstance(body, list) and len(body) == 2 and all(number(x) for x in body)):
            return None, [((kind,), f"expected [lo, hi], two numbers, got {body!r}")]
        if body[0] > body[1]:
            return None, [((kind,), f"expected lo <= hi, got [{body[0]:g}, {body[1]:g}]")]
        return Distribution(kind, float(body[0]), float(body[1]), integer=integer), []
    if kind == "choice":
        return _choice(spec, integer, numbers_only)
    spread = "std" if kind == "normal" else "sigma"
    if not isinstance(body, dict):
        return None, [((kind,), f"expected a mapping {{mean: m, {spread}: s, min: a, max: b}} "
                                f"(min, max optional), got {body!r}")]
    for k in body:
        if k not in ("mean", spread, "min", "max"):
            found.append(((kind, k), f"unknown field; expected mean, {spread}, min or max"))
    for k in ("mean", spread):
        if k not in body:
            found.append(((kind, k), "required field is missing"))
    for k in ("mean", spread, "min", "max"):
        if k in body and not number(body[k]):
            found.append(((kind, k), f"expected a number, got {body[k]!r}"))
    if found:
        return None, found
    if body[spread] < 0:
        return None, [((kind, spread), f"expected a number >= 0, got {body[spread]:g}")]
    lo, hi = body.get("min"), body.get("max")
    if lo is not None and hi is not None and lo > hi:
        return None, [((kind, "min"), f"expected min <= max ({hi:g}), got {lo:g}")]
    return Distribution(kind, float(body["mean"]), float(body[spread]), lo, hi, integer=integer), []


def _choice(spec: dict, integer: bool, numbers_only: bool) -> tuple[Distribution | None, Found]:
    values, weights = spec["choice"], spec.get("weights")
    if not isinstance(values, list) or not values:
        return None, [(("choice",), f"expected a non-empty list of values, got {values!r}")]
    if numbers_only:
        bad = [(i, v) for i, v in enumerate(values) if not number(v)]
        if bad:
            return None, [(("choice", i), f"expected a number, got {v!r}") for i, v in bad]
    if weights is None:
        weights = [1] * len(values)
    elif not (isinstance(weights, list) and all(number(w) and w >= 0 for w in weights)):
        return None, [(("weights",), f"expected a list of numbers >= 0, got {weights!r}")]
    elif len(weights) != len(values):
        return None, [(("weights",), f"expected one weight per value ({len(values)}), got {len(weights)}")]
    elif sum(weights) <= 0:
        return None, [(("weights",), "expected at least one weight > 0")]
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    return Distribution("choice", values=tuple(values), cum=tuple(cum), integer=integer), []
