"""Wireless channel physics: from where a station stands to how many of its packets are lost.

The chain, one function or class per step (all pure: time and distance moved are passed in, randomness
comes from a seeded numpy Generator, so a seed reproduces a run exactly):
1. distance -> path loss: log-distance model, PL(d) = PL0 + 10 n log10(d / d0)  (`path_loss_db`);
2. + log-normal shadowing: slow, spatially correlated Gaussian in dB (Gudmundson's Gauss-Markov
   model, `Shadowing`);
3. + small-scale fading: fast complex Gaussian gain h, Rayleigh or Rician, correlated in time as an
   AR(1) process whose step correlation comes from Doppler (Clarke/Jakes) or a coherence time (`Fading`);
4. -> SNR: received power (tx - PL + shadowing + 10 log10|h|^2) over thermal noise N0 + 10 log10 B + NF
   (`noise_dbm`, `snr_db`);
5. -> spectral efficiency: Shannon with an efficiency factor, or the highest MCS the SNR supports
   (`shannon_efficiency`, `MCS_TABLES`, `mcs_for`);
6. -> packet loss: a logistic block-error curve around the MCS threshold, and independent link-layer
   retries (`bler`, `packet_loss`). `GilbertElliott` models bursty loss directly where no SNR is modelled.

Sign convention: shadowing_db is a *gain* added to the received power (negative values are extra loss);
fading_power is the linear |h|^2 with E|h|^2 = 1, so fading changes SNR by 10 log10|h|^2 dB.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def require_param(ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def is_finite(x: object) -> bool:
    """A real, finite number (numpy scalars included; bools are refused as a likely mistake)."""
    if isinstance(x, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(x)  # type: ignore[arg-type]
    except TypeError:
        return False


def _real(x: object) -> bool:
    """A real number, infinities allowed (an SNR of -inf is a deep fade), NaN refused."""
    return is_finite(x) or (isinstance(x, (int, float, np.floating)) and abs(x) == math.inf)


# ---------------------------------------------------------------------------------------------- link budget

def path_loss_db(distance_m: float, exponent: float, ref_loss_db: float, ref_distance_m: float = 1.0) -> float:
    """Log-distance path loss PL0 + 10 n log10(max(d, d0) / d0) in dB."""
    require_param(is_finite(distance_m) and distance_m >= 0, "distance_m", "a finite number >= 0", distance_m)
    require_param(is_finite(exponent) and exponent > 0, "exponent", "a finite number > 0", exponent)
    require_param(is_finite(ref_loss_db), "ref_loss_db", "a finite number", ref_loss_db)
    require_param(is_finite(ref_distance_m) and ref_distance_m > 0, "ref_distance_m", "a finite number > 0",
             ref_distance_m)
    # The model only holds in the far field, beyond the reference distance where PL0 was measured; below it
    # the formula would give less loss than PL0 and, at d -> 0, infinite gain. Clamping keeps it physical.
    d = max(distance_m, ref_distance_m)
    return ref_loss_db + 10.0 * exponent * math.log10(d / ref_distance_m)


def noise_dbm(band_hz: float, noise_density_dbm_hz: float = -174.0, noise_figure_db: float = 0.0) -> float:
    """Thermal noise power in the band: N0 + 10 log10(B) + NF (N0 = -174 dBm/Hz at 290 K)."""
    require_param(is_finite(band_hz) and band_hz > 0, "band_hz", "a finite number > 0", band_hz)
    require_param(is_finite(noise_density_dbm_hz), "noise_density_dbm_hz", "a finite number", noise_density_dbm_hz)
    require_param(is_finite(noise_figure_db) and noise_figure_db >= 0, "noise_figure_db", "a finite number >= 0",
             noise_figure_db)
    return noise_density_dbm_hz + 10.0 * math.log10(band_hz) + noise_figure_db


def snr_db(tx_power_dbm: float, path_loss_db: float, band_hz: float, shadowing_db: float = 0.0,
           fading_power: float = 1.0, noise_density_dbm_hz: float = -174.0,
           noise_figure_db: float = 0.0) -> float:
    """SNR in dB: (tx - PL + shadowing_db + 10 log10 fading_power) - noise. A deep fade (power 0) is -inf."""
    for name, v in (("tx_power_dbm", tx_power_dbm), ("path_loss_db", path_loss_db),
                    ("shadowing_db", shadowing_db)):
        require_param(is_finite(v), name, "a finite number", v)
    require_param(is_finite(fading_power) and fading_power >= 0, "fading_power", "a finite number >= 0 (linear |h|^2)",
             fading_power)
    if fading_power == 0:
        return -math.inf
    rx = tx_power_dbm - path_loss_db + shadowing_db + 10.0 * math.log10(fading_power)
    return rx - noise_dbm(band_hz, noise_density_dbm_hz, noise_figure_db)


def shannon_efficiency(snr_db: float, efficiency: float = 1.0) -> float:
    """Spectral efficiency in bit/s/Hz: efficiency * log2(1 + snr). `efficiency` < 1 is the usual gap to
    capacity of real coding and overheads (e.g. ~0.75 for LTE)."""
    require_param(is_finite(snr_db) or snr_db == -math.inf, "snr_db", "a finite number or -inf", snr_db)
    require_param(is_finite(efficiency) and 0 < efficiency <= 1, "efficiency", "in (0, 1]", efficiency)
    return efficiency * math.log2(1.0 + 10.0 ** (snr_db / 10.0))


# ---------------------------------------------------------------------------------------------- MCS tables

@dataclass(frozen=True)
class Mcs:
    index: int
    min_snr_db: float        # lowest SNR at which this entry is used (~10% BLER); see the tables' notes
    bits_per_hz: float       # spectral efficiency, bit/s/Hz
    name: str


# 802.11ac/ax, 20 MHz, one spatial stream, 800 ns guard interval: efficiency = PHY rate / 20 MHz with rates
# 6.5, 13, 19.5, 26, 39, 52, 58.5, 65, 78, 86.7 Mbit/s (IEEE 802.11-2016, VHT MCS rate tables). VHT forbids
# MCS9 at 20 MHz with one stream; 86.7 Mbit/s is its per-stream rate with three, kept for a complete ladder.
# SNR thresholds are typical values from vendor WLAN design guides, not mandated by the standard (which
# only sets minimum receiver sensitivities).
_WIFI = ((5.0, 6.5, "BPSK 1/2"), (8.0, 13.0, "QPSK 1/2"), (11.0, 19.5, "QPSK 3/4"), (14.0, 26.0, "16-QAM 1/2"),
         (18.0, 39.0, "16-QAM 3/4"), (22.0, 52.0, "64-QAM 2/3"), (24.0, 58.5, "64-QAM 3/4"),
         (26.0, 65.0, "64-QAM 5/6"), (30.0, 78.0, "256-QAM 3/4"), (32.0, 86.7, "256-QAM 5/6"))

# LTE 4-bit CQI table, 3GPP TS 36.213 Table 7.2.3-1 (efficiency = bits/symbol * code rate/1024). SNR
# thresholds are typical link-level values for 10% BLER (AWGN, SISO) as used in system-level simulators,
# not standard-mandated: the standard leaves the SNR -> CQI mapping to the UE.
_LTE = ((-6.7, 0.1523, "QPSK 78"), (-4.7, 0.2344, "QPSK 120"), (-2.3, 0.3770, "QPSK 193"),
        (0.2, 0.6016, "QPSK 308"), (2.4, 0.8770, "QPSK 449"), (4.3, 1.1758, "QPSK 602"),
        (5.9, 1.4766, "16QAM 378"), (8.1, 1.9141, "16QAM 490"), (10.3, 2.4063, "16QAM 616"),
        (11.7, 2.7305, "64QAM 466"), (14.1, 3.3223, "64QAM 567"), (16.3, 3.9023, "64QAM 666"),
        (18.7, 4.5234, "64QAM 772"), (21.0, 5.1152, "64QAM 873"), (22.7, 5.5547, "64QAM 948"))

MCS_TABLES: dict[str, tuple[Mcs, ...]] = {
    "wifi": tuple(Mcs(i, snr, rate / 20.0, f"MCS{i} {mod}") for i, (snr, rate, mod) in enumerate(_WIFI)),
    "lte": tuple(Mcs(i, snr, eff, f"CQI{i} {mod}") for i, (snr, eff, mod) in enumerate(_LTE, start=1)),
}


def mcs_for(snr_db: float, table: tuple[Mcs, ...]) -> Mcs | None:
    """Highest entry whose threshold the SNR reaches; None below the lowest one (outage)."""
    require_param(_real(snr_db), "snr_db", "a number, not NaN", snr_db)
    require_param(len(table) > 0, "table", "a non-empty tuple of Mcs", table)
    best = None
    for entry in table:                       # no ordering assumed: tables are short
        if entry.min_snr_db <= snr_db and (best is None or entry.min_snr_db > best.min_snr_db):
            best = entry
    return best


# ---------------------------------------------------------------------------------------------- errors

def bler(snr_db: float, threshold_db: float, slope_per_db: float = 1.5, target: float = 0.1) -> float:
    """Logistic block-error curve: logit(BLER) = logit(target) - slope * (snr - threshold), i.e.
    BLER = 1 / (1 + exp(slope * (snr - threshold) + ln((1 - target) / target))). It equals `target` at the
    threshold, tends to 1 well below it and to 0 above it; `slope` sets how sharp the waterfall is."""
    require_param(_real(snr_db), "snr_db", "a number, not NaN", snr_db)
    require_param(is_finite(threshold_db), "threshold_db", "a finite number", threshold_db)
    require_param(is_finite(slope_per_db) and slope_per_db > 0, "slope_per_db", "a finite number > 0", slope_per_db)
    require_param(is_finite(target) and 0 < target < 1, "target", "in (0, 1)", target)
    z = slope_per_db * (snr_db - threshold_db) + math.log((1.0 - target) / target)
    if z >= 0:                                # the two branches avoid overflow of exp for large |z|
        e = math.exp(-z)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(z))


def packet_loss(bler_value: float, retries: int) -> float:
    """Probability that a packet is lost after `retries` retransmissions: bler ** (retries + 1), assuming
    attempts fail independently (true for fast fading decorrelated between attempts; optimistic otherwise)."""
    require_param(is_finite(bler_value) and 0 <= bler_value <= 1, "bler_value", "in [0, 1]", bler_value)
    require_param(isinstance(retries, (int, np.integer)) and not isinstance(retries, bool) and retries >= 0,
             "retries", "an integer >= 0", retries)
    return bler_value ** (retries + 1)


# ---------------------------------------------------------------------------------------------- correlation

def bessel_j0(x: float) -> float:
    """Bessel function J0 (Abramowitz & Stegun 9.4.1 for |x| <= 3, 9.4.3 above; absolute error < 1e-7)."""
    require_param(is_finite(x), "x", "a finite number", x)
    x = abs(x)                                # J0 is even
    if x <= 3.0:
        y = (x / 3.0) ** 2
        return 1.0 + y * (-2.2499997 + y * (1.2656208 + y * (-0.3163866 + y * (0.0444479 + y * (
            -0.0039444 + y * 0.0002100)))))
    y = 3.0 / x
    f0 = 0.79788456 + y * (-0.00000077 + y * (-0.00552740 + y * (-0.00009512 + y * (0.00137237 + y * (
        -0.00072805 + y * 0.00014476)))))
    theta0 = x - 0.78539816 + y * (-0.04166397 + y * (-0.00003954 + y * (0.00262573 + y * (-0.00054125 + y * (
        -0.00029333 + y * 0.00013558)))))
    return f0 * math.cos(theta0) / math.sqrt(x)


def rho_doppler(dt_s: float, doppler_hz: float) -> float:
    """Step correlation of fading sampled every dt under Clarke/Jakes scattering: J0(2 pi f_d dt).
    Negative values are clamped to 0: an AR(1) process cannot follow J0's oscillation anyway, and past the
    first zero the samples are effectively independent, which rho = 0 says."""
    require_param(is_finite(dt_s) and dt_s >= 0, "dt_s", "a finite number >= 0", dt_s)
    require_param(is_finite(doppler_hz) and doppler_hz >= 0, "doppler_hz", "a finite number >= 0", doppler_hz)
    return max(0.0, bessel_j0(2.0 * math.pi * doppler_hz * dt_s))


def rho_coherence(dt_s: float, coherence_s: float) -> float:
    """Step correlation exp(-dt / Tc) for a channel described by its coherence time Tc."""
    require_param(is_finite(dt_s) and dt_s >= 0, "dt_s", "a finite number >= 0", dt_s)
    require_param(_real(coherence_s) and coherence_s > 0, "coherence_s",
             "a number > 0 (inf allowed)", coherence_s)
    return math.exp(-dt_s / coherence_s)


def rho_distance(moved_m: float, decorrelation_m: float) -> float:
    """Gudmundson's shadowing correlation after moving `moved_m`: exp(-|moved| / d_corr)."""
    require_param(is_finite(moved_m), "moved_m", "a finite number", moved_m)
    require_param(is_finite(decorrelation_m) and decorrelation_m > 0, "decorrelation_m", "a finite number > 0",
             decorrelation_m)
    return math.exp(-abs(moved_m) / decorrelation_m)


