"""YAML schema of time-varying wireless channels (`links[i].channel`) and of an AP's radio (`nodes.<ap>.radio`).

    links:
      - a: d1
        b: ap1
        kind: wireless
        rate_up_mbps: 20            # the rate before the first channel sample; `static` keeps it
        rate_down_mbps: 20
        channel:
          model: snr                # static | trace | snr
          mobility: {waypoints: [[0, 5, 0], [30, 150, 0]]}
          fading: {kind: rayleigh, doppler_hz: 2}
          gilbert_elliott: {p_good_to_bad: 0.02, p_bad_to_good: 0.25, loss_bad_pct: 20}

The runtime models are in `testbed/channels/plan.py` (they turn these specs into link states every interval);
the physics in `testbed/channels/radio.py`, positions in `testbed/channels/mobility.py`, trace files in `testbed/channels/traces.py`,
and the band split among stations in `testbed/policies/allocation.py`.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from testbed.common.strict import StrictModel

Db = Annotated[float, Field(ge=-300, le=300)]
Prob = Annotated[float, Field(ge=0, le=1)]


class _Strict(StrictModel):            # unknown fields and booleans for numbers refused (testbed/common/strict.py)
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- mobility ------------------------------------------------------------------------------------------------
class RandomWaypointSpec(_Strict):
    area_m: tuple[Annotated[float, Field(gt=0, le=1e6)], Annotated[float, Field(gt=0, le=1e6)]]  # width, height
    speed_mps: tuple[Annotated[float, Field(gt=0, le=1000)], Annotated[float, Field(gt=0, le=1000)]]   # min, max
    pause_s: float = Field(0.0, ge=0, le=86_400)
    start: tuple[float, float] | None = None      # default: a random point of the area

    @model_validator(mode="after")
    def _order(self):
        if self.speed_mps[0] > self.speed_mps[1]:
            raise ValueError(f"speed_mps: expected [min, max] with min <= max, got {list(self.speed_mps)}")
        return self


class MobilitySpec(_Strict):
    """Where the station is over time; the AP sits at `ap_position` (default the origin). Exactly one of
    `distance_m` (fixed), `waypoints` ([[t_s, x_m, y_m], ...], linear in between) or `random_waypoint`."""
    distance_m: float | None = Field(None, gt=0, le=1e6)
    waypoints: list[tuple[float, float, float]] | None = Field(None, min_length=1, max_length=100_000)
    loop: bool = False                             # waypoints only: start over after the last point
    random_waypoint: RandomWaypointSpec | None = None
    ap_position: tuple[float, float] = (0.0, 0.0)

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("distance_m", "waypoints", "random_waypoint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of distance_m, waypoints or random_waypoint"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.waypoints:
            ts = [p[0] for p in self.waypoints]
            if any(b <= a for a, b in zip(ts, ts[1:])):
                raise ValueError("waypoints: expected [t_s, x_m, y_m] rows with strictly increasing t_s")
            if ts[0] < 0:
                raise ValueError(f"waypoints: times start at 0 or later, got {ts[0]:g}")
        return self


# -- the pieces of an SNR channel -----------------------------------------------------------------------------
class PathLossSpec(_Strict):
    """Log-distance path loss: ref_loss_db + 10 · exponent · log10(d / ref_distance_m)."""
    exponent: float = Field(3.0, ge=1, le=8)       # 2 free space, ~3 indoor office, 3.5-4 urban
    ref_loss_db: float = Field(40.0, ge=0, le=200)  # at ref_distance_m (40 dB ≈ free space at 1 m, 2.4 GHz)
    ref_distance_m: float = Field(1.0, gt=0, le=1e4)


class ShadowingSpec(_Strict):
    """Log-normal shadowing, correlated over the distance the station moves (Gudmundson)."""
    sigma_db: float = Field(0.0, ge=0, le=30)
    decorrelation_m: float = Field(10.0, gt=0, le=1e5)


class FadingSpec(_Strict):
    """Small-scale fading; its correlation between samples comes from a Doppler frequency (Clarke: J0) or a
    coherence time (exponential)."""
    kind: Literal["none", "rayleigh", "rician"] = "none"
    k_factor_db: float = Field(6.0, ge=-30, le=40)          # rician only: LOS power / scattered power
    doppler_hz: float | None = Field(None, ge=0, le=10_000)  # v / wavelength, e.g. 1.4 m/s at 2.4 GHz ≈ 11 Hz
    coherence_ms: float | None = Field(None, gt=0, le=1e7)

    @model_validator(mode="after")
    def _one(self):
        if self.kind != "none" and (self.doppler_hz is None) == (self.coherence_ms is None):
            raise ValueError(f"{self.kind} fading needs exactly one of doppler_hz or coherence_ms")
        return self


class RateSpec(_Strict):
    """SNR → spectral efficiency: Shannon times an efficiency factor, or an MCS table (`wifi`, `lte`)."""
    mode: Literal["shannon", "mcs"] = "shannon"
    efficiency: float = Field(0.6, gt=0, le=1)   # shannon only: the fraction of capacity real PHYs reach
    max_bits_per_hz: float = Field(4.33, gt=0, le=30)   # shannon only: the top modulation and coding (802.11ac
                                                        # MCS9, one stream, 20 MHz: 86.7 Mbit/s ≈ 4.33 bit/s/Hz)
    table: Literal["wifi", "lte"] = "wifi"      # mcs only


class LossSpec(_Strict):
    """SNR → packet loss: a logistic block-error curve that is `target_bler` at the working MCS's threshold
    (Shannon: at `threshold_db`), then `retries` independent retransmissions."""
    target_bler: float = Field(0.1, gt=0, lt=1)
    slope_per_db: float = Field(1.5, gt=0, le=20)
    threshold_db: float = Field(0.0, ge=-50, le=80)   # shannon only: the SNR where the block error is target_bler
    retries: int = Field(4, ge=0, le=15)             # link-layer retransmissions (802.11 default 7 for data)


class GilbertElliottSpec(_Strict):
    """Two-state bursty loss, stepped once per channel interval; composes with any model's own loss."""
    p_good_to_bad: float = Field(gt=0, le=1)
    p_bad_to_good: float = Field(gt=0, le=1)
    loss_good_pct: float = Field(0.0, ge=0, lt=100)
    loss_bad_pct: float = Field(50.0, ge=0, lt=100)


