"""`SimNetwork`: when a message sent across the emulated network reaches the other host's application.

The simulator's driver asks `deliver_at(src, dst, nbytes, now)` for every ZeroMQ frame; this module answers from
a model of exactly what the emulator builds (testbed/net/shaping.py, ../shared/research/netemu.md):

- Framing. Nodes send one ZMTP frame per message: the TCP stream carries a flags byte, a 1-byte length (8 bytes
  above 255) and the frame. TCP cuts the stream into MSS = 1448 B segments (1500 MTU - 20 IP - 20 TCP - 12
  timestamps); each costs 66 B more on the wire as HTB counts it (14 Ethernet + 20 IP + 32 TCP), so a full
  segment is shaping.FRAME = 1514 B. No coalescing across messages (ZeroMQ sets TCP_NODELAY). No congestion
  window: the connection is warm (netemu §5 saw no slow-start effect at 50 KB), so a message leaves at once.
- Rate: an HTB class per link direction on the sender's egress, then a pfifo leaf of queue_pkts. HTB is a
  deficit token bucket: it dequeues a packet whenever its tokens are >= 0 and then charges the packet, with a
  bucket of shaping.burst_bytes(rate). So a packet leaves *at the start* of its slot, not after it, and up to a
  burst leaves at once after idle. Equivalently (derived in `_Shaper.admit`): a FIFO serializer fed with
  arrivals moved `burst/rate` earlier; the packet is dequeued at max(arrival, start of its service). This is
  what the emulator measured: 50 KB over two 10 Mbit/s hops with D = 10 ms took 59.28 ms request+reply and
  98.03 ms echo (netemu §5); this model gives 58.8 and 97.5, an ideal store-and-forward wire 63.3 and 106.1.
  `shaper="wire"` gives that ideal wire instead (service = wire bits / rate, next hop after the last bit).
- Drop-tail: a segment arriving at a hop whose pfifo already holds queue_pkts waiting segments is dropped and
  TCP recovers it like a loss. Not at the sending host's own egress: there TCP small queues keep only ~2 of a
  socket's segments in the qdisc and hold the rest in the socket (a local qdisc drop is not a loss in Linux).
- Delay, jitter, loss: as the NFQUEUE daemon does, at the destination's ingress, per source host (one queue per
  (src, dst), hence per connection): the path's delays add, its jitters combine into one uniform of the same
  variance (+-sqrt(sum jitter^2)), and a packet is never released before one that arrived ahead of it (FIFO,
  so jitter never reorders). Loss is Bernoulli per link direction (loss_pct, or loss_down_pct for "down"),
  drawn per hop so it can be counted per link; the packet has used every shaper on its path before it is lost,
  as in the emulator. Gilbert-Elliott loss reaches the emulator only as a per-tick loss_pct from the channel
  plan (testbed/channels/plan.py steps the chain once per interval), so it reaches this model the same way,
  through set_link; within a tick loss is Bernoulli here as there.
- TCP recovery, as Linux (RACK-TLP, tcp_recovery=1) on one connection per (src, dst):
  - a lost segment with >= 3 later-sent segments delivered is retransmitted when the 3rd one's SACK arrives;
    with 1-2, RACK waits a reordering window min(min_rtt/4, srtt) past that segment's send time plus the RTT
    of the later one (0 once in recovery);
  - a tail loss (nothing later delivered) gets a loss probe at PTO = 2*SRTT + (200 ms if it is the only segment
    out, for the peer's delayed ACK, else 2 ms), capped at the RTO and re-armed by every ACK; the probe resends
    the highest lost segment, and its SACK exposes the others to RACK;
  - if the probe is lost too, the RTO fires RTO after it: RTO = SRTT + max(200 ms, 4*RTTVAR) (Linux's rto_min
    bounds the variance term, not the sum), doubling at each further timeout, at most 120 s; it resends the
    first lost segment and the others follow its ACK.
  SRTT/RTTVAR follow RFC 6298 from the connection's base RTT (delays both ways + one lone full frame through
  the shapers), with one sample per delivered first transmission (Karn). Simplifications: ACKs take no
  bandwidth, are never lost and see the reverse path's mean delay; recovery sees only the message's own
  segments (a later message would not hasten it); a retransmission queues behind its connection's segments
  that reached a shaper before it (Linux would put it ahead of new data still held back by TCP small queues);
  a segment counts as sent when the sending host's shaper dequeues it.
- Outages (an experiment's outage and flap faults, testbed/channels/faults.py): windows of time, known up front, in
  which a link drops every segment that reaches its delay element (where the emulator's daemon drops them). The
  channel plan's outage state (99.99 % loss) does not reach this model (simrun passes the state without it), so
  what an outage does here is exactly: lost until it ends, then recovered by the TCP model above, with RTO
  backoff, so a message sent during an outage arrives after it ends, up to one backed-off RTO later.
- Time: `now` must not go backwards between calls. A link's state applies to what is sent after a set_link;
  a segment keeps the states of the moment it was sent. The time is returned before later ticks are known, so
  a retransmission sent after the current tick is expected to end (the last set_link of the link plus its last
  tick interval) sees the link's time-averaged loss so far, not the current one: an outage tick (the channel
  clamps loss at 99.99 %) must not hold a message for hours when the emulator's next tick would end it. Shapers keep a calendar of committed service, so a
  message sent later that reaches a shared hop earlier fills the idle time between earlier messages' segments
  (off a true FIFO by at most one segment's service time where it would have squeezed in ahead).
"""
from __future__ import annotations

