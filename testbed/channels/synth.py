"""`testbed trace synth`: write a capacity trace from a channel model, e.g. a pedestrian Wi-Fi or vehicular LTE
SNR walk, so experiments can replay the same channel bit for bit (and share it as a plain file).

The model runs exactly as it would live (testbed/channels/plan.py) on a one-station topology, for one link
direction, and each interval's rate (and loss) becomes one step of the trace.
"""
from __future__ import annotations

import math
from pathlib import Path

from testbed.channels.plan import ChannelPlan
from testbed.channels.spec import ChannelSpec
from testbed.common.errors import ConfigError, Problem
from testbed.net.topology import Topology
from testbed.channels.traces import Trace
from testbed.common.yamlconf import load_document, validate

# Presets: plausible, documented parameter sets, not measurements of any particular network.
PRESETS: dict[str, dict] = {
    # A person walking around a 2.4 GHz Wi-Fi AP on a 100 × 100 m office floor (AP in the middle): indoor
    # path loss exponent 3.5 (walls), 4 dB shadowing decorrelating over 5 m, Rayleigh fading at walking-speed Doppler
    # (1.4 m/s / 0.125 m ≈ 11 Hz), 802.11ac MCS ladder on 20 MHz.
    "pedestrian": {
        "model": "snr", "band_mhz": 20, "tx_power_dbm": 15, "ap_tx_power_dbm": 20,
        "mobility": {"random_waypoint": {"area_m": [100, 100], "speed_mps": [0.8, 1.6], "pause_s": 3},
                     "ap_position": [50, 50]},
        "path_loss": {"exponent": 3.5, "ref_loss_db": 40.0},
        "shadowing": {"sigma_db": 4.0, "decorrelation_m": 5.0},
        "fading": {"kind": "rayleigh", "doppler_hz": 11.0},
        "rate": {"mode": "mcs", "table": "wifi"},
        "loss": {"retries": 4},
    },
    # A car at 15 m/s (54 km/h) driving back and forth past an LTE cell site 30 m off the road, 600 m of
    # road: urban macro exponent 3.5, 8 dB shadowing decorrelating over 50 m, Rician fading (K = 3 dB) at ~100 Hz
    # Doppler (15 m/s at 2 GHz), LTE CQI ladder on 10 MHz.
    "vehicular": {
        "model": "snr", "band_mhz": 10, "tx_power_dbm": 23, "ap_tx_power_dbm": 30,
        "mobility": {"waypoints": [[0, -300, 30], [40, 300, 30], [80, -300, 30]], "loop": True},
        "path_loss": {"exponent": 3.5, "ref_loss_db": 38.0},
        "shadowing": {"sigma_db": 8.0, "decorrelation_m": 50.0},
        "fading": {"kind": "rician", "k_factor_db": 3.0, "doppler_hz": 100.0},
        "rate": {"mode": "mcs", "table": "lte"},
        "loss": {"retries": 3},
    },
}


def _topology(channel: ChannelSpec) -> Topology:
    return Topology.model_validate({
        "name": "synth", "nodes": {"ap": {"role": "ap"}, "sta": {"role": "drafter"}},
        "links": [{"a": "sta", "b": "ap", "kind": "wireless", "rate_up_mbps": 1, "rate_down_mbps": 1,
                   "channel": channel.model_dump()}]})


def load_channel(source: str) -> ChannelSpec:
    """A preset name, or a YAML file holding a channel mapping (the `channel:` of a topology link)."""
    if source in PRESETS:
        return ChannelSpec.model_validate(PRESETS[source])
    if not Path(source).is_file():
        raise ConfigError([Problem(source, "", f"expected a preset ({', '.join(PRESETS)}) or a YAML file "
                                               "with a channel mapping")])
    doc = load_document(source)
    spec = validate(doc, ChannelSpec)
    if spec.model == "snr" and spec.band_mhz is None:
        raise ConfigError([doc.problem(("band_mhz",), "a channel for trace synthesis needs band_mhz")])
    if spec.model == "trace":
        raise ConfigError([doc.problem(("model",), "synthesise from a static or snr model; a trace is "
                                                   "converted with `testbed trace convert`")])
    return spec


def synthesize(channel: ChannelSpec, duration_s: float, interval_s: float = 0.1, seed: int = 0,
               direction: str = "up", with_loss: bool = True, loop: bool = True) -> Trace:
    """Run the channel for duration_s and return the station's `direction` (up: station → AP) as a rate trace."""
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be up or down, got {direction!r}")
    if not duration_s >= interval_s > 0:
        raise ValueError(f"need duration_s >= interval_s > 0, got {duration_s!r} and {interval_s!r}")
    plan = ChannelPlan(_topology(channel), interval_s, seed)
    n = int(round(duration_s / interval_s))
    times, rates, losses = [], [], []
    for k in range(n):
        state = plan.step(k)[0].state
        times.append(round(k * interval_s, 9))
        rates.append(state.rate_mbps(direction))
        losses.append(state.loss(direction))
    loss = losses if with_loss and any(losses) else None
    # csv columns are positional: a loss column needs a delay column, left empty (NaN) = the link's own delay
    return Trace.from_steps(times, rates, n * interval_s, delay_ms=[math.nan] * n if loss else None, loss_pct=loss,
                            loop=loop, format="csv", source=f"synth:{seed}")
