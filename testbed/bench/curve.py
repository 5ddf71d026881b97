"""`make bench` (security): what ZeroMQ CURVE costs per round and per connection.

A DEALER (the drafter) and a ROUTER (the verifier) on TCP loopback exchange frames of the real sizes, as
nodes/protocol.py encodes them: a DRAFT of gamma 4 and 8 tokens (ids only; with top-8 probabilities; with the full
distribution over a 49152-token vocabulary) answered by a VERDICT. Median and p95 microseconds per round trip with
plain TCP and with CURVE (nodes/security.py's own setup: the verifier's ZAP handler checks the key), rounds
interleaved, and the difference; then the time from connect() to a completed handshake. Not a test: a shared 2-core CPU is noisy, so
compare the two columns of one run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import numpy as np
import zmq

from nodes import protocol as P
from nodes.security import DrafterCurve, VerifierCurve, ZapGuard, secure_client
from testbed.bench.nodes import random_draft

VOCAB = 49152


class _Log:                        # the ZAP handler's event log: nothing is refused here
    node = "bench"

    def write(self, event) -> None:
        pass


def draft_frame(gamma: int, payload: str, rng) -> bytes:
    toks = random_draft(payload, gamma, VOCAB, rng)
    return P.encode(P.Draft.from_tokens("d1-s1", 7, 120, toks, payload, VOCAB, time.time(), 0.004, 0.02))


def verdict_frame(gamma: int) -> bytes:
    return P.encode(P.Verdict("d1-s1", 7, gamma - 1, 1234, gamma, False, time.time(), 0.001, 0.02, 4, load=4))


class Pair:
    """A ROUTER echoing a fixed VERDICT to every frame (a thread), and a DEALER; CURVE on both or neither."""

    def __init__(self, curve: bool, verdict: bytes):
        self.ctx = zmq.Context()
        self.server = self.ctx.socket(zmq.ROUTER)
        self.server.linger = 0
        self.guard = None
        self.client_curve = None
        if curve:
            (vp, vs), (dp, ds) = ([k.decode() for k in zmq.curve_keypair()] for _ in range(2))
            self.guard = ZapGuard(VerifierCurve(public_key=vp, secret_key=vs, clients=[dp]), _Log(), "bench", self.ctx)
            self.guard.secure(self.server)
            self.client_curve = DrafterCurve(public_key=dp, secret_key=ds, server_keys=[vp])
        self.endpoint = f"tcp://127.0.0.1:{self.server.bind_to_random_port('tcp://127.0.0.1')}"
        self.verdict = verdict
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._echo, daemon=True)
        self.thread.start()

    def _echo(self) -> None:
        while not self.stop.is_set():
            if self.server.poll(100):
                ident, _ = self.server.recv_multipart()
                self.server.send_multipart([ident, self.verdict])

    def client(self) -> zmq.Socket:
        c = self.ctx.socket(zmq.DEALER)
        c.linger = 0
        secure_client(c, self.client_curve, 0)
        return c

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.server.close(0)
        if self.guard:
            self.guard.close()
        self.ctx.term()


def round_trips(draft: bytes, verdict: bytes, rounds: int) -> tuple[list[float], list[float]]:
    """Microseconds per round trip, plain and CURVE, rounds interleaved (the host's load drifts alike for both)."""
    pairs = [Pair(False, verdict), Pair(True, verdict)]
    clients = [p.client() for p in pairs]
    for c, p in zip(clients, pairs):
        c.connect(p.endpoint)
    out: tuple[list[float], list[float]] = ([], [])
    try:
        for i in range(rounds + 20):                 # the first 20: handshake and warm-up, not counted
            for c, times in zip(clients, out):
                t0 = time.perf_counter()
                c.send(draft)
                c.recv()
                if i >= 20:
                    times.append((time.perf_counter() - t0) * 1e6)
        return out
    finally:
        for c, p in zip(clients, pairs):
            c.close(0)
            p.close()


def handshakes(curve: bool, n: int) -> list[float]:
    """Microseconds from connect() to HANDSHAKE_SUCCEEDED, n fresh connections."""
    from zmq.utils.monitor import recv_monitor_message
    pair = Pair(curve, b"")
    out = []
    try:
        for i in range(n):
            c = pair.client()
            mon = c.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED, addr=f"inproc://bench-hs-{i}")
            t0 = time.perf_counter()
            c.connect(pair.endpoint)
            if mon.poll(5000):
                recv_monitor_message(mon)
                out.append((time.perf_counter() - t0) * 1e6)
            c.disable_monitor()
            mon.close(0)
            c.close(0)
    finally:
        pair.close()
    return out


def _p95(xs: list[float]) -> float:
    return sorted(xs)[int(0.95 * (len(xs) - 1))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.curve", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2000, help="round trips per case (full payload: a tenth)")
    args = ap.parse_args(argv)
    print(f"CURVE overhead per round (DEALER<->ROUTER, TCP loopback, DRAFT then VERDICT; median [p95] us; "
          f"zmq {zmq.zmq_version()})")
    print(f"{'DRAFT':>14} {'bytes':>8} {'plain us':>16} {'CURVE us':>16} {'CURVE - plain':>14}")
    rng = np.random.default_rng(0)
    for gamma in (4, 8):
        verdict = verdict_frame(gamma)
        for payload in ("ids", "topk:8", "full"):
            draft = draft_frame(gamma, payload, rng)
            n = max(50, args.rounds // 10) if payload == "full" else args.rounds
            plain, curve = round_trips(draft, verdict, n)
            mp, mc = statistics.median(plain), statistics.median(curve)
            print(f"{f'g{gamma} {payload}':>14} {len(draft):>8} {mp:>8.1f} [{_p95(plain):>5.0f}] "
                  f"{mc:>8.1f} [{_p95(curve):>5.0f}] {mc - mp:>+13.1f}")
    hp, hc = handshakes(False, 30), handshakes(True, 30)
    print(f"handshake (connect to HANDSHAKE_SUCCEEDED, median of {len(hp)}): plain {statistics.median(hp):.0f} us, "
          f"CURVE {statistics.median(hc):.0f} us (+{statistics.median(hc) - statistics.median(hp):.0f} us, once per "
          f"connection)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
