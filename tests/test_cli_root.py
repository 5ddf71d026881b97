"""The `testbed` commands a user runs, end to end on real Mininet."""
import json
import subprocess
import sys

import pytest

from tests.remeasure import remeasure

pytestmark = pytest.mark.root
TESTBED = [sys.executable, "-m", "testbed.cli"]


def test_up_interactive_gives_mininet_cli():
    """With a terminal, `testbed up` opens Mininet's CLI on the topology (here through a pseudo-tty)."""
    script = "sleep 5; printf 'd1 ping -c1 -W2 v2\\n'; sleep 3; printf 'exit\\n'"
    cmd = f"({script}) | script -qec '{' '.join(TESTBED)} up topologies/many-to-many.yaml' /dev/null"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=90).stdout
    assert "mininet>" in out
    assert "1 packets transmitted, 1 received" in out
    assert "cleaned up" in out


def test_calibrate_writes_json_and_fails_outside_tolerance(tmp_path):
    out = tmp_path / "cal.json"
    # The command's contract (JSON written, exit 0 within tolerance, exit 1 outside) is what is tested here; its
    # 1 ms default is an accuracy target, measured by `make bench` and asserted on a jitter-free link in
    # tests/test_emulation.py. d3's link has 2 ms jitter, and on a loaded 2-core machine its median RTT error
    # was seen at 1.01 ms (before this change too), so the passing run allows 2 ms.
    # A 2 s rate reading is one measurement a load spike can spoil (seen: 10.53 Mbit/s on a 10 Mbit/s link while
    # the other direction read 9.98): re-measured up to 3 times, as the wire tests do (tests/remeasure.py).
    def calibrated():
        ok = subprocess.run(TESTBED + ["calibrate", "topologies/star-wifi-4.yaml", "--links", "d3-ap1",
                                       "--duration", "2", "--probes", "200", "--rtt-tolerance-ms", "2",
                                       "--json", str(out)],
                            capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    remeasure(calibrated)
    result = json.loads(out.read_text())
    assert result["emulation"]["delay_backend"] in ("netem", "nfqueue")
    rows = {(r["link"], r["direction"]): r for r in result["links"]}
    assert set(rows) == {("d3-ap1", "up"), ("d3-ap1", "down")}
    assert all(r["ok"] and abs(r["rate_ratio"] - 1) <= 0.05 for r in rows.values())
    assert rows[("d3-ap1", "up")]["rtt_ms"] == 30   # 2 x (10 ms on d3's link + 5 ms backhaul)
    # Demand an impossible RTT accuracy: the same run must now exit 1 and say why.
    bad = subprocess.run(TESTBED + ["calibrate", "topologies/star-wifi-4.yaml", "--links", "d3-ap1",
                                    "--duration", "1", "--probes", "100", "--rtt-tolerance-ms", "0.001"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "median RTT" in bad.stdout and "NO" in bad.stdout


def test_calibrate_unknown_link_is_bad_input():
    r = subprocess.run(TESTBED + ["calibrate", "topologies/star-wifi-4.yaml", "--links", "nosuch"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "no link named 'nosuch'" in r.stderr
