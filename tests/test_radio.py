"""Radio channel physics and mobility (testbed/channels/radio.py, testbed/channels/mobility.py), each against its closed form.

The stochastic tests are seeded, so they are deterministic; tolerances are still chosen as if the seed were
free, so that a different seed (or a numpy generator change) fails with probability below 1e-6: every bound
is >= 6 standard deviations of its estimator (two-sided normal tail at 6 sigma: 2e-9), and KS tests use the
Dvoretzky-Kiefer-Wolfowitz-Massart bound P(D_n > eps) <= 2 exp(-2 n eps^2), which holds for every n.
The standard deviations quoted were worked out from the formulas given and checked over 20-30 seeds.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.channels import mobility as M
from testbed.channels import radio as R

ALPHA = 1e-7                                  # KS false-rejection probability


def ks_stat(samples: np.ndarray, cdf) -> float:
    """Kolmogorov-Smirnov statistic sup |F_n - F| of the samples against a continuous CDF."""
    x = np.sort(samples)
    n = len(x)
    f = cdf(x)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))


def ks_critical(n: int, alpha: float = ALPHA) -> float:
    """eps with 2 exp(-2 n eps^2) = alpha (DKW-Massart)."""
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * n))


def fading_samples(kind: str, n: int, rho: float, seed: int, k_factor_db: float = 0.0) -> np.ndarray:
    f = R.Fading(kind, seed, k_factor_db)
    out = np.empty(n, dtype=complex)
    for i in range(n):
        f.step(rho)
        out[i] = f.h
    return out


# ---------------------------------------------------------------------------------------------- Bessel J0

def j0_series(x: float) -> float:
    # sum (-1)^k (x/2)^2k / (k!)^2; for |x| < 10 the largest term is ~700, so fsum keeps ~1e-13 accuracy
    return math.fsum((-1) ** k * (x / 2) ** (2 * k) / math.factorial(k) ** 2 for k in range(60))


def test_bessel_j0_matches_power_series_and_zeros():
    for x in np.linspace(-9.99, 9.99, 2001):
        assert R.bessel_j0(float(x)) == pytest.approx(j0_series(float(x)), abs=1e-7)
    assert R.bessel_j0(0.0) == pytest.approx(1.0, abs=1e-7)
    assert abs(R.bessel_j0(2.404825557695773)) < 1e-7
    assert abs(R.bessel_j0(5.520078110286311)) < 1e-7
    assert R.bessel_j0(3.0) == pytest.approx(j0_series(3.0), abs=1e-7)   # both branches meet at 3


def test_rho_helpers():
    assert R.rho_doppler(0.0, 100.0) == 1.0
    assert R.rho_doppler(0.001, 50.0) == pytest.approx(j0_series(2 * math.pi * 0.05), abs=1e-7)
    assert R.rho_doppler(0.005, 100.0) == 0.0        # 2 pi f dt = 3.14 is past J0's first zero: clamped
    assert R.rho_coherence(0.01, 0.01) == pytest.approx(math.exp(-1))
    assert R.rho_coherence(1.0, math.inf) == 1.0
    assert R.rho_distance(-10.0, 20.0) == pytest.approx(math.exp(-0.5))


# ---------------------------------------------------------------------------------------------- fading

def test_rayleigh_envelope_cdf_and_power():
    n = 20_000
    h = fading_samples("rayleigh", n, 0.0, seed=11)
    r = np.abs(h)
    d = ks_stat(r, lambda x: 1 - np.exp(-x ** 2))
    assert d < ks_critical(n)                                # ~0.0205
    # negative control: the Rayleigh CDF with twice the power is off by 0.25 at its worst point
    assert ks_stat(r, lambda x: 1 - np.exp(-x ** 2 / 2)) > 5 * ks_critical(n)
    # |h|^2 ~ Exp(1): std 1, so the mean of 20k samples has std 0.0071; 0.05 is 7 sigma
    assert np.mean(r ** 2) == pytest.approx(1.0, abs=0.05)


def rice_cdf(k: float):
    """Envelope CDF of h = nu + CN(0, 2 s2) with nu^2 = K/(K+1), 2 s2 = 1/(K+1), by integrating the Rice pdf
    r/s2 exp(-(r^2+nu^2)/(2 s2)) I0(r nu/s2) on a fine grid (trapezoid error ~1e-8, far below the KS bound)."""
    nu, s2 = math.sqrt(k / (k + 1)), 0.5 / (k + 1)
    grid = np.linspace(0.0, 4.0, 40_001)
    pdf = grid / s2 * np.exp(-(grid ** 2 + nu ** 2) / (2 * s2)) * np.i0(grid * nu / s2)
    cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(grid))])
    assert cdf[-1] == pytest.approx(1.0, abs=1e-6)
    return lambda x: np.interp(x, grid, cdf)


def test_rician_power_k_factor_and_envelope():
    n, k = 50_000, 10.0                              # K = 10 dB
    h = fading_samples("rician", n, 0.0, seed=5, k_factor_db=10.0)
    p = np.abs(h) ** 2
    # Var|h|^2 = (2K+1)/(K+1)^2 = 0.174: the mean of 50k has std 0.0019; 0.015 is 8 sigma
    assert p.mean() == pytest.approx(1.0, abs=0.015)
    # moment estimator: Var/mean^2 = (2K+1)/(K+1)^2  =>  K/(K+1) = sqrt(1 - Var/mean^2).
    # Its spread at n = 50k is 0.072 (measured over 30 seeds); 0.6 is 8 sigma.
    root = math.sqrt(1 - p.var() / p.mean() ** 2)
    assert root / (1 - root) == pytest.approx(k, abs=0.6)
    # LOS fraction: E h = sqrt(K/(K+1)); the scattered part's mean has std sqrt(1/(11 n)) = 0.0013 per axis
    assert h.mean().real == pytest.approx(math.sqrt(k / (k + 1)), abs=0.01)
    assert h.mean().imag == pytest.approx(0.0, abs=0.01)
    assert ks_stat(np.abs(h), rice_cdf(k)) < ks_critical(n)
    assert ks_stat(np.abs(h), lambda x: 1 - np.exp(-x ** 2)) > 5 * ks_critical(n)   # not Rayleigh


def test_fading_autocorrelation_follows_rho():
    n, rho = 50_000, 0.9
    h = fading_samples("rayleigh", n, rho, seed=3)
    lag1 = np.sum(h[1:] * np.conj(h[:-1])) / np.sum(np.abs(h) ** 2)
    # the estimator's std is ~sqrt((1 - rho^2) / 2n) = 0.0014 per component; 0.015 is > 9 sigma
    assert lag1.real == pytest.approx(rho, abs=0.015)
    assert lag1.imag == pytest.approx(0.0, abs=0.015)
    # correlated samples keep E|h|^2 = 1; the power's lag-k correlation rho^2k inflates the mean's variance by
    # (1 + rho^2)/(1 - rho^2) = 9.5: std 0.014, 0.1 is 7 sigma
    assert np.mean(np.abs(h) ** 2) == pytest.approx(1.0, abs=0.1)
    assert fading_samples("rayleigh", 5, 1.0, seed=3)[-1] == fading_samples("rayleigh", 1, 1.0, seed=3)[0]


def test_fading_none_and_determinism():
    f = R.Fading("none", seed=1)
    assert all(f.step(0.5) == 1.0 for _ in range(10)) and f.h == 1
    a = [R.Fading("rician", 9, 3.0).step(0.7) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    assert R.Fading("rician", 9, 3.0).step(0.7) != R.Fading("rician", 10, 3.0).step(0.7)


# ---------------------------------------------------------------------------------------------- shadowing

def test_shadowing_gauss_markov_statistics():
    n, sigma, moved, d_corr = 50_000, 8.0, 5.0, 20.0
    s = R.Shadowing(sigma, d_corr, seed=21)
    x = np.array([s.move(moved) for _ in range(n)])
    rho = math.exp(-moved / d_corr)                  # 0.7788
    # AR(1): the mean's std is sigma sqrt((1+rho)/((1-rho) n)) = 0.10 dB; 0.7 is 7 sigma
    assert x.mean() == pytest.approx(0.0, abs=0.7)
    # sample std: relative std sqrt((1+rho^2)/(2(1-rho^2) n)) = 0.0064, i.e. 0.051 dB; 0.45 is 8.8 sigma
    assert x.std() == pytest.approx(sigma, abs=0.45)
    # lag-1 correlation: std ~sqrt((1-rho^2)/n) = 0.0028; 0.025 is 8.9 sigma
    assert np.corrcoef(x[1:], x[:-1])[0, 1] == pytest.approx(rho, abs=0.025)


def test_shadowing_edge_cases():
    s = R.Shadowing(0.0, 10.0, seed=1)
    assert s.value_db == 0.0 and all(s.move(3.0) == 0.0 and s.step(0.3) == 0.0 for _ in range(10))
    s = R.Shadowing(6.0, 10.0, seed=1)
    v = s.value_db
    assert s.move(0.0) == v and s.step(1.0) == v     # not moving keeps the value (rho = 1)
    assert s.step(0.0) != v                          # rho = 0: a fresh draw
    a, b = R.Shadowing(6.0, 10.0, seed=4), R.Shadowing(6.0, 10.0, seed=4)
    assert a.move(-7.0) == b.step(math.exp(-0.7))    # move(d) is step(rho_distance(d)), either direction
    # the first value is N(0, sigma^2): over 20k seeds its std is within 0.15 dB (7 sigma of 0.021 dB)
    first = np.array([R.Shadowing(6.0, 10.0, seed=i).value_db for i in range(20_000)])
    assert first.std() == pytest.approx(6.0, abs=0.15)
    assert ks_stat(first / 6.0, lambda z: 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))) \
        < ks_critical(len(first))


# ---------------------------------------------------------------------------------------------- Gilbert-Elliott

def runs_of(flags: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True, leaving out runs cut by either end (they are censored)."""
    d = np.diff(np.concatenate([[0], flags.astype(int), [0]]))
    runs = np.flatnonzero(d == -1) - np.flatnonzero(d == 1)
    if flags[0]:
        runs = runs[1:]
    if flags[-1]:
        runs = runs[:-1]
    return runs


