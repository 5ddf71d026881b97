#!/usr/bin/env python3
# Over 400 lines on purpose: self-contained (stdlib only) so any host's python3 can run it by path.
"""Measurement endpoints that run inside emulated hosts (stdlib only).

  echo  UDP echo server for RTT / directional-loss probes
  rtt   UDP probe client: paced probes, application-level RTTs, loss split
  sink  TCP bulk sink: counts bytes in time bins, answers with one JSON line
  bulk  TCP bulk sender: saturates the path for a duration, prints sink's JSON

Servers print "ready" once listening and exit 0 on SIGTERM/SIGINT (or stdin
EOF with --exit-on-stdin-eof). Clients print exactly one JSON object; fatal
errors are one line on stderr with exit status 1 (argparse errors: 2).
Usable as `python -m testbed.net.netprobe` or by path, since Mininet hosts run
whatever python3 they have: no third-party imports, no package-relative ones.
"""
import argparse
import collections
import json
import math
import os
import select
import signal
import socket
import struct
import sys
import time

MAGIC = b"SNP1"
# magic, kind, session, seq, client send time (perf_counter s), server count.
# The random session id keys the server's per-client counter, so a new rtt run
# that happens to reuse an ephemeral port never inherits an old count.
HEADER = struct.Struct("!4sBIIdI")
Header = collections.namedtuple("Header", "kind session seq t_send count")
PROBE, REPLY, REPORT_REQ, REPORT = 1, 2, 3, 4

MAX_DGRAM = 65507
MAX_SAMPLES = 5000            # samples_ms cap; rtt_ms still uses every sample
MAX_SESSIONS = 256            # echo server forgets the least recent beyond this
REPORT_TRIES, REPORT_WAIT_S = 20, 0.2    # 20: a 50 %-loss link still answers (0.5^20), 4 s at worst
RECV_BUF = 256 * 1024
CONNECT_TIMEOUT_S = 10.0
MAX_REPLY_BYTES = 16 * 1024 * 1024
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)   # 13 on Linux


class _Stop(Exception):
    """Ends a server cleanly (signal or stdin EOF)."""


class _Fail(Exception):
    """A runtime error worth one line on stderr, not a traceback."""


# ---------------------------------------------------------------- helpers