def _check_rho(rho: float) -> None:
    require_param(is_finite(rho) and 0 <= rho <= 1, "rho", "in [0, 1]", rho)


# ---------------------------------------------------------------------------------------------- processes

class Shadowing:
    """Log-normal shadowing in dB as a Gauss-Markov process (Gudmundson 1991): s' = rho s + sqrt(1 - rho^2)
    sigma z. Over distance, rho = exp(-|moved| / decorrelation_m) (`rho_distance`, or `move`); time-driven
    callers pass speed * dt as the distance moved. The initial value, drawn at construction, is N(0, sigma^2),
    so every later value is too; step(0) draws a fresh, independent one."""

    def __init__(self, sigma_db: float, decorrelation_m: float, seed: int) -> None:
        require_param(is_finite(sigma_db) and sigma_db >= 0, "sigma_db", "a finite number >= 0", sigma_db)
        require_param(is_finite(decorrelation_m) and decorrelation_m > 0, "decorrelation_m", "a finite number > 0",
                 decorrelation_m)
        self.sigma_db, self.decorrelation_m = float(sigma_db), float(decorrelation_m)
        self._rng = np.random.default_rng(seed)
        self.value_db = self.sigma_db * float(self._rng.standard_normal())

    def step(self, rho: float) -> float:
        """Advance with step correlation rho and return the new shadowing in dB."""
        _check_rho(rho)
        z = float(self._rng.standard_normal())   # drawn even when sigma is 0, so the stream never depends on it
        self.value_db = rho * self.value_db + math.sqrt(1.0 - rho * rho) * self.sigma_db * z
        return self.value_db

    def move(self, moved_m: float) -> float:
        """Advance by `moved_m` metres: step(rho_distance(moved_m, decorrelation_m))."""
        return self.step(rho_distance(moved_m, self.decorrelation_m))


