"""A SIGKILLed `testbed up` leaves only what `testbed clean` removes, and a run beside it keeps working."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.net.runs import links_of, processes_of, registry_dir

pytestmark = pytest.mark.root
TOPO = "topologies/star-wifi-4.yaml"


def start_up() -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "testbed.cli", "up", TOPO], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    for line in p.stdout:
        if line.startswith("up: run "):
            return p, line.split()[2].rstrip(",")
        assert time.monotonic() < deadline
    raise AssertionError(f"testbed up exited with {p.wait()} before coming up")


def host_pid(run_id: str, host: str) -> int:
    for pid in processes_of(run_id):
        try:
            if f"mininet:{host}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    raise AssertionError(f"no shell of {host} in run {run_id}")


def ping(run_id: str, src: str, dst_ip: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mnexec", "-a", str(host_pid(run_id, src)), "ping", "-c", "2", "-W", "2", dst_ip],
                          capture_output=True, text=True, timeout=20)


def wait_gone(pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
        if not pids:
            return []
        time.sleep(0.05)
    return pids


def test_sigkill_then_clean_leaves_nothing_and_spares_the_other_run():
    killed, a = start_up()
    survivor, b = start_up()
    try:
        assert a != b
        assert ping(a, "d1", "10.0.0.1").returncode == 0
        a_procs = processes_of(a)
        a_daemons = [p for p in a_procs if b"nfqdelay" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert a_daemons and links_of(a)
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)

        out = subprocess.run([sys.executable, "-m", "testbed.cli", "clean"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert a in out.stdout and b in out.stdout   # cleaned a, left live b alone
        assert wait_gone(a_procs) == []             # shells, delay daemons, tc batches: all gone
        assert processes_of(a) == [] and links_of(a) == []
        assert not (registry_dir() / f"{a}.json").exists()
        # The other run still carries traffic and is still registered.
        assert links_of(b) and (registry_dir() / f"{b}.json").exists()
        assert ping(b, "d1", "10.0.0.1").returncode == 0
        assert ping(b, "d4", "10.0.0.2").returncode == 0
    finally:
        if killed.poll() is None:
            killed.kill()
        b_procs = processes_of(b)
        survivor.send_signal(signal.SIGTERM)
        rc = survivor.wait(30)
    assert rc == 0
    assert wait_gone(b_procs) == [] and links_of(b) == []


def test_sigint_stops_cleanly():
    p, rid = start_up()
    procs = processes_of(rid)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0 and "cleaned up" in out
    assert wait_gone(procs) == [] and links_of(rid) == []
    assert not (registry_dir() / f"{rid}.json").exists()
