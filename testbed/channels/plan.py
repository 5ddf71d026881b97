"""Channel models at run time: every interval, each channel-driven link gets a new `LinkState`.

`ChannelPlan(topology, interval_s, seed).step(k, demands)` is pure and deterministic: tick k (time k·interval)
gives the same states for the same seed, whatever the wall clock did. The runner's `ChannelDriver` calls it
and applies the states; `testbed trace synth` calls it to write traces; tests call it directly.

Per link, one model (`links[i].channel.model`, schema in testbed/channels/spec.py):
- static: the link's own rates;
- trace: the mean rate a trace file delivers during the interval (and its delay/loss columns, if any);
- snr: mobility → distance → path loss + shadowing + fading → SNR per direction → spectral efficiency and
  packet loss (testbed/channels/radio.py);
and optionally Gilbert–Elliott bursty loss on top. Loss from the channel compounds with the link's loss_pct.
Link faults (an experiment's `faults:`, testbed/channels/faults.py) are an overlay on the states of the faulted links,
so a faulted link is driven every interval even without a channel model (a static one stands in).

APs with a `radio` block split their band among their wireless stations every interval (testbed/policies/
allocation.py): a station's channel says what rate it would get with the whole band, and it gets its share of
that. Station demand (bytes per round) comes from node telemetry or is uniform.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

from testbed.channels import mobility as mob
from testbed.channels import radio
from testbed.channels.spec import ChannelSpec
from testbed.net.linkstate import MAX_RATE_MBPS, LinkState
from testbed.policies.allocation import Station, make_allocation
from testbed.policies.joint import JointAllocation
from testbed.channels.faults import FaultSchedule
from testbed.net.topology import LinkSpec, Topology, station_and_ap


def sub_seed(seed: int, *parts: str) -> int:
    """An independent, stable seed per (run seed, link, process): adding a link never reshuffles the others."""
    return zlib.crc32("/".join((str(seed),) + parts).encode())


@dataclass(frozen=True)
class ChannelSample:
    """What a link's channel says about one interval, per link direction, before any band allocation."""
    rate_up_mbps: float                 # with the whole band, if the link is a station of a radio AP
    rate_down_mbps: float
    loss_up_pct: float = 0.0            # the channel's own loss (compounded with the link's loss_pct later)
    loss_down_pct: float = 0.0
    delay_ms: float | None = None       # None: the link's own delay
    info: dict = field(default_factory=dict)   # snr_up_db, distance_m, ...: logged with the applied state


class StaticChannel:
    def __init__(self, link: LinkSpec):
        self.sample_ = ChannelSample(link.rate_up_mbps, link.rate_down_mbps)

    def sample(self, k: int, t: float, dt: float) -> ChannelSample:
        return self.sample_


class TraceChannel:
    """Replays capacity traces: each interval gets the mean rate the trace delivers during it, so a Mahimahi
    trace's per-millisecond opportunities are reproduced on average, not packet by packet (HTB has no
    per-packet schedule; 100 ms steps track best, see research/netemu.md §4)."""

    def __init__(self, spec: ChannelSpec):
        from testbed.channels.traces import load_trace
        self.up = load_trace(spec.up, spec.format, loop=spec.loop, interval_s=spec.interval_s)
        self.down = self.up if spec.down in (None, spec.up) else \
            load_trace(spec.down, spec.format, loop=spec.loop, interval_s=spec.interval_s)

    def sample(self, k: int, t: float, dt: float) -> ChannelSample:
        delay, loss_up = self.up.extras_at(t)
        _, loss_down = self.down.extras_at(t)
        return ChannelSample(self.up.rate_between(t, t + dt), self.down.rate_between(t, t + dt),
                             loss_up or 0.0, loss_down or 0.0, delay)


def _mobility_model(spec, seed: int) -> object:
    if spec.distance_m is not None:
        return mob.Fixed(spec.ap_position[0] + spec.distance_m, spec.ap_position[1])
    if spec.waypoints is not None:
        return mob.Waypoints([tuple(p) for p in spec.waypoints], loop=spec.loop)
    rw = spec.random_waypoint
    return mob.RandomWaypoint(tuple(rw.area_m), tuple(rw.speed_mps), rw.pause_s, seed=seed,
                              start=tuple(rw.start) if rw.start else None)


