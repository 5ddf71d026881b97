"""Transport security (issue 15 part 3): ZeroMQ CURVE between drafters and verifiers (nodes/security.py, keys per
run in testbed/run/curve.py). Real node processes on loopback: the right key runs, a key not in the verifier's list
and a drafter without CURVE are refused (one line, non-zero exit, an auth_refused event at the verifier); bytes on
the wire carry no plaintext with CURVE (and do without: the check can fail); keys are checked, secret keys stay in
the 0600 node configs; an experiment with security.curve true runs end to end on the local backend."""
import json
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
import zmq

from nodes.config import DrafterConfig, VerifierConfig, load_config, write_config
from nodes.events import AuthRefused, Crash, read_events
from nodes.security import Handshakes, Refused, VerifierCurve, ZapGuard, secure_client
from testbed.run import curve as curve_mod
from testbed.run.experiment import experiment_from_dict

REPO = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]
SYNTH = {"backend": "synthetic", "vocab_size": 32000}


def keypair() -> tuple[str, str]:
    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


# ------------------------------------------------------------------------------------------ node processes

@pytest.fixture(scope="module")
def verifier(tmp_path_factory):
    """A CURVE verifier process accepting one drafter key; yields (endpoint, its public key, the accepted drafter
    keypair, its event log, the directory)."""
    d = tmp_path_factory.mktemp("curve-nodes")
    (vp, vs), good = keypair(), keypair()
    config = VerifierConfig(name="verifier", bind="tcp://127.0.0.1:*", model=SYNTH, log=str(d / "verifier.jsonl"),
                            curve={"public_key": vp, "secret_key": vs, "clients": [good[0]]})
    write_config(config, d / "verifier.json")
    proc = subprocess.Popen([sys.executable, "-m", "nodes.verifier", "--config", str(d / "verifier.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    line = proc.stdout.readline()
    assert line.startswith("ready "), line + proc.stderr.read()
    yield line.split()[1], vp, good, d / "verifier.jsonl", d
    proc.terminate()
    proc.wait(10)


def run_drafter(d: Path, name: str, endpoint: str, curve: dict | None) -> subprocess.CompletedProcess:
    config = DrafterConfig(name=name, connect=[endpoint], model={**SYNTH, "alpha": 0.8},
                           workload={"requests": 2, "max_new": 16}, timeout_s=30, log=str(d / f"{name}.jsonl"),
                           out=str(d / f"{name}.out"), curve=curve)
    write_config(config, d / f"{name}.json")
    return subprocess.run([sys.executable, "-m", "nodes.drafter", "--config", str(d / f"{name}.json")],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def refusals(log: Path) -> list[AuthRefused]:
    time.sleep(0.3)            # the verifier's ZAP thread writes its event as the drafter sees the refusal
    return [e for e in read_events(log)[0] if isinstance(e, AuthRefused)]


def test_the_right_key_runs_a_session_through(verifier):
    endpoint, vp, (dp, ds), _, d = verifier
    r = run_drafter(d, "good", endpoint, {"public_key": dp, "secret_key": ds, "server_keys": [vp]})
    assert r.returncode == 0, r.stderr
    outs = [json.loads(l) for l in (d / "good.out").read_text().splitlines()]
    assert len(outs) == 2 and all(len(o["tokens"]) == 16 for o in outs)
    assert stat.S_IMODE((d / "good.json").stat().st_mode) == 0o600          # it holds a secret key
    assert stat.S_IMODE((d / "verifier.json").stat().st_mode) == 0o600


def test_a_key_not_in_the_list_is_refused_in_one_line_and_logged(verifier):
    endpoint, vp, _, log, d = verifier
    xp, xs = keypair()
    t0 = time.monotonic()
    r = run_drafter(d, "intruder", endpoint, {"public_key": xp, "secret_key": xs, "server_keys": [vp]})
    assert r.returncode != 0 and time.monotonic() - t0 < 20          # not its 30 s timeout
    assert r.stderr.strip() == (f"intruder: refused by verifier {endpoint}: CURVE authentication failed (is this "
                                f"drafter's key in the verifier's list?)")
    assert not (d / "intruder.out").exists() or not (d / "intruder.out").read_text()
    crash = [e for e in read_events(d / "intruder.jsonl")[0] if isinstance(e, Crash)]
    assert crash and "refused by verifier" in crash[0].error
    refused = [e for e in refusals(log) if e.key == xp]
    assert len(refused) == 1 and refused[0].peer == "127.0.0.1" and "not in the verifier's list" in refused[0].reason


def test_a_drafter_without_curve_is_refused_too(verifier):
    endpoint, _, _, log, d = verifier
    before = len(refusals(log))
    r = run_drafter(d, "plain", endpoint, None)
    assert r.returncode != 0
    assert r.stderr.strip().startswith(f"plain: refused by verifier {endpoint}: security handshake failed")
    assert len(r.stderr.strip().splitlines()) == 1
    after = refusals(log)
    assert len(after) > before and "handshake failed before authentication" in after[-1].reason


def test_a_bad_key_in_a_node_config_is_one_line_and_exit_2(tmp_path):
    (dp, ds), (vp, _) = keypair(), keypair()
    good = DrafterConfig(model=SYNTH, curve={"public_key": dp, "secret_key": ds, "server_keys": [vp]})
    data = json.loads(good.model_dump_json())
    data["curve"]["secret_key"] = ds[:39]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    r = subprocess.run([sys.executable, "-m", "nodes.drafter", "--config", str(path)], capture_output=True,
                       text=True, timeout=60, cwd=REPO)
    assert r.returncode == 2
    assert r.stderr.strip() == f"{path}: curve.secret_key: expected a CURVE key: 40 Z85 characters, got 39"
    assert ds[:39] not in r.stderr                                   # a secret key is never echoed


# ------------------------------------------------------------------------------------------ sockets in-process

class Tap:
    """A TCP relay on loopback that keeps every byte it relays (both ways): what a wire would carry."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.seen = bytearray()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                dst.close()
                return
            self.seen += data
            dst.sendall(data)


MARKER = b"SPECNET-PLAINTEXT-MARKER-0123456789"


def _round_trip_through_tap(curve_on: bool, events_path: Path) -> bytes:
    ctx = zmq.Context()
    (vp, vs), (dp, ds) = keypair(), keypair()
    from nodes.events import EventLog
    log = EventLog(events_path, "verifier")
    server = ctx.socket(zmq.ROUTER)
    server.linger = 0
    guard = None
    if curve_on:
        guard = ZapGuard(VerifierCurve(public_key=vp, secret_key=vs, clients=[dp]), log, "verifier", ctx)
        guard.secure(server)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    tap = Tap(port)
    client = ctx.socket(zmq.DEALER)
    client.linger = 0
    if curve_on:
        from nodes.security import DrafterCurve
        secure_client(client, DrafterCurve(public_key=dp, secret_key=ds, server_keys=[vp]), 0)
    watch = Handshakes(client, f"tcp://127.0.0.1:{tap.port}")
    client.connect(f"tcp://127.0.0.1:{tap.port}")
    client.send(MARKER)
    assert server.poll(5000), "the frame did not get through"
    ident, frame = server.recv_multipart()
    assert frame == MARKER
    server.send_multipart([ident, MARKER[::-1]])
    assert watch.wait(5000) and client.recv() == MARKER[::-1]
    watch.close()
    if curve_on:
        assert server.get(zmq.CURVE_SERVER) == 1 and client.get(zmq.MECHANISM) == zmq.CURVE
    time.sleep(0.1)
    seen = bytes(tap.seen)
    for s in (client, server):
        s.close(0)
    if guard:
        guard.close()
    ctx.term()
    log.close()
    return seen


def test_with_curve_no_plaintext_crosses_the_wire_and_without_it_does(tmp_path):
    plain = _round_trip_through_tap(False, tmp_path / "plain.jsonl")
    assert MARKER in plain and MARKER[::-1] in plain                  # the tap sees plaintext when it is there
    secure = _round_trip_through_tap(True, tmp_path / "curve.jsonl")
    assert len(secure) > 2 * len(MARKER)                             # it relayed the handshake and both frames
    assert MARKER not in secure and MARKER[::-1] not in secure and MARKER[:12] not in secure


def test_repeated_refusals_of_one_peer_are_counted_not_each_logged(tmp_path):
    from nodes.events import EventLog
    vp, vs = keypair()
    xp = zmq.utils.z85.decode(keypair()[0].encode())
    with EventLog(tmp_path / "v.jsonl", "verifier") as log:
        guard = ZapGuard(VerifierCurve(public_key=vp, secret_key=vs, clients=[keypair()[0]]), log, "verifier")
        request = [b"1.0", b"1", b"specnet", b"10.0.0.9", b"", b"CURVE", xp]
        for _ in range(500):             # a hostile peer reconnecting as fast as it can
            assert guard.answer(request)[2] == b"400"
        guard.limiter.window_s = 0.0     # the window has passed
        guard.answer(request)
        assert guard.answer([b"1.0", b"2", b"specnet", b"10.0.0.9", b"", b"NULL"])[2] == b"400"
        assert guard.answer([b"junk"])[2] == b"500"
    logged = [e for e in read_events(tmp_path / "v.jsonl")[0] if isinstance(e, AuthRefused)]
    assert [e.repeated for e in logged[:2]] == [0, 499] and all(e.peer == "10.0.0.9" for e in logged)
    assert guard.refused == 502 and len(logged) == 3 and "NULL" in logged[2].reason


def test_handshakes_time_out_without_a_verifier():
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    watch = Handshakes(sock, "tcp://127.0.0.1:9")
    sock.connect("tcp://127.0.0.1:9")
    t0 = time.monotonic()
    assert watch.wait(200) is False and 0.15 < time.monotonic() - t0 < 2
    watch.close()
    sock.close(0)
    assert issubclass(Refused, Exception)


# ------------------------------------------------------------------------------------------ keys of a run

def test_keys_drawn_per_node_given_ones_checked_in_one_line():
    keys = curve_mod.run_keys(["verifier", "d1", "d2"])
    assert len({k.public for k in keys.values()}) == 3 and all(len(k.secret) == 40 for k in keys.values())
    assert "<hidden>" in repr(keys["d1"]) and keys["d1"].secret not in repr(keys["d1"])
    p, s = keypair()
    assert curve_mod.run_keys(["d1"], {"d1": (p, s)})["d1"].public == p
    other = keypair()[0]
    for given, expected in [((p[:30], s), "d1: curve_public_key: expected a CURVE key: 40 Z85 characters, got 30"),
                            ((p, "~" * 40), "d1: curve_secret_key: expected a CURVE key in Z85"),
                            ((other, s), "d1: curve_public_key: is not the public key of curve_secret_key"),
                            ((p,), "d1: expected (public, secret)")]:
        with pytest.raises(curve_mod.CurveError) as e:
            curve_mod.run_keys(["d1"], {"d1": given})
        assert expected in str(e.value) and "\n" not in str(e.value) and s not in str(e.value)


def _exp(**fields):
    return experiment_from_dict({"name": "c", "topology": str(REPO / "topologies/star-wifi-4.yaml"),
                                 "backend": "local", **fields}, REPO)


def test_curve_is_off_by_default_and_on_with_real_hosts_or_when_asked():
    assert not curve_mod.curve_wanted(_exp(), False)
    assert curve_mod.curve_wanted(_exp(), True)
    assert curve_mod.curve_wanted(_exp(security={"curve": True}), False)
    assert not curve_mod.curve_wanted(_exp(security={"curve": False}), True)
    assert curve_mod.curve_wanted(_exp(security={"curve": False}), True, inventory_curve=True)
    assert not curve_mod.curve_wanted(_exp(backend="sim", security={"curve": True}), False)
    assert _exp().config_hash() == _exp(security={"curve": None}).config_hash()   # old hashes unchanged
    assert _exp().config_hash() != _exp(security={"curve": True}).config_hash()


def test_a_run_curve_fills_every_node_config(tmp_path):
    exp = _exp(security={"curve": True})
    man = {}
    keys = curve_mod.for_run(exp, None, man)
    assert man["security"]["curve"] is True and set(man["security"]["public_keys"]) == {"verifier", "d1", "d2", "d3", "d4"}
    assert not any(k.secret in json.dumps(man) for k in keys.keys.values())
    v = keys.verifier(VerifierConfig(model=SYNTH), "verifier")
    assert sorted(v.curve.clients) == sorted(keys.keys[d].public for d in ("d1", "d2", "d3", "d4"))
    d = keys.drafter(DrafterConfig(name="d1", model=SYNTH), ["verifier"])
    assert d.curve.server_keys == [keys.keys["verifier"].public]
    path = write_config(d, tmp_path / "d1.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and load_config(DrafterConfig, path) == d
    with pytest.raises(curve_mod.CurveError):
        keys.drafter(DrafterConfig(name="d1", model=SYNTH), ["verifier", "verifier"])
    with pytest.raises(Exception, match="one verifier key per connect endpoint"):
        DrafterConfig(name="d1", model=SYNTH, connect=["tcp://a:1", "tcp://b:1"], routing={"policy": "random"},
                      curve=d.curve)
    man = {}
    assert curve_mod.for_run(_exp(backend="sim", security={"curve": True}), None, man) is None
    assert man["security"]["curve"] is False and "ignored" in man["security"]["why"]


def test_an_experiment_with_curve_runs_end_to_end_and_keeps_secrets_out_of_results(tmp_path):
    """Local backend, synthetic models, a verifier restart mid-run (the drafters handshake again with the
    restarted verifier)."""
    exp = {"name": "curve", "topology": str(REPO / "topologies/star-wifi-4.yaml"), "backend": "local",
           "drafters": {**SYNTH, "nodes": ["d1", "d2"], "alpha": 0.8, "draft_token_ms": 2},
           "verifier": {**SYNTH, "verify_base_ms": 10, "verify_per_token_ms": 1},
           "workload": {"requests": 3, "max_new": 64}, "speculation": {"gamma": 4}, "seed": 0,
           "security": {"curve": True}, "limits": {"probe_s": 1.0},
           "faults": [{"kind": "verifier_restart", "node": "verifier", "at_s": 0.5, "duration_s": 0.5}]}
    path = tmp_path / "curve.yaml"
    path.write_text(yaml.safe_dump(exp))
    r = subprocess.run(TESTBED + ["run", str(path), "--results", str(tmp_path / "res")], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "res" / "curve").iterdir() if (p / "manifest.json").exists()]
    man = json.loads((run_dir / "manifest.json").read_text())
    assert man["status"] == "complete" and man["security"]["curve"] is True
    assert man["config"]["security"] == {"curve": True}
    configs = {n: json.loads((run_dir / "nodes" / f"{n}.json").read_text()) for n in ("verifier", "d1", "d2")}
    for name, c in configs.items():
        assert stat.S_IMODE((run_dir / "nodes" / f"{name}.json").stat().st_mode) == 0o600
        assert man["security"]["public_keys"][name] == c["curve"]["public_key"]
    assert sorted(configs["verifier"]["curve"]["clients"]) == sorted(configs[d]["curve"]["public_key"]
                                                                    for d in ("d1", "d2"))
    secrets = [c["curve"]["secret_key"] for c in configs.values()]
    for f in run_dir.rglob("*"):          # no secret key anywhere but the node configs
        if f.is_file() and f.parent.name != "nodes":
            text = f.read_bytes()
            assert not any(s.encode() in text for s in secrets), f
    outs = [json.loads(l) for d in ("d1", "d2") for l in (run_dir / "outputs" / f"{d}.jsonl").read_text().splitlines()]
    assert len(outs) == 6 and all(len(o["tokens"]) == 64 for o in outs)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["complete"], m["issues"]
    assert [(o["kind"], o["ended"]) for o in m["faults"]["occurrences"]] == [("verifier_restart", True)]
    assert not [e for f in (run_dir / "events").glob("*.jsonl") for e in read_events(f)[0]
                if isinstance(e, AuthRefused)]                     # the run's own drafters are never refused