import bisect
import math
import random
import zlib
from dataclasses import dataclass, field
from typing import Callable

from testbed.net.linkstate import LinkState
from testbed.net.netplan import DIRECTIONS, NetPlan
from testbed.net.shaping import FRAME, burst_bytes
from testbed.net.topology import Topology

MSS = 1448
HEADER = 66
assert MSS + HEADER == FRAME
RTO_MIN = 0.200            # Linux tcp_rto_min
RTO_MAX = 120.0            # Linux TCP_RTO_MAX
TLP_ONE_OUT = RTO_MIN      # Linux adds tcp_rto_min to the probe timeout when one segment is out (delayed ACK)
TLP_MANY_OUT = 0.002       # ... and TCP_TIMEOUT_MIN (2 ms) otherwise
DUPTHRESH = 3              # tp->reordering: SACKed segments that make RACK's reordering window 0
SHAPERS = ("htb", "wire")
EPS = 1e-12                # float slack when fitting service into a gap
MAX_ROUNDS = 100_000       # recovery rounds per message before giving up (only a loss hook losing all can hit it)


def zmtp_bytes(frame: int) -> int:
    """Bytes one single-frame ZeroMQ message puts on the TCP stream (ZMTP 3: flags, then a 1- or 8-byte size)."""
    return frame + (2 if frame <= 255 else 9)


def segments(stream_bytes: int) -> list[int]:
    """Payload of each TCP segment a message of `stream_bytes` becomes (at least one)."""
    full, rest = divmod(max(0, stream_bytes), MSS)
    return [MSS] * full + ([rest] if rest or not full else [])


def htb_bps(rate_mbps: float) -> int:
    return max(1, round(rate_mbps * 1000)) * 1000      # tc is given whole kbit/s (shaping.htb_class)


@dataclass
class _Slot:
    u: float                 # start of (virtual) service
    e: float                 # end of service
    a: float                 # arrival at the qdisc
    q: float                 # dequeued: the time it leaves this shaper (HTB) or starts its service (wire)