def test_gilbert_elliott_long_run_statistics():
    p_gb, p_bg, l_g, l_b = 0.05, 0.3, 0.01, 0.5
    g = R.GilbertElliott(p_gb, p_bg, l_g, l_b, seed=8)
    assert g.steady_state_bad == pytest.approx(p_gb / (p_gb + p_bg))
    assert g.mean_loss == pytest.approx((p_bg * l_g + p_gb * l_b) / (p_gb + p_bg))
    assert (g.mean_bad_run, g.mean_good_run) == (pytest.approx(1 / p_bg), pytest.approx(1 / p_gb))
    n = 200_000
    loss = np.array([g.step() for _ in range(n)])
    bad = loss == l_b
    # bad-state fraction: asymptotic variance pi_B pi_G (1+lam)/(1-lam) / n with lam = 1 - p_gb - p_bg = 0.65,
    # i.e. std 0.0017 (0.0012 measured); 0.012 is 7 sigma. The loss is (l_b - l_g) times that: std 0.0008
    assert bad.mean() == pytest.approx(g.steady_state_bad, abs=0.012)
    assert loss.mean() == pytest.approx(g.mean_loss, abs=0.006)
    # bad runs are geometric with P(L = k) = (1-p_bg)^(k-1) p_bg; ~8500 runs: the mean (std 2.79) has std
    # 0.030, so 0.25 is 8 sigma; P(L = 1) has std sqrt(0.21 / 8500) = 0.005, 0.04 is 8 sigma
    runs = runs_of(bad)
    assert runs.mean() == pytest.approx(g.mean_bad_run, abs=0.25)
    assert np.mean(runs == 1) == pytest.approx(p_bg, abs=0.04)
    assert np.mean(runs == 2) == pytest.approx(p_bg * (1 - p_bg), abs=0.04)
    good = runs_of(~bad)                             # good runs: mean 20, std 19.5; ~8500 runs: std 0.21
    assert good.mean() == pytest.approx(g.mean_good_run, abs=1.7)