FADING_KINDS = ("none", "rayleigh", "rician")


class Fading:
    """Small-scale fading gain h with E|h|^2 = 1. The scattered part is a complex Gaussian AR(1) process,
    s' = rho s + sqrt(1 - rho^2) w with w ~ CN(0, 1); Rayleigh is h = s, Rician adds a fixed line-of-sight
    term, h = sqrt(K/(K+1)) + sqrt(1/(K+1)) s. The initial s, drawn at construction, is stationary CN(0, 1).
    Get rho per step from `rho_doppler` or `rho_coherence`."""

    def __init__(self, kind: str, seed: int, k_factor_db: float = 0.0) -> None:
        require_param(kind in FADING_KINDS, "kind", f"one of {FADING_KINDS}", kind)
        require_param(is_finite(k_factor_db), "k_factor_db", "a finite number", k_factor_db)
        self.kind, self.k_factor_db = kind, float(k_factor_db)
        k = 10.0 ** (k_factor_db / 10.0) if kind == "rician" else 0.0
        self._los, self._scatter = math.sqrt(k / (k + 1.0)), math.sqrt(1.0 / (k + 1.0))
        self._rng = np.random.default_rng(seed)
        self._s = self._cn()

    def _cn(self) -> complex:
        re, im = self._rng.standard_normal(2)
        return complex(re, im) * math.sqrt(0.5)

    @property
    def h(self) -> complex:
        """Current complex gain (1 for kind "none")."""
        return 1.0 + 0j if self.kind == "none" else self._los + self._scatter * self._s

    @property
    def power(self) -> float:
        return abs(self.h) ** 2

    def step(self, rho: float) -> float:
        """Advance one sample with step correlation rho and return the power gain |h|^2 (linear)."""
        _check_rho(rho)
        if self.kind == "none":
            return 1.0
        self._s = rho * self._s + math.sqrt(1.0 - rho * rho) * self._cn()
        return self.power