class _Shaper:
    """One link direction: HTB class (or ideal wire) and its pfifo, as a calendar of committed service."""

    def __init__(self):
        self.slots: list[_Slot] = []        # sorted by u, never overlapping, so ends are sorted too
        self.ends: list[float] = []
        self.lookback = 0.0                 # largest burst time used: service may start that far before arrival
        self.run_start = self.run_end = -math.inf   # the tail of the calendar that has no gap, and its end
        self.stats = {"bytes": 0, "segments": 0, "drops": 0, "losses": 0, "retransmits": 0}
        # The slots' arrivals and dequeues, each sorted: a <= q for every slot, so the slots with a <= t < q number
        # #(a <= t) - #(q <= t), two bisections. (A scan of the slots per segment made a 4 MB `full` draft,
        # ~2900 segments over a 1000-packet queue, cost O(segments^2): 250 s of a 300 s GoodSpeed run.)
        self._arrivals: list[float] = []
        self._dequeues: list[float] = []

    def waiting(self, t: float) -> int:
        """Segments in the pfifo at t: arrived, not yet dequeued."""
        return bisect.bisect_right(self._arrivals, t) - bisect.bisect_right(self._dequeues, t)

    def admit(self, a: float, service: float, beta: float, floor: float) -> _Slot:
        # HTB with tokens tau (in seconds, at most beta) sends packet i at d_i = max(a_i, V_{i-1}) and sets
        # V_i = max(V_{i-1}, d_i - beta) + s_i: exactly a FIFO serializer whose arrivals are a_i - beta, with
        # service start u_i = max(V_{i-1}, a_i - beta) and dequeue d_i = max(a_i, u_i). beta = 0 is the wire.
        t = max(a - beta, floor)
        if t >= self.run_start:
            # at or past the calendar's gap-free tail [run_start, run_end): the walk below would end at its
            # end, so skip it (a batch of verdicts sent at once would otherwise walk k slots each: O(k^2))
            t = max(t, self.run_end)
            j = len(self.slots)
        else:
            j = bisect.bisect_right(self.ends, t)
            while j < len(self.slots) and self.slots[j].u < t + service - EPS:
                t = max(t, self.slots[j].e)
                j += 1
        slot = _Slot(t, t + service, a, max(a, t))
        if j == len(self.slots):
            if t > self.run_end:           # a gap before it: the tail run starts afresh
                self.run_start = t
            self.run_end = slot.e
        self.slots.insert(j, slot)
        self.ends.insert(j, slot.e)
        bisect.insort(self._arrivals, slot.a)
        bisect.insort(self._dequeues, slot.q)
        self.lookback = max(self.lookback, beta)
        return slot

    def prune(self, now: float) -> None:
        # Future arrivals are >= now, so they look back at most `lookback`; slots dequeued by now hold no queue.
        k = 0
        while k < len(self.slots) and self.slots[k].e <= now - self.lookback and self.slots[k].q <= now:
            k += 1
        for s in self.slots[:k]:       # any one of equal values will do: only the counts are read
            del self._arrivals[bisect.bisect_left(self._arrivals, s.a)]
            del self._dequeues[bisect.bisect_left(self._dequeues, s.q)]
        del self.slots[:k], self.ends[:k]


class _Floors:
    """(arrival, end) pairs with the running maximum of the ends in arrival order: the latest end among those
    that arrived by a given time, by bisection. A connection's segments at one hop (nothing overtakes its own
    earlier segments) and its delay element's holds (nothing leaves before one ahead of it) each ask that once
    per segment: a plain scan made a 600 KB frame (~400 segments) cost O(segments^2)."""
    __slots__ = ("arrivals", "tops")

    def __init__(self):
        self.arrivals: list[float] = []
        self.tops: list[float] = []          # tops[i] = max end over pairs 0..i: nondecreasing

    def add(self, arrival: float, end: float) -> None:
        arrivals, tops = self.arrivals, self.tops
        if not arrivals or arrival >= arrivals[-1]:          # the usual case: in arrival order
            arrivals.append(arrival)
            tops.append(max(end, tops[-1]) if tops else end)
            return
        j = bisect.bisect_right(arrivals, arrival)        # a retransmission given earlier: re-run the maxima
        arrivals.insert(j, arrival)
        tops.insert(j, max(end, tops[j - 1]) if j else end)
        for k in range(j + 1, len(tops)):
            if tops[k] >= tops[k - 1]:
                break
            tops[k] = tops[k - 1]

    def latest(self, arrival: float) -> float:
        """max end over the pairs that arrived at or before `arrival`; -inf if none."""
        j = bisect.bisect_right(self.arrivals, arrival)
        return self.tops[j - 1] if j else -math.inf

    def forget(self, horizon: float) -> None:
        """Drop the leading pairs whose running maximum ended by `horizon`: no later query above the horizon can
        be raised by them (the callers only ask with arrivals whose own bound is past it)."""
        k = bisect.bisect_right(self.tops, horizon)
        if k:
            del self.arrivals[:k], self.tops[:k]

    def __len__(self) -> int:
        return len(self.arrivals)