def test_gilbert_elliott_starts_in_steady_state():
    # the initial state is Bernoulli(pi_B = 0.25) per seed; 20k seeds: std 0.0031, 0.025 is 8 sigma
    starts = np.array([R.GilbertElliott(0.1, 0.3, seed=s).bad for s in range(20_000)])
    assert starts.mean() == pytest.approx(0.25, abs=0.025)


# ---------------------------------------------------------------------------------------------- link budget

def test_path_loss_and_noise_and_snr():
    assert R.path_loss_db(1.0, 3.0, 40.0) == 40.0
    assert R.path_loss_db(10.0, 3.0, 40.0) == pytest.approx(70.0)            # +10 n dB per decade
    assert R.path_loss_db(100.0, 3.0, 40.0) - R.path_loss_db(10.0, 3.0, 40.0) == pytest.approx(30.0)
    assert R.path_loss_db(0.0, 3.0, 40.0) == R.path_loss_db(0.5, 3.0, 40.0) == 40.0   # clamped below d0
    assert R.path_loss_db(20.0, 2.0, 50.0, ref_distance_m=2.0) == pytest.approx(70.0)
    assert R.noise_dbm(1.0) == -174.0
    assert R.noise_dbm(20e6, noise_figure_db=7.0) == pytest.approx(-174 + 73.0103 + 7, abs=1e-4)
    n = R.noise_dbm(20e6, noise_figure_db=7.0)
    assert R.snr_db(20.0, 80.0, 20e6, noise_figure_db=7.0) == pytest.approx(20 - 80 - n)
    # shadowing adds, fading adds 10 log10 |h|^2
    assert R.snr_db(20.0, 80.0, 20e6, shadowing_db=-6.0, fading_power=0.1) == pytest.approx(
        R.snr_db(20.0, 80.0, 20e6) - 16.0)
    assert R.snr_db(20.0, 80.0, 20e6, fading_power=0.0) == -math.inf


