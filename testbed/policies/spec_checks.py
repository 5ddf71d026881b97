"""Checks of speculation specs, shared by the window policies (speculation.py, awc.py) and the drafter's stop
rules (stopping.py): a bad field fails with a ValueError that names the policy and the field, before any
session starts."""
from __future__ import annotations

import math

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