@dataclass
class _Hop:
    shaper: _Shaper
    link: str
    direction: str
    bps: int
    beta: float              # HTB burst in seconds at this rate (0 for the wire)
    queue: int
    loss: float              # probability, for transmissions sent until `known_until`
    known_until: float       # when the link's current state is expected to be replaced (next channel tick)
    loss_later: float        # probability after that: the time-average so far


@dataclass
class _Tx:
    seg: int
    order: int               # transmission order on the connection (RACK's "sent after")
    xmit: float              # when the sending host's shaper dequeued it
    delivered: bool
    due: float = math.inf    # released to dst's stack by the delay element
    ack: float = math.inf    # its (S)ACK back at src


@dataclass
class _Conn:
    src: str
    dst: str
    hops: list[tuple[str, str]]
    back: list[tuple[str, str]]
    seed: int                # of its random stream (loss, jitter), made on first use: a Random is 2.5 KB and
                             # 10,000 drafters x 10 verifiers open 200,000 connections, most never lossy
    srtt: float
    rttvar: float
    min_rtt: float
    sent: list[_Floors]                              # per hop: (arrival, end of service) of its segments there
    held: _Floors = field(default_factory=_Floors)   # delay element: (arrival, due) of what it holds
    last_delivery: float = -math.inf
    order: int = 0
    tidied: float = -math.inf                        # the time of its last _tidy
    delays: tuple | None = None                      # (network version, delay, jitter, back delay) of its path
    stats: dict = field(default_factory=lambda: {"messages": 0, "bytes": 0, "segments": 0, "retransmits": 0,
                                                 "fast": 0, "tlp": 0, "rto": 0})

    rng: random.Random | None = None

    def rand(self) -> float:
        if self.rng is None:
            self.rng = random.Random(self.seed)
        return self.rng.random()

    def sample(self, r: float) -> None:
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
        self.srtt = 0.875 * self.srtt + 0.125 * r
        self.min_rtt = min(self.min_rtt, r)

    @property
    def rto(self) -> float:
        return min(RTO_MAX, self.srtt + max(RTO_MIN, 4 * self.rttvar))


LossHook = Callable[[str, str, str, str, int, int], bool]