def summarize_rtts(samples_ms):
    """min/p50/mean/p95/p99/max (nearest-rank percentiles); None if empty."""
    s = sorted(samples_ms)
    if not s:
        return dict.fromkeys(("min", "p50", "mean", "p95", "p99", "max"))

    def rank(p):  # integer ceil(p*n/100): float ceil misrounds e.g. 0.95*20
        return s[max(1, (p * len(s) + 99) // 100) - 1]

    return {"min": s[0], "p50": rank(50), "mean": sum(s) / len(s),
            "p95": rank(95), "p99": rank(99), "max": s[-1]}


def goodput_series(bins, bin_s):
    """[(t_start_s, mbps)] from sink bins [[t_start_s, bytes]]; the last bin
    is usually partial (reads low), so drop it for steady-state figures."""
    if bin_s <= 0:
        raise ValueError("bin_s must be > 0")
    return [(float(t), b * 8 / bin_s / 1e6) for t, b in bins]


def parse_header(data):
    """Header of a netprobe datagram, or None for anything else."""
    if len(data) < HEADER.size:
        return None
    magic, *fields = HEADER.unpack_from(data)
    return Header(*fields) if magic == MAGIC else None


def _socket(host, port, socktype, server=False):
    """Resolved socket (IPv4 or IPv6 per the address); servers are bound."""
    try:
        family, _, _, _, addr = socket.getaddrinfo(
            host, port, 0, socktype, 0, socket.AI_PASSIVE if server else 0)[0]
    except socket.gaierror as e:
        raise _Fail(f"cannot resolve {host!r}: {e.strerror}") from None
    sock = socket.socket(family, socktype)
    if socktype == socket.SOCK_DGRAM:
        # Probe bursts must not be dropped by our own socket: that would be
        # misread as network loss. Best effort; the kernel caps at rmem_max.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    if server:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as e:
            raise _Fail(f"cannot bind {host}:{port}: {e.strerror}") from None
    return sock, addr


def _wait(sock, watch_stdin):
    """True once sock is readable; with watch_stdin, stdin EOF (our parent
    went away) stops the server."""
    fds = [sys.stdin.fileno()] if watch_stdin and sys.stdin else []
    readable, _, _ = select.select([sock] + fds, [], [])
    if fds and fds[0] in readable and not os.read(fds[0], 65536):
        raise _Stop()
    return sock in readable


# ---------------------------------------------------------------- echo

def serve_echo(args):
    sock, _ = _socket(args.bind, args.port, socket.SOCK_DGRAM, server=True)
    sessions = collections.OrderedDict()   # (peer, session) -> set of seqs
    print("ready", flush=True)
    while True:
        if _wait(sock, args.exit_on_stdin_eof):
            _echo_one(sock, sessions)


def _echo_one(sock, sessions):
    try:
        data, peer = sock.recvfrom(65535)
    except OSError:
        return
    hdr = parse_header(data)
    if hdr is None:
        return
    key = (peer, hdr.session)
    if hdr.kind == PROBE:
        seen = sessions.setdefault(key, set())
        sessions.move_to_end(key)
        seen.add(hdr.seq)            # a set: duplicated probes count once
        while len(sessions) > MAX_SESSIONS:
            sessions.popitem(last=False)
        # Same length as the probe so the reverse path carries equal load.
        reply = HEADER.pack(MAGIC, REPLY, hdr.session, hdr.seq, hdr.t_send,
                            len(seen)) + data[HEADER.size:]
    elif hdr.kind == REPORT_REQ:
        count = len(sessions.get(key, ()))
        reply = HEADER.pack(MAGIC, REPORT, hdr.session, 0, hdr.t_send, count)
    else:
        return
    try:
        sock.sendto(reply, peer)
    except OSError:
        pass


# ---------------------------------------------------------------- rtt

def _recv_ready(sock, limit=10000):
    """Yield (datagram, perf_counter at receipt) for what is queued now."""
    for _ in range(limit):
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            return
        except ConnectionRefusedError:
            continue     # ICMP unreachable for an earlier probe: just loss
        except OSError:
            return
        yield data, time.perf_counter()


def _send_dgram(sock, data):
    # A connected UDP socket reports an earlier ICMP unreachable on the next
    # send and drops that datagram; the error is then cleared, so retry once.
    # Any other failure just counts as loss (like a drop at the NIC).
    for _ in range(2):
        try:
            sock.send(data)
            return
        except ConnectionRefusedError:
            continue
        except OSError:
            return


def _take_replies(sock, session, send_t, rtts):
    for data, now in _recv_ready(sock):
        h = parse_header(data)
        if (h and h.kind == REPLY and h.session == session
                and 0 <= h.seq < len(rtts) and send_t[h.seq] is not None
                and rtts[h.seq] is None):     # duplicates count once
            rtts[h.seq] = (now - send_t[h.seq]) * 1000.0


def _send_probes(sock, session, args):
    """Paced send + concurrent receive; returns per-seq rtts (None = lost)."""
    n, pad = args.count, bytes(args.size - HEADER.size)
    send_t, rtts = [None] * n, [None] * n
    t0 = time.perf_counter()
    sent, deadline = 0, None
    while True:
        _take_replies(sock, session, send_t, rtts)
        now = time.perf_counter()
        if sent < n and now >= t0 + sent * args.interval:
            send_t[sent] = now
            _send_dgram(sock, HEADER.pack(MAGIC, PROBE, session, sent, now, 0) + pad)
            sent += 1
            if sent == n:
                deadline = time.perf_counter() + args.timeout
            continue
        # Absolute schedule: the next due time never slips with loop jitter.
        wait = (t0 + sent * args.interval if sent < n else deadline) - now
        if sent == n and wait <= 0:
            return rtts
        select.select([sock], [], [], max(0.0, wait))


def _ask_report(sock, session):
    """Server's distinct-probe count, or None if no report ever arrives."""
    for _ in range(REPORT_TRIES):
        _send_dgram(sock, HEADER.pack(MAGIC, REPORT_REQ, session, 0,
                                      time.perf_counter(), 0))
        end = time.perf_counter() + REPORT_WAIT_S
        while (left := end - time.perf_counter()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            for data, _ in _recv_ready(sock):   # late probe replies ignored
                h = parse_header(data)
                if h and h.kind == REPORT and h.session == session:
                    return h.count
    return None


def run_rtt(args):
    sock, addr = _socket(args.to, args.port, socket.SOCK_DGRAM)
    sock.connect(addr)          # kernel then drops datagrams from other peers
    sock.setblocking(False)
    session = int.from_bytes(os.urandom(4), "big")
    rtts = _send_probes(sock, session, args)
    server = _ask_report(sock, session)
    sock.close()
    got = [round(r, 4) for r in rtts if r is not None]
    n, r = args.count, len(got)
    summary = {k: v if v is None else round(v, 4)
               for k, v in summarize_rtts(got).items()}
    print(json.dumps({
        "sent": n, "server_received": server, "received": r,
        "loss_up": None if server is None else 1 - server / n,
        "loss_down": None if not server else 1 - r / server,
        "loss_rtt": 1 - r / n,
        "rtt_ms": summary, "samples_ms": got[:MAX_SAMPLES],
    }), flush=True)


# ---------------------------------------------------------------- sink

def serve_sink(args):
    lsock, _ = _socket(args.bind, args.port, socket.SOCK_STREAM, server=True)
    lsock.listen(8)
    print("ready", flush=True)
    while True:
        if not _wait(lsock, args.exit_on_stdin_eof):
            continue
        try:
            conn, _ = lsock.accept()
        except OSError:
            continue
        with conn:              # serially: later senders wait in the backlog
            _sink_one(conn, args.bin, args.exit_on_stdin_eof)


def _sink_one(conn, bin_s, watch_stdin):
    buf = bytearray(RECV_BUF)
    bins, total, t_first, t_last = [], 0, None, None
    while True:
        if not _wait(conn, watch_stdin):
            continue
        try:
            n = conn.recv_into(buf)
        except OSError:
            return              # reset: nobody left to report to
        now = time.monotonic()
        if n == 0:
            break
        if t_first is None:
            t_first = now
        t_last = now
        i = int((now - t_first) / bin_s)
        if i >= len(bins):
            bins.extend([0] * (i + 1 - len(bins)))
        bins[i] += n
        total += n
    duration = (t_last - t_first) if t_first is not None else 0.0
    report = {
        "bytes": total, "duration_s": round(duration, 6),
        "goodput_mbps": total * 8 / duration / 1e6 if duration > 0 else None,
        "bins": [[round(i * bin_s, 6), b] for i, b in enumerate(bins)],
    }
    try:
        conn.sendall((json.dumps(report) + "\n").encode())
    except OSError:
        pass                    # sender closed fully without reading


# ---------------------------------------------------------------- bulk

def _read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def _set_cc(sock, name):
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, name.encode())
    except OSError as e:
        avail = _read_text("/proc/sys/net/ipv4/tcp_available_congestion_control")
        raise _Fail(f"kernel refused congestion control {name!r} "
                    f"({e.strerror}); available: {avail}") from None


def _send_for(sock, chunk, duration):
    """Send as fast as possible until the deadline; returns (bytes, secs)."""
    payload = memoryview(bytes(chunk))
    sock.setblocking(False)     # a stalled path must not overrun duration
    sent, t0 = 0, time.monotonic()
    end = t0 + duration
    while (left := end - time.monotonic()) > 0:
        try:
            sent += sock.send(payload)
        except BlockingIOError:
            select.select([], [sock], [], left)
        except OSError as e:
            raise _Fail(f"connection lost after {sent} bytes: "
                        f"{e.strerror or e}") from None
    return sent, time.monotonic() - t0


def _read_reply(sock, timeout):
    """Half-close (the sink reports on our FIN) and read its JSON line."""
    sock.settimeout(timeout)
    data = b""
    try:
        sock.shutdown(socket.SHUT_WR)
        while b"\n" not in data and len(data) < MAX_REPLY_BYTES:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    except OSError as e:        # includes socket.timeout
        raise _Fail(f"no report from sink: {e.strerror or e}") from None
    try:
        return json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        raise _Fail("no valid JSON report from sink") from None


def run_bulk(args):
    sock, addr = _socket(args.to, args.port, socket.SOCK_STREAM)
    with sock:
        if args.cc:
            _set_cc(sock, args.cc)   # before connect: the SYN already uses it
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(addr)
        except OSError as e:
            raise _Fail(f"cannot connect to {args.to}:{args.port}: "
                        f"{e.strerror or e}") from None
        sent, duration = _send_for(sock, args.chunk, args.duration)
        sink = _read_reply(sock, args.reply_timeout)
    print(json.dumps({"sent_bytes": sent, "duration_s": round(duration, 6),
                      "sink": sink}), flush=True)


# ---------------------------------------------------------------- CLI

def _num(conv, lo, hi=math.inf, lo_open=False):
    """argparse type: a finite number in [lo, hi], or (lo, hi] if lo_open."""
    def parse(text):
        try:
            v = conv(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (lo < v <= hi if lo_open else lo <= v <= hi) or v == math.inf:
            raise argparse.ArgumentTypeError(
                f"{text} outside {'(' if lo_open else '['}{lo}, {hi}]")
        return v
    return parse


def build_parser():
    p = argparse.ArgumentParser(prog="netprobe", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    port = _num(int, 1, 65535)

    def server(name, help_):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--port", type=port, required=True)
        s.add_argument("--bind", default="0.0.0.0")
        s.add_argument("--exit-on-stdin-eof", action="store_true",
                       help="also exit when stdin reaches EOF")
        return s

    server("echo", "UDP echo server").set_defaults(func=serve_echo)
    s = server("sink", "TCP bulk sink")
    s.add_argument("--bin", type=_num(float, 0.0, lo_open=True), default=0.1,
                   help="bin width in seconds (default 0.1)")
    s.set_defaults(func=serve_sink)

    def client(name, help_):
        c = sub.add_parser(name, help=help_)
        c.add_argument("--to", required=True, help="server address")
        c.add_argument("--port", type=port, required=True)
        return c

    c = client("rtt", "UDP RTT/loss probe client")
    c.add_argument("--count", type=_num(int, 1, 10_000_000), required=True)
    c.add_argument("--interval", type=_num(float, 0.0), required=True)
    c.add_argument("--size", type=_num(int, HEADER.size, MAX_DGRAM), default=64,
                   help=f"datagram payload bytes (>= {HEADER.size}, default 64)")
    c.add_argument("--timeout", type=_num(float, 0.0), default=1.0,
                   help="wait for stragglers after the last probe (default 1)")
    c.set_defaults(func=run_rtt)

    b = client("bulk", "TCP bulk sender")
    b.add_argument("--duration", type=_num(float, 0.0, lo_open=True), required=True)
    b.add_argument("--chunk", type=_num(int, 1, 64 << 20), default=128 * 1024)
    b.add_argument("--cc", help="TCP congestion control, e.g. cubic or bbr")
    b.add_argument("--reply-timeout", type=_num(float, 0.0, lo_open=True),
                   default=30.0, help="wait for the sink's report (default 30)")
    b.set_defaults(func=run_bulk)
    return p


def _on_signal(signum, frame):
    # Raising here unwinds out of select() so servers exit 0 via main().
    raise _Stop()


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.func in (serve_echo, serve_sink):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _on_signal)
    try:
        args.func(args)
    except _Stop:
        pass
    except _Fail as e:
        print(f"netprobe {args.cmd}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
