"""μ(γ, α), the expected tokens per speculative round: its values, its edge rule near α = 1, the array form."""
from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest

from testbed.policies.acceptance import ALPHA_ONE, mu, mu_array


def test_mu():
    assert mu(0, 0.3) == 1.0 and mu(4, 0.0) == 1.0
    assert mu(3, 0.5) == pytest.approx(1 + 0.5 + 0.25 + 0.125)
    assert mu(5, 1.0) == 6.0
    assert mu(5, 1 - 1e-9) == pytest.approx(6.0, rel=1e-6)     # continuous at the α → 1 limit
    assert mu(4.5, 0.7) == pytest.approx((1 - 0.7 ** 5.5) / 0.3)   # a mean window need not be an integer
    with pytest.raises(ValueError):
        mu(3, 1.5)


@pytest.mark.parametrize("gamma, alpha", [(-1, 0.5), (2, -0.1), (2, math.nan), (math.nan, 0.5), (math.inf, 0.5)])
def test_mu_rejects_what_has_no_meaning(gamma, alpha):
    with pytest.raises(ValueError, match="alpha" if gamma == 2 else "gamma"):
        mu(gamma, alpha)


def test_mu_near_one_is_accurate():
    # Against exact rational sums: γ + 1 within 1e-12 of α = 1, the closed form below, both within 1e-8.
    for k in [x / 4 for x in range(16, 65)]:                     # 1 − α from 1e-4 to 1e-16
        alpha = 1 - 10 ** -k
        for gamma in (1, 2, 4, 16, 64):
            exact = float(sum(Fraction(alpha) ** i for i in range(gamma + 1)))
            assert abs(mu(gamma, alpha) - exact) <= 1e-8 * exact, (alpha, gamma)
    # below the cut the closed form is what is computed (what every caller computed before)
    alpha = 1 - 1e-11
    assert alpha <= ALPHA_ONE and mu(7, alpha) == (1 - alpha ** 8) / (1 - alpha)
    assert mu(7, 1 - 1e-13) == 8.0


def test_mu_array_equals_mu_elementwise():
    # numpy's power may be a vectorised routine that rounds differently from C's pow by an ulp or so
    rng = random.Random(3)
    alphas = np.array([0.0, 1.0, 0.5, 1 - 1e-13, 1 - 1e-11] + [rng.random() for _ in range(20)])[:, None]
    gammas = np.arange(0, 17, dtype=float)[None, :]
    table = mu_array(gammas, alphas)
    assert table.shape == (25, 17)
    scalar = [[mu(g, a) for g in gammas[0].tolist()] for a in alphas[:, 0].tolist()]
    assert table.tolist()[:4] == scalar[:4]                   # α = 0, 1, 1/2 and "1": exact either way
    assert table.tolist() == [pytest.approx(row, rel=1e-12) for row in scalar]
    with pytest.raises(ValueError, match="alpha"):
        mu_array(gammas, np.array([[0.5], [1.2]]))
    with pytest.raises(ValueError, match="gamma"):
        mu_array(np.array([1.0, -2.0]), 0.5)