class SimNetwork:
    def __init__(self, topo: Topology, states: dict[str, LinkState] | None = None, seed: int = 0, *,
                 shaper: str = "htb", loss_hook: LossHook | None = None,
                 outages: dict[str, list[tuple[float, float]]] | None = None):
        """topo: the topology; states: initial LinkState per link name (default: the topology's link specs, as
        the emulator starts them); shaper: "htb" (the emulator's) or "wire" (ideal store-and-forward);
        loss_hook(link, direction, src, dst, segment, attempt) -> bool replaces the Bernoulli draw (tests);
        outages: per link name, [start, end) times (the driver's clock) in which the link drops everything."""
        if shaper not in SHAPERS:
            raise ValueError(f"shaper must be one of {SHAPERS}, got {shaper!r}")
        self.topo, self.seed, self.shaper, self.loss_hook = topo, seed, shaper, loss_hook
        self.plan = NetPlan(topo, "sim")
        self.hosts = frozenset(topo.hosts())
        self.states = {l.name: l.spec.state() for l in self.plan.links}
        for name, state in (states or {}).items():
            self.plan.link(name)            # KeyError naming the links if unknown
            self.states[name] = state
        self.shapers = {(l.name, d): _Shaper() for l in self.plan.links for d in DIRECTIONS}
        self.outages: dict[str, tuple[list[float], list[float]]] = {}    # link -> (starts, ends), merged
        for name, windows in (outages or {}).items():
            self.plan.link(name)
            merged: list[list[float]] = []
            for a, b in sorted(windows):
                if merged and a <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], b)
                elif b > a:
                    merged.append([a, b])
            self.outages[name] = ([a for a, _ in merged], [b for _, b in merged])
        self.conns: dict[tuple[str, str], _Conn] = {}
        self._version = 0                                    # bumped by every set_link
        self._static: dict[tuple[str, str], tuple] = {}       # (link, dir) -> (bps, beta, queue, loss) at its state
        self.now = -math.inf
        self.t0: float | None = None                        # the first time seen
        self.since: dict[str, float] = {}                   # link -> when its current state was set
        self.interval: dict[str, float] = {}                # link -> time between its last two set_links
        self.loss_area = {k: 0.0 for k in self.shapers}     # (link, dir) -> integral of loss probability dt

    # -- the interface the driver uses ------------------------------------------------------------------
    def set_link(self, name: str, state: LinkState, now: float) -> None:
        """A live change (channel tick): applies to segments sent after `now`; HTB keeps its token state."""
        self.plan.link(name)
        self._advance(now)
        since = self.since.get(name, self.t0)
        for d in DIRECTIONS:
            self.loss_area[(name, d)] += self.states[name].loss(d) / 100 * (now - since)
        if name in self.since:
            self.interval[name] = now - since
        self.since[name] = now
        self.states[name] = state
        self._version += 1
        for d in DIRECTIONS:
            self._static.pop((name, d), None)

    def deliver_at(self, src: str, dst: str, nbytes: int, now: float) -> float:
        """When a ZeroMQ frame of `nbytes` (len of the frame: ZMTP framing is added here) sent by host src to
        host dst at `now` reaches dst's application, over the (src, dst) TCP connection: in order, after
        shaping at every hop, the path's delay and jitter, and loss recovery. Always a time: TCP gets through."""
        self._advance(now)
        c = self._conn(src, dst)
        self._tidy(c)
        hops = self._hops(c)
        if c.delays is None or c.delays[0] != self._version:    # the path's delays change only at a set_link
            c.delays = (self._version, *self._path_delay(c.hops), self._path_delay(c.back)[0])
        _, delay, jitter, back = c.delays            # back: ACKs see the reverse path's mean delay
        sizes = segments(zmtp_bytes(nbytes))
        c.stats["messages"] += 1
        c.stats["bytes"] += nbytes
        txs: list[_Tx] = []
        latest: dict[int, _Tx] = {}

        def send(seg: int, t: float, attempt: int) -> None:
            tx = self._transmit(c, hops, seg, sizes[seg], t, attempt, delay, jitter, back)
            txs.append(tx)
            latest[seg] = tx
            c.stats["segments"] += 1
            c.stats["retransmits"] += attempt > 0

        for seg in range(len(sizes)):
            send(seg, now, 0)
        for tx in sorted(txs, key=lambda x: x.ack):  # Karn: RTT samples from first transmissions only
            if tx.delivered:
                c.sample(tx.ack - tx.xmit)
        if not all(tx.delivered for tx in txs):
            self._recover(c, send, txs, latest, now)
        done = max(max(tx.due for tx in latest.values()), c.last_delivery)   # TCP delivers in order
        c.last_delivery = done
        return done

    def stats(self) -> dict:
        """Per link and direction: wire bytes and segments sent, queue drops, path losses, retransmits."""
        return {l.name: {d: dict(self.shapers[(l.name, d)].stats) for d in DIRECTIONS} for l in self.plan.links}

    def is_down(self, link: str, t: float) -> bool:
        """Whether `link` is in an outage at time t."""
        windows = self.outages.get(link)
        if not windows:
            return False
        j = bisect.bisect_right(windows[0], t) - 1
        return j >= 0 and t < windows[1][j]

    # -- extras for tests and reports -----------------------------------------------------------------
    def connection_stats(self) -> dict:
        return {f"{s}->{d}": dict(c.stats, srtt_ms=round(1e3 * c.srtt, 6)) for (s, d), c in self.conns.items()}

    def base_rtt(self, src: str, dst: str) -> float:
        """No-load RTT at the current states: delays both ways plus one lone full frame through the shapers
        (HTB lets a lone frame out at once; the wire serializes it at every hop)."""
        fwd = self.plan.path(src, dst)
        hops = [(l.name, d) for l, d in fwd]
        ser = 0.0 if self.shaper == "htb" else sum(8 * FRAME / htb_bps(self.states[n].rate_mbps(d)) for n, d in hops)
        back = [(l.name, d) for l, d in self.plan.path(dst, src)]
        return self._path_delay(hops)[0] + self._path_delay(back)[0] + ser

    # -- internals ------------------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        if now < self.now - 1e-9:
            raise ValueError(f"simulated time went backwards: {now!r} after {self.now!r}")
        if self.t0 is None:
            self.t0 = now
        if now > self.now:
            self.now = now       # shapers and connections are pruned when next used (_tidy): O(path), not O(net)

    def _tidy(self, c: _Conn) -> None:
        """Forget what can no longer affect a segment sent from now on, on c's path only."""
        now = self.now
        if c.tidied == now:
            return
        c.tidied = now
        c.held.forget(now)            # a segment arriving from now on is due at or after now anyway
        for (name, d), sent in zip(c.hops, c.sent):
            sh = self.shapers[(name, d)]
            sh.prune(now)
            sent.forget(now - sh.lookback)   # service from now on starts at or after now - lookback anyway

    def _conn(self, src: str, dst: str) -> _Conn:
        c = self.conns.get((src, dst))
        if c is None:
            for h in (src, dst):
                if h not in self.hosts:
                    raise KeyError(f"{h!r} is not a host; hosts: {', '.join(self.topo.hosts())}")
            if src == dst:
                raise ValueError(f"a message from {src} to itself never crosses the network")
            hops = [(l.name, d) for l, d in self.plan.path(src, dst)]
            back = [(l.name, d) for l, d in self.plan.path(dst, src)]
            base = self.base_rtt(src, dst)
            # RFC 6298 after its first sample (the connection's handshake): RTTVAR = SRTT / 2.
            c = _Conn(src, dst, hops, back, zlib.crc32(f"{self.seed}/{src}/{dst}".encode()),
                      base, base / 2, base, [_Floors() for _ in hops])
            self.conns[(src, dst)] = c
        return c

    def _hops(self, c: _Conn) -> list[_Hop]:
        out = []
        for name, d in c.hops:
            static = self._static.get((name, d))
            if static is None:     # what depends only on the link's state: rebuilt after its set_link
                st = self.states[name]
                bps = htb_bps(st.rate_mbps(d))
                beta = 8 * burst_bytes(st.rate_mbps(d)) / bps if self.shaper == "htb" else 0.0
                static = self._static[(name, d)] = (bps, beta, st.queue_pkts, st.loss(d) / 100)
            bps, beta, queue, loss = static
            since = self.since.get(name, self.t0)
            until = since + self.interval.get(name, math.inf)
            later = loss
            if until < math.inf:   # a channel drives this link: the time-averaged loss for what outlives the tick
                span = self.now - self.t0
                later = (self.loss_area[(name, d)] + loss * (self.now - since)) / span if span > 0 else loss
            out.append(_Hop(self.shapers[(name, d)], name, d, bps, beta, queue, loss, until, later))
        return out

    def _path_delay(self, hops: list[tuple[str, str]]) -> tuple[float, float]:
        """(delay, jitter) in seconds of a path's delay element, as shaping.PathDelay.params combines them."""
        delay = sum(self.states[n].delay_ms for n, _ in hops)
        jitter = math.sqrt(sum(self.states[n].jitter_ms ** 2 for n, _ in hops))
        return delay / 1e3, jitter / 1e3

    def _transmit(self, c: _Conn, hops: list[_Hop], seg: int, payload: int, t: float, attempt: int,
                  delay: float, jitter: float, back: float) -> _Tx:
        wire = payload + HEADER
        c.order += 1
        a, xmit = t, t
        for h, hop in enumerate(hops):
            sh = hop.shaper
            # The sender's own qdisc never drops (TCP small queues hold the rest in the socket).
            if h > 0 and len(sh.slots) >= hop.queue and sh.waiting(a) >= hop.queue:
                sh.stats["drops"] += 1
                return _Tx(seg, c.order, xmit, False)
            # FIFO within the connection: never served ahead of its own segments that arrived before it
            # (a retransmission given to the shaper later does not hold back new data that arrives earlier).
            floor = c.sent[h].latest(a)
            slot = sh.admit(a, 8 * wire / hop.bps, hop.beta, floor)
            c.sent[h].add(a, slot.e)
            sh.stats["bytes"] += wire
            sh.stats["segments"] += 1
            sh.stats["retransmits"] += attempt > 0
            if h == 0:
                xmit = slot.q
            a = slot.q if self.shaper == "htb" else slot.e
        for hop in hops:   # the delay element's drop, drawn per link direction so it is counted per link
            if self.outages and self.is_down(hop.link, a):
                lost = True
            elif self.loss_hook is not None:
                lost = self.loss_hook(hop.link, hop.direction, c.src, c.dst, seg, attempt)
            else:
                p = hop.loss if t <= hop.known_until else hop.loss_later
                lost = p > 0 and c.rand() < p
            if lost:
                hop.shaper.stats["losses"] += 1
                return _Tx(seg, c.order, xmit, False)
        hold = delay + ((2.0 * c.rand() - 1.0) * jitter if jitter else 0.0)
        due = a + max(0.0, hold)
        due = max(due, c.held.latest(a))           # the element's FIFO: never before one ahead
        c.held.add(a, due)
        return _Tx(seg, c.order, xmit, True, due, due + back)

    def _recover(self, c: _Conn, send, txs: list[_Tx], latest: dict[int, _Tx], now: float) -> None:
        """Retransmit lost segments as Linux would (RACK, TLP, RTO) until every segment is delivered."""
        state, tlp_used, rto, t_cur = "open", False, c.rto, now
        attempts = {seg: 0 for seg in latest}
        for _ in range(MAX_ROUNDS):
            lost = sorted(seg for seg, tx in latest.items() if not tx.delivered)
            if not lost:
                return
            delivered = sorted((tx for tx in txs if tx.delivered), key=lambda x: x.ack)
            reo = min(c.min_rtt / 4, c.srtt) if state == "open" else 0.0
            det = {}
            for seg in lost:
                x = latest[seg]
                later = [y for y in delivered if y.order > x.order]
                if not later:
                    continue
                d = later[DUPTHRESH - 1].ack if len(later) >= DUPTHRESH else math.inf
                d = min([d] + [max(y.ack, x.xmit + (y.ack - y.xmit) + reo) for y in later])
                det[seg] = max(d, t_cur)
            probe = state == "open" and not tlp_used
            timeout = min(2 * c.srtt + (TLP_ONE_OUT if len(lost) == 1 else TLP_MANY_OUT), rto) if probe else rto
            fire = max(tx.xmit for tx in txs) + timeout     # armed at the last transmission ...
            for y in delivered:                             # ... and re-armed by every ACK before it fires
                if fire > y.ack >= fire - timeout:
                    fire = y.ack + timeout
            fire = max(fire, t_cur)
            first = min(det.values(), default=math.inf)
            if first <= fire:
                t_cur, state = first, ("recovery" if state == "open" else state)
                c.stats["fast"] += 1
                resend = [seg for seg in lost if det.get(seg, math.inf) <= first]
            elif probe:
                t_cur, tlp_used = fire, True
                c.stats["tlp"] += 1
                resend = [lost[-1]]                          # the probe resends the highest outstanding segment
            else:
                t_cur, state = fire, "loss"
                c.stats["rto"] += 1
                resend = [lost[0]]
                rto = min(RTO_MAX, 2 * rto)                  # backoff until new data is acknowledged
            for seg in resend:
                attempts[seg] += 1
                send(seg, t_cur, attempts[seg])
                if latest[seg].delivered:
                    rto = c.rto
        raise RuntimeError(f"{c.src}->{c.dst}: a message was still not delivered after {MAX_ROUNDS} recovery "
                           "rounds (does a loss hook lose every transmission?)")