class SnrChannel:
    """Distance → SNR → rate and loss, per direction. Fading and shadowing are one process for both directions
    (a reciprocal channel); the directions differ by transmit power, so by SNR, rate and loss."""

    def __init__(self, spec: ChannelSpec, band_mhz: float, station_is_a: bool, seed: int, link: str):
        self.spec, self.band_hz = spec, band_mhz * 1e6
        m = spec.mobility
        self.mobility = _mobility_model(m, sub_seed(seed, link, "mobility"))
        self.ap = tuple(m.ap_position)
        self.shadowing = radio.Shadowing(spec.shadowing.sigma_db, spec.shadowing.decorrelation_m,
                                         seed=sub_seed(seed, link, "shadowing"))
        self.fading = radio.Fading(spec.fading.kind, seed=sub_seed(seed, link, "fading"),
                                   k_factor_db=spec.fading.k_factor_db)
        station_tx = spec.tx_power_dbm
        ap_tx = spec.ap_tx_power_dbm if spec.ap_tx_power_dbm is not None else station_tx
        # link "up" is a → b: the station transmits on it when the station is end a
        self.tx = {"up": station_tx, "down": ap_tx} if station_is_a else {"up": ap_tx, "down": station_tx}
        self.last_pos = None
        self.last_k = None

    def _fading_rho(self, dt: float) -> float:
        f = self.spec.fading
        if f.doppler_hz is not None:
            return radio.rho_doppler(dt, f.doppler_hz)
        return radio.rho_coherence(dt, f.coherence_ms / 1e3) if f.coherence_ms else 0.0

    def sample(self, k: int, t: float, dt: float) -> ChannelSample:
        # Called with consecutive k; a skipped tick advances the processes by the ticks skipped.
        steps = 1 if self.last_k is None else max(1, k - self.last_k)
        self.last_k = k
        pos = self.mobility.position(t)
        moved = 0.0 if self.last_pos is None else math.dist(pos, self.last_pos)
        first = self.last_pos is None
        self.last_pos = pos
        # the first draw of each process is from its stationary law (rho 0 = independent of nothing before)
        shadow = self.shadowing.step(0.0 if first else radio.rho_distance(moved, self.spec.shadowing.decorrelation_m))
        power = self.fading.step(0.0 if first else self._fading_rho(dt * steps))
        d = mob.distance(pos, self.ap)
        pl = radio.path_loss_db(d, self.spec.path_loss.exponent, self.spec.path_loss.ref_loss_db,
                                self.spec.path_loss.ref_distance_m)
        out: dict[str, tuple[float, float, float]] = {}
        for direction in ("up", "down"):
            snr = radio.snr_db(self.tx[direction], pl, self.band_hz, shadowing_db=shadow, fading_power=power,
                               noise_density_dbm_hz=self.spec.noise_density_dbm_hz,
                               noise_figure_db=self.spec.noise_figure_db)
            eff, loss = self._rate_and_loss(snr)
            out[direction] = (snr, eff, loss)
        info = {"distance_m": round(d, 3), "path_loss_db": round(pl, 3), "shadowing_db": round(shadow, 3),
                "fading_db": round(10 * math.log10(max(power, 1e-12)), 3)}
        for direction, (snr, eff, _) in out.items():
            info[f"snr_{direction}_db"] = round(snr, 3)
            info[f"efficiency_{direction}"] = round(eff, 5)
        rate = {dr: eff * self.band_hz / 1e6 for dr, (_, eff, _) in out.items()}
        return ChannelSample(rate["up"], rate["down"], out["up"][2], out["down"][2], None, info)

    def _rate_and_loss(self, snr: float) -> tuple[float, float]:
        """(bits/s/Hz, packet loss %) at this SNR."""
        r, ls = self.spec.rate, self.spec.loss
        if r.mode == "shannon":
            eff = min(r.max_bits_per_hz, radio.shannon_efficiency(snr, r.efficiency))
            threshold = ls.threshold_db
        else:
            mcs = radio.mcs_for(snr, radio.MCS_TABLES[r.table])
            lowest = radio.MCS_TABLES[r.table][0]
            eff = mcs.bits_per_hz if mcs else 0.0       # outage: below the lowest MCS nothing gets through
            threshold = (mcs or lowest).min_snr_db
        bler = radio.bler(snr, threshold, ls.slope_per_db, ls.target_bler)
        return eff, 100 * radio.packet_loss(bler, ls.retries)