class GilbertElliott:
    """Bursty loss: a two-state (good/bad) Markov chain stepped once per interval; each state has its own
    loss fraction. The initial state, drawn at construction, follows the steady-state distribution."""

    def __init__(self, p_good_to_bad: float, p_bad_to_good: float, loss_good: float = 0.0,
                 loss_bad: float = 1.0, seed: int = 0) -> None:
        # Transition probabilities of 0 would make a state absorbing and the steady state undefined.
        for name, p in (("p_good_to_bad", p_good_to_bad), ("p_bad_to_good", p_bad_to_good)):
            require_param(is_finite(p) and 0 < p <= 1, name, "a probability in (0, 1]", p)
        for name, p in (("loss_good", loss_good), ("loss_bad", loss_bad)):
            require_param(is_finite(p) and 0 <= p <= 1, name, "a fraction in [0, 1]", p)
        self.p_good_to_bad, self.p_bad_to_good = float(p_good_to_bad), float(p_bad_to_good)
        self.loss_good, self.loss_bad = float(loss_good), float(loss_bad)
        self._rng = np.random.default_rng(seed)
        self.bad = bool(self._rng.random() < self.steady_state_bad)

    @property
    def steady_state_bad(self) -> float:
        return self.p_good_to_bad / (self.p_good_to_bad + self.p_bad_to_good)

    @property
    def mean_loss(self) -> float:
        pb = self.steady_state_bad
        return (1.0 - pb) * self.loss_good + pb * self.loss_bad

    @property
    def mean_bad_run(self) -> float:
        return 1.0 / self.p_bad_to_good

    @property
    def mean_good_run(self) -> float:
        return 1.0 / self.p_good_to_bad

    def step(self) -> float:
        """Advance one interval and return its loss fraction."""
        leave = self.p_bad_to_good if self.bad else self.p_good_to_bad
        if self._rng.random() < leave:
            self.bad = not self.bad
        return self.loss_bad if self.bad else self.loss_good