def test_shannon_and_mcs():
    assert R.shannon_efficiency(0.0) == pytest.approx(1.0)
    assert R.shannon_efficiency(30.0) == pytest.approx(9.967, abs=1e-3)
    assert R.shannon_efficiency(30.0, efficiency=0.75) == pytest.approx(0.75 * math.log2(1001))
    assert R.shannon_efficiency(-math.inf) == 0.0
    wifi, lte = R.MCS_TABLES["wifi"], R.MCS_TABLES["lte"]
    assert [m.index for m in wifi] == list(range(10)) and [m.index for m in lte] == list(range(1, 16))
    assert wifi[0].bits_per_hz == pytest.approx(0.325) and wifi[7].bits_per_hz == pytest.approx(3.25)
    assert (lte[0].bits_per_hz, lte[-1].bits_per_hz) == (0.1523, 5.5547)
    for table in (wifi, lte):
        assert all(a.min_snr_db < b.min_snr_db and a.bits_per_hz < b.bits_per_hz for a, b in zip(table, table[1:]))
        lowest = table[0].min_snr_db
        assert R.mcs_for(lowest - 1e-9, table) is None and R.mcs_for(-math.inf, table) is None
        assert R.mcs_for(lowest, table) is table[0]
        for a, b in zip(table, table[1:]):
            assert R.mcs_for(b.min_snr_db, table) is b                       # a threshold selects its entry
            assert R.mcs_for(b.min_snr_db - 1e-9, table) is a
        assert R.mcs_for(100.0, table) is table[-1]
    assert R.mcs_for(25.0, wifi).index == 6 and R.mcs_for(10.0, lte).index == 8