@dataclass(frozen=True)
class Applied:
    """One link's state for one tick, with what produced it (for the event log)."""
    link: str
    state: LinkState
    info: dict
    # the state without an outage's drop-everything loss: the simulator models an outage itself (as segments
    # lost until it ends, testbed/sim/network.py), so its loss model must not also see the emulator's 99.99 %
    sim_state: LinkState | None = None

    @property
    def state_for_sim(self) -> LinkState:
        return self.sim_state or self.state


class ChannelPlan:
    """Every channel-driven link of a topology, and the band split of every radio AP."""

    def __init__(self, topo: Topology, interval_s: float = 0.1, seed: int = 0, faults=()):
        """faults: the experiment's FaultSpecs (testbed/channels/faults.py), applied over the channels' states."""
        if not 0.001 <= interval_s <= 3600:
            raise ValueError(f"channel interval must be in [0.001, 3600] s, got {interval_s!r}")
        self.topo, self.interval_s, self.seed = topo, interval_s, seed
        self.faults = FaultSchedule(list(faults), interval_s)
        faulted = set(self.faults.links())
        self.links: dict[str, LinkSpec] = {}
        self.channels: dict[str, object] = {}
        self.ge: dict[str, radio.GilbertElliott] = {}
        self.stations: dict[str, list[tuple[str, str, bool]]] = {}   # ap -> [(link, station, station_is_a)]
        for link in topo.links:
            name = link.link_name
            pair = station_and_ap(topo, link)
            radio_ap = pair is not None and topo.nodes[pair[1]].radio is not None
            if link.channel is None and not radio_ap and name not in faulted:
                continue
            self.links[name] = link
            if radio_ap:
                self.stations.setdefault(pair[1], []).append((name, pair[0], link.a == pair[0]))
            ch = link.channel or ChannelSpec()
            if ch.model == "trace":
                self.channels[name] = TraceChannel(ch)
            elif ch.model == "snr":
                band = ch.band_mhz or topo.nodes[pair[1]].radio.band_mhz
                self.channels[name] = SnrChannel(ch, band, link.a == pair[0], seed, name)
            else:
                self.channels[name] = StaticChannel(link)
            g = ch.gilbert_elliott
            if g is not None:
                self.ge[name] = radio.GilbertElliott(g.p_good_to_bad, g.p_bad_to_good, g.loss_good_pct / 100,
                                                     g.loss_bad_pct / 100, seed=sub_seed(seed, name, "ge"))
        self.policies = {ap: {d: self._allocation(ap, d) for d in ("up", "down")} for ap in self.stations}
        self.last_rates: dict[tuple[str, str], float] = {}     # (link, direction) -> rate applied last tick
        self.known_demand: dict[tuple[str, str], float] = {}   # (station, direction) -> bytes known before the run

    def _allocation(self, ap: str, direction: str):
        r = self.topo.nodes[ap].radio
        name = getattr(r, f"allocation_{direction}")
        if name == "joint":
            # ~100 B of DRAFT framing besides the tokens (measured: 94-120 B with ids)
            return JointAllocation(band_hz=r.band_mhz * 1e6, frame_bytes=100.0, gamma_min=1,
                                   gamma_max=r.joint_gamma_max)
        return make_allocation(name)

    def driven_links(self) -> list[str]:
        return list(self.links)

    def live_delay_links(self) -> list[str]:
        """Links whose delay or loss may change while running: they need a delay element from the start."""
        out = []
        for name, link in self.links.items():
            ch = self.channels[name]
            if isinstance(ch, TraceChannel):
                varies = any(t.has_delay or t.has_loss for t in (ch.up, ch.down))
            else:
                varies = isinstance(ch, SnrChannel)
            if varies or name in self.ge or name in self.faults.loss_links():
                out.append(name)
        return out

    def fault_edges(self, k_from: int, k_to: int):
        """The faults starting or ending at ticks k_from..k_to (testbed/channels/faults.py Edge), for the event log."""
        return self.faults.edges(k_from, k_to)

    def uses_telemetry(self) -> bool:
        return any(self.topo.nodes[ap].radio.demand == "telemetry" or self.topo.nodes[ap].radio.allocation_up ==
                   "joint" for ap in self.stations)

    def _feed_joint(self, policy, members, stats: dict | None) -> None:
        """Give the joint allocation each drafter's acceptance, bytes per token, base round time (the measured
        RTT less last tick's upload time) and time per token; defaults until the drafter has verified rounds."""
        for name, st, st_is_a in members:
            s = (stats or {}).get(st)
            if s is None:
                policy.update(name, 0.7, 24.0, 0.02, 0.002)
                continue
            rate = self.last_rates.get((name, "up" if st_is_a else "down"))
            upload = 8 * s["bytes_per_token"] * 4 / (rate * 1e6) if rate else 0.0
            policy.update(name, s["alpha"], s["bytes_per_token"], max(1e-3, s["rtt_s"] - upload),
                          max(1e-5, s["per_token_s"]))

    def step(self, k: int, demands: dict[tuple[str, str], float] | None = None,
             stats: dict[str, dict[str, float]] | None = None) -> list[Applied]:
        """States of every driven link for tick k. demands[(station, "up"|"down")] is the bytes per round the
        station sends (up) or receives (down); missing stations count as the mean of the known ones. stats
        (per drafter: alpha, bytes_per_token, per_token_s, rtt_s) feed a `joint` allocation."""
        t, dt = k * self.interval_s, self.interval_s
        if self.known_demand:                 # known uploads (users' clients) count as they are; telemetry adds the rest
            demands = {**(demands or {}), **self.known_demand}
        samples = {name: ch.sample(k, t, dt) for name, ch in self.channels.items()}
        rates = {name: {"up": s.rate_up_mbps, "down": s.rate_down_mbps} for name, s in samples.items()}
        info = {name: {"a": self.links[name].a, "b": self.links[name].b, **s.info} for name, s in samples.items()}
        for ap, members in self.stations.items():
            band_mhz = self.topo.nodes[ap].radio.band_mhz
            uniform = self.topo.nodes[ap].radio.demand == "uniform"
            for sdir in ("up", "down"):           # the station's direction: up = station → AP
                known = [demands[(st, sdir)] for _, st, _ in members if demands and (st, sdir) in demands]
                fill = sum(known) / len(known) if known else 1.0
                stations = []
                for name, st, st_is_a in members:
                    ldir = sdir if st_is_a else ("down" if sdir == "up" else "up")
                    demand = 1.0 if uniform else (demands or {}).get((st, sdir), fill)
                    stations.append(Station(name, rates[name][ldir] / band_mhz, demand))
                policy = self.policies[ap][sdir]
                if isinstance(policy, JointAllocation):
                    self._feed_joint(policy, members, stats)
                shares = policy.allocate(stations)
                for (name, st, st_is_a), s in zip(members, stations):
                    ldir = sdir if st_is_a else ("down" if sdir == "up" else "up")
                    info[name][f"full_band_rate_{ldir}_mbps"] = round(rates[name][ldir], 6)
                    info[name][f"share_{ldir}"] = round(shares[name], 6)
                    info[name][f"demand_{ldir}"] = s.demand
                    info[name]["station"] = st
                    if isinstance(policy, JointAllocation):
                        info[name]["gamma_joint"] = policy.gammas[name]
                    rates[name][ldir] *= shares[name]
        out = []
        for name, link in self.links.items():
            s = samples[name]
            floor = link.channel.min_rate_mbps if link.channel else 0.001
            ge = self.ge[name].step() if name in self.ge else 0.0
            if name in self.ge:
                info[name]["ge_loss_pct"] = round(100 * ge, 6)
            loss = {d: 100 * (1 - (1 - link.loss_pct / 100) * (1 - ch_loss / 100) * (1 - ge))
                    for d, ch_loss in (("up", s.loss_up_pct), ("down", s.loss_down_pct))}
            delay = link.delay_ms if s.delay_ms is None else s.delay_ms
            state = link.state().with_(
                rate_up_mbps=_clamp_rate(rates[name]["up"], floor), rate_down_mbps=_clamp_rate(rates[name]["down"], floor),
                delay_ms=delay, jitter_ms=min(link.jitter_ms, delay),
                loss_pct=_clamp_loss(loss["up"]), loss_down_pct=_clamp_loss(loss["down"]))
            sim_state = None
            if name in self.faults.by_link:
                state, sim_state = self.faults.overlay(name, k, state)
            out.append(Applied(name, state, info[name], sim_state))
            self.last_rates[(name, "up")], self.last_rates[(name, "down")] = state.rate_up_mbps, state.rate_down_mbps
        return out


def _clamp_rate(rate: float, floor: float) -> float:
    # HTB needs a positive rate (an outage becomes a trickle); rounded to what tc can express (1 kbit/s)
    return round(min(MAX_RATE_MBPS, max(floor, rate)), 3)


def _clamp_loss(pct: float) -> float:
    # LinkState takes [0, 100): a total outage keeps a sliver of delivery, which the floor rate already implies
    return round(min(99.99, max(0.0, pct)), 4)
