"""What a frame costs beyond the network model: the emulator host's frame handling, as the simulator charges it.

    costs = FrameCosts("emulator")     # or "none": the network model alone (experiment field sim.frame_costs)
    stage = ReceiveStage()             # the receiving hosts' per-byte work, one frame at a time per host

testbed/run/simrun.py asks the network model (testbed/sim/network.py) when a frame's last byte reaches the other
host, then adds what is below. The constants were read from the emulator's event logs on this 2-core host; a
paper-scale run whose hosts would not pay them sets `sim: {frame_costs: none}` (schema.py SimOptions).
"""
from __future__ import annotations

import bisect
import math

# What a frame costs beyond the network model on the emulator this simulator is checked against, one way: ZeroMQ's
# I/O threads and the veth/namespace stack (a bare pyzmq 100 B echo across two Mininet hosts: 0.56 ms at zero
# delay, ../shared/research/netemu.md section 5), the NFQUEUE delay element's netlink round and wake-up (~0.2 ms
# per element, ibid. section 4) and the nodes' own receive, decode, validation and logging. Measured end to end
# by `testbed validate` (scenario rtt5-1: a drafter's round trip minus queueing and verification, p50, emulator
# 6.42 ms, network model alone 5.00 ms, on 2026-12-02 here): 1.42 ms per round trip, 0.71 ms per frame. Of that,
# the sender's own work (encode, log, hand to ZeroMQ) is serialized on its CPU: the emulator's verifier sends a
# batch's verdicts 0.244-0.260 ms apart (p50, validate goodspeed-8 and rtt20-8, read from the drafters' one-way
# times); so is a verifier's handling of what it receives: it takes a queued DRAFT 0.032-0.054 ms after the
# previous one (goodspeed-8's second sync batch), and decides on a batch only once none is waiting, so frames that
# arrive while it handles one join the same batch. The rest is a latency that overlaps with other frames.
FRAME_SEND_S = 0.00025
FRAME_RECV_S = 0.00005
FRAME_OVERHEAD_S = 0.00071 - FRAME_SEND_S - FRAME_RECV_S
# ... and per byte of the frame: the sender's and receiver's copies, packing and array checks, and the delay
# element's per-packet netlink round in a Python daemon (a 64 KB frame is 45 packets). Measured the same way on
# scenario full-q-1 (64,136 B drafts, 139 B verdicts): round trip 28.60 ms on the emulator, 25.75 ms modelled
# with the constants above: 2.85 ms for 64 KB, 44 ns per byte. These constants come from three scenarios of
# `testbed validate` (rtt5-1, full-q-1, goodspeed-8); the others test them out of sample.
FRAME_KNEE_BYTES = 64_136
FRAME_PER_BYTE_S = 44e-9
# Beyond 64 KB a byte costs far less: 7.6 ns. Measured on 2026-12-03 (12:29-13:04) here with
# `python -m testbed.bench.framecost` (one drafter, the `full` q payload, vocabularies 4,000 / 32,000 / 151,936 and
# windows 2-6: DRAFTs of 64 KB, 512 KB, 1.2 MB, 2.4 MB and 3.6 MB; synchronous rounds): a DRAFT's one-way time plus
# the verifier's handling before its verify, minus the network model's time; p50 over a run's rounds (32-189),
# then the median of the runs. On a 1 Gbit/s 0.5 ms link (5 runs): 2.6, 9.2, 15.1, 23.0 and 34.5 ms; on 100 Mbit/s
# 10 ms (2 runs, 1 at 2.4 MB): 4.7, 5.6, 9.9, 18.4 and 28.4 ms. Least squares through the 64 KB value above over
# the eight points from 512 KB: 7.65 ns per byte. This charges 6.9, 12.3, 21.5 and 30.8 ms at 512 KB ... 3.6 MB:
# -25, -19, -6, -11 % against 1 Gbit/s, +23, +24, +17, +8 % against 100 Mbit/s (at most 3.8 ms; a faster link
# costs more, which a function of size alone cannot say; the runs themselves spread by 2-8 ms at one size on this
# shared host). 44 ns per byte throughout charged 160 ms at 3.6 MB.
FRAME_PER_BYTE_LARGE_S = 7.6e-9
# The per-byte work is the receiving host's, one frame at a time (the delay element is one Python daemon per
# host; the verifier decodes and checks one frame after another): four 3.6 MB DRAFTs sent together to one verifier
# (GoodSpeed cross-check, Fixed-S at C = 24, 60 s, 2026-12-03 08:30) reached it 96, 124, 133 and 142 ms after the
# first left (p50 over 250 sync rounds) where one alone takes ~60 ms; four frames' work in a row after the
# network's 30 ms gives 61, 92, 122 and 153 ms. Charged as latency instead, all four arrive at ~61 ms and that
# cross-check's simulated goodput read +70 % (Fixed-S) against the emulator's; in a row, -2 %.

