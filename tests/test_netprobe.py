"""netprobe endpoints over loopback: no root, 127.0.0.1 only, a few seconds."""
import json
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testbed.net import netprobe

REPO = Path(__file__).resolve().parents[1]
LOOP = "127.0.0.1"


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOP, 0))
        return s.getsockname()[1]


def netprobe_cmd(*args):
    return [sys.executable, "-m", "testbed.net.netprobe", *map(str, args)]


def run_client(*args, timeout=20):
    return subprocess.run(netprobe_cmd(*args), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


class Server:
    """A netprobe server subprocess, started and waited on until 'ready'."""

    def __init__(self, *args, ready_timeout=5.0):
        self.proc = subprocess.Popen(
            netprobe_cmd(*args, "--bind", LOOP, "--exit-on-stdin-eof"),
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        if not select.select([self.proc.stdout], [], [], ready_timeout)[0]:
            self.stop()
            pytest.fail("server did not print ready in time")
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.stop()
            pytest.fail(f"expected 'ready', got {line!r}: {self.proc.stderr.read()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)


@pytest.fixture
def echo():
    port = free_port()
    srv = Server("echo", "--port", port)
    yield port, srv
    srv.stop()


class LossyRelay(threading.Thread):
    """Deterministic lossy UDP relay between one rtt client and the echo server.

    Drops every 4th client->server *probe* and every 5th server->client
    *probe reply* (per-direction counters over probe traffic only). Report
    requests/answers are recognised by the header's kind and always forwarded:
    the report is the measurement's control channel, and dropping it would
    make server_received null instead of testing the loss split. With
    dup=True it instead sends every probe and every reply twice.
    """

    def __init__(self, server_port, up_every=4, down_every=5, dup=False):
        super().__init__(daemon=True)
        self.server = (LOOP, server_port)
        self.up_every, self.down_every, self.dup = up_every, down_every, dup
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind((LOOP, 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind((LOOP, 0))
        self.port = self.front.getsockname()[1]
        self.client = None
        self.up_seen = self.up_dropped = self.down_seen = self.down_dropped = 0
        self.halt = threading.Event()

    def _forward(self, data, sock, dest, drop_kind, every, direction):
        hdr = netprobe.parse_header(data)
        if hdr is not None and hdr.kind == drop_kind:
            seen = getattr(self, f"{direction}_seen") + 1
            setattr(self, f"{direction}_seen", seen)
            if not self.dup and seen % every == 0:
                setattr(self, f"{direction}_dropped",
                        getattr(self, f"{direction}_dropped") + 1)
                return
        for _ in range(2 if self.dup else 1):
            sock.sendto(data, dest)

    def run(self):
        deadline = time.monotonic() + 15   # never outlive the test run
        while not self.halt.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([self.front, self.back], [], [], 0.05)
            if self.front in readable:
                data, self.client = self.front.recvfrom(65535)
                self._forward(data, self.back, self.server, netprobe.PROBE,
                              self.up_every, "up")
            if self.back in readable and self.client:
                data, _ = self.back.recvfrom(65535)
                self._forward(data, self.front, self.client, netprobe.REPLY,
                              self.down_every, "down")

    def close(self):
        self.halt.set()
        self.join(timeout=2)
        self.front.close()
        self.back.close()


def run_rtt(port, count=200, interval=0.002, extra=()):
    res = run_client("rtt", "--to", LOOP, "--port", port, "--count", count,
                     "--interval", interval, "--timeout", 0.3, *extra)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout        # exactly one JSON object
    return json.loads(lines[0])


def test_rtt_clean_loopback(echo):
    port, srv = echo
    out = run_rtt(port)
    assert set(out) == {"sent", "server_received", "received", "loss_up",
                        "loss_down", "loss_rtt", "rtt_ms", "samples_ms"}
    assert set(out["rtt_ms"]) == {"min", "p50", "mean", "p95", "p99", "max"}
    assert (out["sent"], out["received"], out["server_received"]) == (200, 200, 200)
    assert out["loss_up"] == out["loss_down"] == out["loss_rtt"] == 0
    assert out["rtt_ms"]["p50"] < 5
    assert len(out["samples_ms"]) == 200
    assert srv.stop() == 0                    # SIGTERM exits 0


def test_rtt_loss_split_matches_relay(echo):
    port, _ = echo
    relay = LossyRelay(port)
    relay.start()
    try:
        out = run_rtt(relay.port, extra=("--size", 100))
    finally:
        relay.close()
    assert relay.up_seen == 200 and relay.up_dropped == 50
    assert out["sent"] == 200
    assert out["sent"] - out["server_received"] == relay.up_dropped
    assert out["server_received"] - out["received"] == relay.down_dropped
    assert relay.down_dropped == relay.down_seen // 5 == 30
    assert out["loss_up"] == 1 - (200 - relay.up_dropped) / 200
    assert out["loss_down"] == 1 - out["received"] / out["server_received"]
    assert out["loss_rtt"] == 1 - out["received"] / 200
    assert len(out["samples_ms"]) == out["received"] == 120


def test_rtt_duplicates_count_once(echo):
    port, _ = echo
    relay = LossyRelay(port, dup=True)
    relay.start()
    try:
        out = run_rtt(relay.port, count=50)
    finally:
        relay.close()
    assert relay.down_seen > 50                 # duplicates really came back
    assert (out["server_received"], out["received"]) == (50, 50)
    assert out["loss_up"] == out["loss_down"] == 0


def test_rtt_without_server_reports_null():
    out = run_rtt(free_port(), count=5, interval=0.001)
    assert out["received"] == 0 and out["server_received"] is None
    assert out["loss_up"] is None and out["loss_down"] is None
    assert out["loss_rtt"] == 1 and out["rtt_ms"]["p50"] is None


def test_bulk_into_sink():
    port = free_port(socket.SOCK_STREAM)
    srv = Server("sink", "--port", port, "--bin", 0.1)
    try:
        runs = []
        for extra in (("--duration", 1, "--cc", "cubic"), ("--duration", 0.2)):
            res = run_client("bulk", "--to", LOOP, "--port", port, *extra)
            assert res.returncode == 0, res.stderr
            runs.append(json.loads(res.stdout))
    finally:
        assert srv.stop() == 0
    for out in runs:                            # second run: sink served serially
        sink = out["sink"]
        assert set(sink) == {"bytes", "duration_s", "goodput_mbps", "bins"}
        assert sink["bytes"] == out["sent_bytes"] > 0
        assert sum(b for _, b in sink["bins"]) == sink["bytes"]
        assert sink["goodput_mbps"] > 0
    assert 0.9 < runs[0]["duration_s"] < 1.5
    series = netprobe.goodput_series(runs[0]["sink"]["bins"], 0.1)
    assert series[0][0] == 0 and all(mbps >= 0 for _, mbps in series)


def test_bulk_unknown_cc_fails_cleanly():
    port = free_port(socket.SOCK_STREAM)
    res = run_client("bulk", "--to", LOOP, "--port", port, "--duration", 0.1,
                     "--cc", "nosuchcc")
    assert res.returncode != 0
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "nosuchcc" in err[0] and "Traceback" not in res.stderr


def test_bad_arguments_are_argparse_errors():
    res = run_client("rtt", "--to", LOOP, "--port", 9, "--count", 0,
                     "--interval", 0.1)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--count" in res.stderr


def test_runs_as_plain_script_and_stdin_eof():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "testbed" / "net" / "netprobe.py"), "echo",
         "--port", str(port), "--bind", LOOP, "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert select.select([proc.stdout], [], [], 5)[0]
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.close()                      # EOF -> clean exit
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_summarize_rtts_nearest_rank():
    s = netprobe.summarize_rtts([float(x) for x in range(20, 0, -1)])  # 1..20
    assert s == {"min": 1.0, "p50": 10.0, "mean": 10.5, "p95": 19.0,
                 "p99": 20.0, "max": 20.0}
    one = netprobe.summarize_rtts([3.5])
    assert set(one.values()) == {3.5}
    assert set(netprobe.summarize_rtts([]).values()) == {None}


def test_goodput_series():
    assert netprobe.goodput_series([[0.0, 125000], [0.5, 0]], 0.5) == \
        [(0.0, 2.0), (0.5, 0.0)]
    with pytest.raises(ValueError):
        netprobe.goodput_series([], 0)