def test_bler_and_packet_loss():
    assert R.bler(12.0, 12.0) == pytest.approx(0.1)
    assert R.bler(5.0, 5.0, slope_per_db=0.5, target=0.01) == pytest.approx(0.01)
    # logit drops by slope per dB: one dB above the threshold the odds shrink by e^1.5
    assert R.bler(13.0, 12.0) / (1 - R.bler(13.0, 12.0)) == pytest.approx((0.1 / 0.9) * math.exp(-1.5))
    values = [R.bler(s, 10.0) for s in np.linspace(-40, 60, 1001)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    # strictly falling wherever float resolution allows (it saturates at 1.0 far below, underflows far above)
    assert all(a > b for a, b in zip(values, values[1:]) if 1e-300 < a < 1 - 1e-12)
    assert values[0] == pytest.approx(1.0) and values[-1] < 1e-30
    assert R.bler(-1e6, 0.0) == 1.0 and R.bler(1e6, 0.0) == 0.0               # no overflow far out
    assert R.packet_loss(0.1, 0) == pytest.approx(0.1)
    assert R.packet_loss(0.1, 3) == pytest.approx(1e-4)
    assert R.packet_loss(1.0, 5) == 1.0 and R.packet_loss(0.0, 0) == 0.0


@pytest.mark.parametrize("call, param", [
    (lambda: R.path_loss_db(-1.0, 3.0, 40.0), "distance_m"),
    (lambda: R.path_loss_db(1.0, 0.0, 40.0), "exponent"),
    (lambda: R.path_loss_db(1.0, 3.0, 40.0, ref_distance_m=0.0), "ref_distance_m"),
    (lambda: R.noise_dbm(0.0), "band_hz"),
    (lambda: R.snr_db(20.0, 80.0, 20e6, fading_power=-1.0), "fading_power"),
    (lambda: R.shannon_efficiency(10.0, efficiency=1.5), "efficiency"),
    (lambda: R.shannon_efficiency(math.nan), "snr_db"),
    (lambda: R.mcs_for(math.nan, R.MCS_TABLES["lte"]), "snr_db"),
    (lambda: R.bler(10.0, 10.0, target=1.0), "target"),
    (lambda: R.bler(10.0, 10.0, slope_per_db=0.0), "slope_per_db"),
    (lambda: R.packet_loss(1.2, 1), "bler_value"),
    (lambda: R.packet_loss(0.1, -1), "retries"),
    (lambda: R.packet_loss(0.1, 1.0), "retries"),
    (lambda: R.rho_doppler(-0.1, 10.0), "dt_s"),
    (lambda: R.rho_coherence(0.1, 0.0), "coherence_s"),
    (lambda: R.rho_distance(1.0, 0.0), "decorrelation_m"),
    (lambda: R.Shadowing(-1.0, 10.0, 0), "sigma_db"),
    (lambda: R.Shadowing(4.0, 0.0, 0), "decorrelation_m"),
    (lambda: R.Shadowing(4.0, 1.0, 0).step(-0.1), "rho"),
    (lambda: R.Fading("nakagami", 0), "kind"),
    (lambda: R.Fading("rayleigh", 0).step(1.5), "rho"),
    (lambda: R.GilbertElliott(0.0, 0.5), "p_good_to_bad"),
    (lambda: R.GilbertElliott(0.1, 1.5), "p_bad_to_good"),
    (lambda: R.GilbertElliott(0.1, 0.5, loss_good=-0.1), "loss_good"),
    (lambda: R.GilbertElliott(0.1, 0.5, loss_bad=2.0), "loss_bad"),
])
def test_radio_bad_parameters(call, param):
    with pytest.raises(ValueError, match=param):
        call()


# ---------------------------------------------------------------------------------------------- mobility

def test_waypoints_interpolate_clamp_and_loop():
    w = M.Waypoints([(0, 0, 0), (10, 10, 0), (20, 10, 10)])
    assert w.position(5) == (5.0, 0.0) and w.position(15) == (10.0, 5.0)
    assert w.position(-3) == (0.0, 0.0) and w.position(99) == (10.0, 10.0)
    assert w.position(10) == (10.0, 0.0)
    loop = M.Waypoints([(0, 0, 0), (10, 10, 0), (20, 0, 0)], loop=True)        # period 20
    for t in (3.0, 13.0, 7.5):
        assert loop.position(t + 20) == pytest.approx(loop.position(t))
        assert loop.position(t + 200) == pytest.approx(loop.position(t))
    assert loop.position(23) == pytest.approx((3.0, 0.0)) and loop.position(-5) == (0.0, 0.0)
    assert M.Waypoints([(5, 1, 2)]).position(100) == (1.0, 2.0)
    assert M.Fixed(3, 4).position(1e6) == (3.0, 4.0)
    assert M.distance((3.0, 4.0)) == 5.0 and M.distance((4.0, 6.0), ap=(1.0, 2.0)) == 5.0


def test_random_waypoint_geometry_and_speed():
    w, h, lo, hi, pause = 100.0, 50.0, 1.0, 5.0, 2.0
    rw = M.RandomWaypoint((w, h), (lo, hi), pause, seed=7)
    ts = np.arange(0.0, 4000.0, 0.25)
    pos = np.array([rw.position(float(t)) for t in ts])
    assert np.all((pos >= 0) & (pos <= [w, h]))
    # a chord is never longer than the path, so no finite difference (turns included) exceeds max speed
    fd = np.hypot(*np.diff(pos, axis=0).T) / 0.25
    assert fd.max() <= hi * (1 + 1e-9)
    legs = rw.legs(4000.0)
    assert all(a.end_s == b.start_s and a.dest == b.origin for a, b in zip(legs, legs[1:]))
    assert all(lo <= leg.speed_mps <= hi for leg in legs)
    for leg in legs[:200]:
        if leg.arrive_s - leg.start_s > 0.1:         # away from turn points: finite difference = leg speed
            t0, dt = leg.start_s + 0.01, (leg.arrive_s - leg.start_s - 0.02) / 2
            v = M.distance(rw.position(t0 + dt), rw.position(t0)) / dt
            assert v == pytest.approx(leg.speed_mps, rel=1e-9) and lo <= v <= hi * (1 + 1e-12)
        mid_pause = (leg.arrive_s + leg.end_s) / 2
        assert rw.position(mid_pause) == leg.dest and leg.end_s - leg.arrive_s == pytest.approx(pause)
    # destinations uniform in the area, speeds uniform in [lo, hi] (KS over the ~230 legs: mean leg ~17 s)
    dests = np.array([leg.dest for leg in legs])
    n = len(legs)
    assert n > 150
    assert ks_stat(dests[:, 0] / w, lambda u: u) < ks_critical(n)
    assert ks_stat(dests[:, 1] / h, lambda u: u) < ks_critical(n)
    assert ks_stat((np.array([leg.speed_mps for leg in legs]) - lo) / (hi - lo), lambda u: u) < ks_critical(n)


def test_random_waypoint_determinism_and_backward_queries():
    ts = np.linspace(0.0, 3000.0, 1201)
    a = M.RandomWaypoint((200.0, 200.0), (0.5, 2.0), 1.0, seed=42)
    forward = [a.position(float(t)) for t in ts]
    b = M.RandomWaypoint((200.0, 200.0), (0.5, 2.0), 1.0, seed=42)
    order = np.random.default_rng(0).permutation(len(ts))
    shuffled = {int(i): b.position(float(ts[i])) for i in order}
    assert [shuffled[i] for i in range(len(ts))] == forward
    assert [a.position(float(t)) for t in ts[::-1]] == forward[::-1]        # backward on a warm cache
    c = M.RandomWaypoint((200.0, 200.0), (0.5, 2.0), 1.0, seed=43)
    assert c.position(500.0) != a.position(500.0)
    s = M.RandomWaypoint((10.0, 10.0), (1.0, 1.0), 0.0, seed=1, start=(2.0, 3.0))
    assert s.position(0.0) == s.position(-5.0) == (2.0, 3.0)
    half = s.legs(0.0)[0].arrive_s / 2                                           # halfway along the first leg
    assert M.distance(s.position(half), (2.0, 3.0)) == pytest.approx(half)     # speed exactly 1 m/s


@pytest.mark.parametrize("call, param", [
    (lambda: M.Waypoints([]), "points"),
    (lambda: M.Waypoints([(0, 0, 0), (0, 1, 1)]), "points"),
    (lambda: M.Waypoints([(1, 0, 0), (0, 1, 1)]), "points"),
    (lambda: M.Waypoints([(0, 0, 0)], loop=True), "points"),
    (lambda: M.Waypoints([(0, 0)]), "points"),
    (lambda: M.RandomWaypoint((0.0, 10.0), (1.0, 2.0), 0.0, 0), "area_m"),
    (lambda: M.RandomWaypoint((10.0, 10.0), (0.0, 2.0), 0.0, 0), "speed_mps"),
    (lambda: M.RandomWaypoint((10.0, 10.0), (3.0, 2.0), 0.0, 0), "speed_mps"),
    (lambda: M.RandomWaypoint((10.0, 10.0), (1.0, 2.0), -1.0, 0), "pause_s"),
    (lambda: M.RandomWaypoint((10.0, 10.0), (1.0, 2.0), 0.0, 0, start=(11.0, 1.0)), "start"),
    (lambda: M.Fixed(math.nan, 0.0), "x"),
])
def test_mobility_bad_parameters(call, param):
    with pytest.raises(ValueError, match=param):
        call()