MODES = ("emulator", "none")


def frame_work_s(nbytes: int) -> float:
    """The per-byte part of a frame's cost on the emulator host (piecewise linear, nondecreasing in size)."""
    small = min(nbytes, FRAME_KNEE_BYTES)
    return FRAME_PER_BYTE_S * small + FRAME_PER_BYTE_LARGE_S * max(0, nbytes - FRAME_KNEE_BYTES)


def frame_cost_s(nbytes: int) -> float:
    """A lone frame's whole cost beyond the network model, one way (nothing else in flight): what the fit is of."""
    return FRAME_SEND_S + FRAME_RECV_S + FRAME_OVERHEAD_S + frame_work_s(nbytes)


class FrameCosts:
    """The costs a run charges: the emulator host's (above) or none (the network model alone)."""

    def __init__(self, mode: str = "emulator"):
        if mode not in MODES:
            raise ValueError(f"sim.frame_costs: expected one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        on = mode == "emulator"
        self.send_s = FRAME_SEND_S if on else 0.0          # the sender's CPU, one frame at a time
        self.recv_s = FRAME_RECV_S if on else 0.0          # a verifier's CPU per frame it takes
        self.latency_s = FRAME_OVERHEAD_S if on else 0.0   # overlaps with other frames

    def work_s(self, nbytes: int) -> float:
        """The receiving host's per-byte work for one frame."""
        return frame_work_s(nbytes) if self.mode == "emulator" else 0.0

    def manifest(self) -> dict:
        """What was modelled, for the run's manifest (sim.frame_costs)."""
        if self.mode == "none":
            return {"modelled": "none", "why": "sim.frame_costs none: the network model alone"}
        return {"modelled": "emulator", "source": "testbed/sim/frames.py", "send_s": self.send_s,
                "verifier_receive_s": self.recv_s, "latency_s": self.latency_s,
                "per_byte_s": {f"up to {FRAME_KNEE_BYTES} B": FRAME_PER_BYTE_S, "beyond": FRAME_PER_BYTE_LARGE_S},
                "per_byte_work": "serialized per receiving host, after the frame's last byte arrives"}


class _Calendar:
    __slots__ = ("starts", "ends", "run_start", "run_end")

    def __init__(self):
        self.starts: list[float] = []      # busy intervals, sorted, never overlapping (so ends are sorted too)
        self.ends: list[float] = []
        self.run_start = self.run_end = -math.inf   # the calendar's gap-free tail


class ReceiveStage:
    """Each receiving host's per-byte frame work as a calendar of busy intervals: a frame's work starts once its
    last byte is there and the host is free, and fills an idle gap between frames that arrive later (a frame sent
    after another may arrive first). Intervals over by `now` are dropped: no frame can be ready before now."""

    def __init__(self):
        self._hosts: dict[str, _Calendar] = {}

    def admit(self, host: str, ready: float, work: float, now: float) -> float:
        """When `host` finishes the work of a frame ready at `ready` (`ready` itself when there is no work)."""
        if work <= 0.0:
            return ready
        c = self._hosts.get(host)
        if c is None:
            c = self._hosts[host] = _Calendar()
        k = bisect.bisect_right(c.ends, now)
        if k:
            del c.starts[:k], c.ends[:k]
        t = ready
        if t >= c.run_start:
            # at or past the gap-free tail: the walk would end at its end (a batch of frames arriving together
            # would otherwise walk k intervals each: O(k^2))
            t = max(t, c.run_end)
            j = len(c.starts)
        else:
            j = bisect.bisect_right(c.ends, t)
            while j < len(c.starts) and c.starts[j] < t + work:   # no room before interval j: go after it
                t = max(t, c.ends[j])
                j += 1
        if j == len(c.starts):
            if t > c.run_end:
                c.run_start = t
            c.run_end = t + work
        c.starts.insert(j, t)
        c.ends.insert(j, t + work)
        return t + work
