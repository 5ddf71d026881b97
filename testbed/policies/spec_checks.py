"""Checks of speculation specs, shared by the window policies (speculation.py, awc.py) and the drafter's stop
rules (stopping.py): a bad field fails with a ValueError that names the policy and the field, before any
session starts."""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, Callable

GAMMA_LIMIT = 64          # the largest window anything here accepts (experiment.Speculation.gamma's bound)


def check_int(owner: str, name: str, value, lo: int, hi: int = GAMMA_LIMIT, bounds: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"speculation {owner}: {name} must be an integer in {bounds or f'[{lo}, {hi}]'}, "
                         f"got {value!r}")


def check_num(owner: str, name: str, value, lo: float, hi: float, open_lo: bool = False,
              open_hi: bool = False) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (lo < value if open_lo else lo <= value) and (value < hi if open_hi else value <= hi))
    if not ok:
        raise ValueError(f"speculation {owner}: {name} must be a number in {'(' if open_lo else '['}{lo:g}, "
                         f"{hi:g}{')' if open_hi else ']'}, got {value!r}")


def check_window_bounds(owner: str, gamma_min, gamma_max, allowed, floor: int = 0) -> tuple[int, ...] | None:
    """Checks the clamp fields; returns the allowed windows inside [gamma_min, gamma_max], sorted."""
    check_int(owner, "gamma_min", gamma_min, floor)
    check_int(owner, "gamma_max", gamma_max, gamma_min, bounds=f"[gamma_min={gamma_min}, {GAMMA_LIMIT}]")
    if allowed is None:
        return None
    if isinstance(allowed, (str, bytes)) or not isinstance(allowed, (list, tuple, set, frozenset)):
        raise ValueError(f"speculation {owner}: allowed must be a list of integers, got {allowed!r}")
    for value in allowed:
        check_int(owner, "allowed", value, 0)
    inside = tuple(sorted(v for v in set(allowed) if gamma_min <= v <= gamma_max))
    if not inside:
        raise ValueError(f"speculation {owner}: allowed has no window in [gamma_min, gamma_max] = "
                         f"[{gamma_min}, {gamma_max}], got {sorted(allowed)}")
    return inside


def named_spec(spec: Any, key: str, default: str | None, registry: Mapping[str, Callable], label: str,
               choice: str) -> tuple[str, Callable, dict]:
    """"name" or {key: name, field: value, ...} -> (name, constructor, params), every field checked against the
    constructor's keyword arguments. label names the spec in messages ("speculation", "stop rule"), choice the
    field that picks from the registry ("speculation policy", "stop rule: rule")."""
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop(key, default)
    else:
        raise ValueError(f"{label} must be a {key} name or a mapping with a '{key}' field, got {spec!r}")
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"{choice} must be one of {', '.join(registry)}, got {name!r}")
    ctor = registry[name]
    accepted = inspect.signature(ctor).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    for field in params:
        if not takes_any and (field not in accepted or accepted[field].kind is inspect.Parameter.POSITIONAL_ONLY):
            fields = ", ".join(k for k in accepted if not k.startswith("_")) or "none"
            raise ValueError(f"{label} {name}: unknown field {field!r} (fields: {fields})")
    return name, ctor, params