# -- the channel of one link ----------------------------------------------------------------------------------
class ChannelSpec(_Strict):
    model: Literal["static", "trace", "snr"] = "static"
    # trace: capacity per link direction (up = a → b, as rate_up_mbps); see testbed/channels/traces.py
    up: str | None = None                           # trace file, relative to the YAML that names it
    down: str | None = None                         # default: the `up` file
    format: Literal["mahimahi", "csv", "series"] | None = None   # default: from the file suffix
    interval_s: float = Field(1.0, gt=0, le=3600)   # series files with one column: seconds per value
    loop: bool = True                               # start over at the end (else the last value holds)
    # snr
    band_mhz: float | None = Field(None, gt=0, le=10_000)   # default: the AP's radio.band_mhz
    tx_power_dbm: float = Field(20.0, ge=-50, le=60)        # the station's (its uplink)
    ap_tx_power_dbm: float | None = Field(None, ge=-50, le=60)   # the AP's (downlink); default tx_power_dbm
    noise_density_dbm_hz: float = Field(-174.0, ge=-220, le=-100)
    noise_figure_db: float = Field(7.0, ge=0, le=40)
    mobility: MobilitySpec | None = None
    path_loss: PathLossSpec = PathLossSpec()
    shadowing: ShadowingSpec = ShadowingSpec()
    fading: FadingSpec = FadingSpec()
    rate: RateSpec = RateSpec()
    loss: LossSpec = LossSpec()
    min_rate_mbps: float = Field(0.05, gt=0, le=100)   # floor in outage: an HTB class cannot have rate 0
    # any model
    gilbert_elliott: GilbertElliottSpec | None = None

    @model_validator(mode="after")
    def _fields_of_model(self):
        if self.model == "trace" and self.up is None:
            raise ValueError("model trace needs `up` (a trace file; `down` defaults to the same file)")
        if self.model != "trace":
            for f in ("up", "down", "format"):
                if getattr(self, f) is not None:
                    raise ValueError(f"`{f}` belongs to model trace, not {self.model}")
        if self.model == "snr" and self.mobility is None:
            raise ValueError("model snr needs `mobility` (e.g. {distance_m: 20})")
        if self.model != "snr" and self.mobility is not None:
            raise ValueError(f"`mobility` drives model snr, not {self.model}")
        return self


ALLOCATIONS = ("equal", "proportional", "max-min", "zhu", "joint")


class RadioSpec(_Strict):
    """An AP's shared band: every interval its allocation policy splits it among its wireless stations, whose
    rate is then share × (the rate their channel gives with the whole band)."""
    band_mhz: float = Field(20.0, gt=0, le=10_000)
    # stations → AP; `joint` also chooses each drafter's window (testbed/policies/joint.py), published to the
    # verifier for speculation policy `channel`
    allocation_up: Literal["equal", "proportional", "max-min", "zhu", "joint"] = "equal"
    allocation_down: Literal["equal", "proportional", "max-min", "zhu"] = "equal"   # AP → stations
    demand: Literal["telemetry", "uniform"] = "telemetry"   # bytes per round from the drafters' event logs
    joint_gamma_max: int = Field(8, ge=1, le=64)            # joint: the largest window it may choose
