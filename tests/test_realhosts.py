"""Nodes on real hosts (issue 15): an inventory's checks without root; with root, a real run whose verifier and
one drafter run on a "real host": a Ray worker in a network namespace of its own, joined to this machine by a
veth only, as a GPU server or an edge board would be joined by its Ethernet."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from testbed.common.errors import ConfigError
from testbed.net.gateway import Forward, Gateway, subnet
from testbed.net.runs import links_of
from testbed.run.experiment import load_experiment
from testbed.run.inventory import check_against, load_inventory

REPO = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]
SYNTHETIC = {
    "verifier": {"backend": "synthetic", "vocab_size": 32000, "verify_base_ms": 20, "verify_per_token_ms": 1},
    "drafters": {"backend": "synthetic", "vocab_size": 32000, "alpha": 0.8, "draft_token_ms": 4},
}


def experiment(tmp_path, **fields) -> Path:
    exp = {"name": "realhost", "topology": str(REPO / "topologies/star-wifi-4.yaml"), "backend": "mininet",
           "workload": {"prompts": "builtin", "requests": 2, "max_new": 32},
           "speculation": {"gamma": 4, "payload": "ids", "proactive": True}, "seed": 0, **SYNTHETIC, **fields}
    path = tmp_path / "realhost.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def inventory(tmp_path, hosts: dict, **top) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump({"hosts": hosts, **top}))
    return path


# ------------------------------------------------------------------------------------ without root

def test_inventory_problems_name_the_file_field_and_expectation(tmp_path):
    import zmq
    public, secret = (k.decode() for k in zmq.curve_keypair())
    other_public = zmq.curve_keypair()[0].decode()
    exp = load_experiment(experiment(tmp_path))
    bad = {
        "nosuchhost": ({"nosuchhost": {"resource": "gpu"}}, "not a host of topology star-wifi-4"),
        "ap": ({"ap1": {"resource": "gpu"}}, "hosts.ap1: not a host"),
        "label": ({"verifier": {"resource": "a b"}}, "hosts.verifier.resource"),
        "address": ({"verifier": {"resource": "gpu", "address": "10.0.0.300"}}, "hosts.verifier.address"),
        "short key": ({"verifier": {"resource": "gpu", "curve_public_key": "abc", "curve_secret_key": secret}},
                      "hosts.verifier.curve_public_key: expected a CURVE key: 40 Z85 characters, got 3"),
        "not z85": ({"verifier": {"resource": "gpu", "curve_public_key": "~" * 40, "curve_secret_key": secret}},
                    "expected a CURVE key in Z85"),
        "mismatch": ({"verifier": {"resource": "gpu", "curve_public_key": other_public, "curve_secret_key": secret}},
                     "is not the public key of curve_secret_key"),
        "half": ({"verifier": {"resource": "gpu", "curve_public_key": public}}, "come together"),
        "unknown field": ({"verifier": {"resource": "gpu", "gpu": 1}}, "hosts.verifier.gpu"),
    }
    for what, (hosts, expected) in bad.items():
        path = inventory(tmp_path, hosts)
        with pytest.raises(ConfigError) as e:
            check_against(load_inventory(path), exp)
        assert expected in str(e.value) and str(path) in str(e.value), (what, str(e.value))
    good = load_inventory(inventory(tmp_path, {"verifier": {"resource": "gpu", "curve_public_key": public,
                                                            "curve_secret_key": secret}, "d2": {"resource": "jetson"}}))
    check_against(good, exp)
    with pytest.raises(ConfigError, match="expected mininet"):
        check_against(good, load_experiment(experiment(tmp_path, backend="sim")))


@pytest.mark.parametrize("args, expected", [
    (["--inventory", "{inv}"], "not a host of topology"),
    (["--inventory", "{missing}"], "cannot read"),
])
def test_bad_inventory_is_one_line_and_exit_2_before_anything_starts(tmp_path, args, expected):
    inv = inventory(tmp_path, {"nosuchhost": {"resource": "gpu"}})
    args = [a.format(inv=inv, missing=tmp_path / "none.yaml") for a in args]
    r = subprocess.run(TESTBED + ["run", str(experiment(tmp_path)), "--results", str(tmp_path / "r"), *args],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()


def test_an_unreachable_cluster_in_the_inventory_is_one_line_exit_2(tmp_path):
    with socket_closed_port() as port:
        inv = inventory(tmp_path, {"verifier": {"resource": "gpu"}}, cluster=f"ray://127.0.0.1:{port}")
        r = subprocess.run(TESTBED + ["run", str(experiment(tmp_path)), "--results", str(tmp_path / "r"),
                                      "--inventory", str(inv)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and "unreachable" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


class socket_closed_port:
    """A port nothing listens on (bound, never listened, so no other test takes it meanwhile)."""
    def __enter__(self):
        import socket
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *exc):
        self.s.close()


def test_gateway_commands_forward_a_server_and_a_client():
    server = Gateway("1a2b", 0, "verifier", "10.0.0.2", ("verifier-eth0",), "192.168.1.20", serves=(5555,))
    server.public_ip = "192.168.1.1"
    text = "\n".join(map(str, server.commands(4242)))
    assert "ip link add sn1a2bg0 type veth peer name sn1a2bg0-eth0 netns 4242" in text
    assert "[verifier] iptables -w -t nat -A PREROUTING -d 10.0.0.2 -p tcp --dport 5555 -j DNAT " \
           "--to-destination 192.168.1.20:5555" in text
    assert "specnet:1a2b" in text and "MASQUERADE" in text
    client = Gateway("1a2b", 1, "d2", "10.0.0.4", ("d2-eth0",), "192.168.1.30", forwards=(Forward(40001, "10.0.0.2:5555"),))
    client.public_ip = "192.168.1.1"
    text = "\n".join(map(str, client.commands(4343)))
    assert "[root] iptables -w -t nat -A PREROUTING -s 192.168.1.30 -d 192.168.1.1 -p tcp --dport 40001 -j DNAT " \
           f"--to-destination {client.inner_ip}:40001" in text
    assert "[d2] iptables -w -t nat -A POSTROUTING -o d2-eth0 -j MASQUERADE" in text
    assert client.endpoint_for(client.forwards[0]) == "tcp://192.168.1.1:40001"
    # every run id and gateway index its own /30 in 100.64.0.0/10: concurrent runs never share an address
    nets = {subnet(f"{r:04x}", i) for r in (0, 1, 0xFFFF) for i in range(16)}
    assert len(nets) == 48 and all(n.subnet_of(subnet("0000", 0).supernet(new_prefix=10)) for n in nets)


# ------------------------------------------------------------------------------------ with root: a real run

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces, Mininet and tc need root "
                                                           "(CI runs as root)")


@pytest.fixture(scope="module")
def real_host(tmp_path_factory):
    """A Ray head here and a Ray worker in namespace `snrh<pid>` advertising `realhost`, reached over a veth."""
    from ray.cluster_utils import Cluster
    tag = f"{os.getpid() % 0xFFFF:04x}"
    ns, outer, inner = f"snrh{tag}", f"snrh{tag}a", f"snrh{tag}b"
    net = f"10.213.{os.getpid() % 250}"
    sh = lambda *a: subprocess.run(a, check=True, capture_output=True)
    cluster = worker = None
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
        sh("ip", "addr", "add", f"{net}.1/30", "dev", outer)
        sh("ip", "link", "set", outer, "up")
        for cmd in (["ip", "addr", "add", f"{net}.2/30", "dev", inner], ["ip", "link", "set", inner, "up"],
                    ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "default", "via", f"{net}.1"]):
            sh("ip", "netns", "exec", ns, *cmd)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        log = open(tmp_path_factory.mktemp("ray") / "ray-worker.log", "w")
        worker = subprocess.Popen(["ip", "netns", "exec", ns, str(Path(sys.executable).parent / "ray"), "start",
                                   "--address", cluster.address, "--node-ip-address", f"{net}.2", "--num-cpus", "1",
                                   "--resources", '{"realhost": 1}', "--block"],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_resource(cluster.address, "realhost", worker)
        yield {"address": cluster.address, "ip": f"{net}.2", "ns": ns}
    finally:
        if worker is not None:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in pids:
                    try:
                        os.kill(int(pid), sig)
                    except ProcessLookupError:
                        pass
                time.sleep(1)
            worker.wait(10)
        if cluster is not None:
            cluster.shutdown()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", outer], capture_output=True)


def wait_for_resource(address: str, resource: str, worker, timeout: float = 60) -> None:
    code = ("import ray, time, sys\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
            "for _ in range(int(sys.argv[3]) * 4):\n"
            "    if ray.cluster_resources().get(sys.argv[2]): sys.exit(0)\n"
            "    time.sleep(0.25)\nsys.exit(1)\n")
    r = subprocess.run([sys.executable, "-c", code, address, resource, str(int(timeout))], capture_output=True,
                       text=True, timeout=timeout + 30)
    assert r.returncode == 0 and worker.poll() is None, f"the namespace's Ray worker never joined: {r.stderr[-500:]}"


def nodes_in(ns: str) -> list[str]:
    found = []
    for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if " -m nodes." in cmd:
            found.append(cmd)
    return found


@needs_root
def test_a_runner_killed_mid_run_leaves_nothing_running_on_the_real_host(tmp_path, real_host):
    """SIGKILL to `testbed run`: Ray kills its actors and their nodes on the real host; the watchdog removes the
    gateways and their root-namespace rules and marks the run killed. (The killed actor's scratch directory is
    removed by the next actor on that host: the next test checks it.)"""
    inv = inventory(tmp_path, {"verifier": {"resource": "realhost"}, "d2": {"resource": "realhost"}})
    exp = experiment(tmp_path, workload={"prompts": "builtin", "requests": 50, "max_new": 64})
    log = tmp_path / "out.log"
    with open(log, "w") as out:
        p = subprocess.Popen(TESTBED + ["run", str(exp), "--results", str(tmp_path / "results"), "--inventory",
                                        str(inv)], cwd=REPO, env={**os.environ, "RAY_ADDRESS": real_host["address"]},
                             stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(nodes_in(real_host["ns"])) < 2 or "requests" not in log.read_text():
        assert p.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    run_id = next(l.split()[1].rstrip(":") for l in log.read_text().splitlines() if l.startswith("run ") and
                  "building" in l)
    assert links_of(run_id)                                   # its gateways are up
    p.kill()
    p.wait()
    deadline = time.monotonic() + 60
    while nodes_in(real_host["ns"]) or links_of(run_id) or \
            f"specnet:{run_id}" in subprocess.run(["iptables-save"], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, (nodes_in(real_host["ns"]), links_of(run_id))
        time.sleep(0.5)
    run_dir = next((tmp_path / "results" / "realhost").iterdir())
    deadline = time.monotonic() + 60
    while json.loads((run_dir / "manifest.json").read_text())["status"] != "killed":
        assert time.monotonic() < deadline
        time.sleep(0.5)


@needs_root
def test_verifier_and_a_drafter_on_a_real_host_complete_a_run_through_the_emulated_links(tmp_path, real_host):
    inv = inventory(tmp_path, {"verifier": {"resource": "realhost"}, "d2": {"resource": "realhost"}})
    results = tmp_path / "results"
    r = subprocess.run(TESTBED + ["run", str(experiment(tmp_path)), "--results", str(results), "--inventory", str(inv)],
                       capture_output=True, text=True, timeout=600, cwd=REPO,
                       env={**os.environ, "RAY_ADDRESS": real_host["address"]})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = next(p for p in (results / "realhost").iterdir() if (p / "manifest.json").exists())
    man = json.loads((run_dir / "manifest.json").read_text())
    real = man["real_hosts"]
    assert set(real) == {"verifier", "d2"}
    assert {h["node_ip"] for h in real.values()} == {real_host["ip"]}       # the actors ran in the namespace
    assert real["verifier"]["gateway"]["serves"] == [5555] and real["d2"]["gateway"]["forwards"]
    assert abs(real["verifier"]["clock_offset_s"]) < 1.0
    # real hosts turn CURVE on (security.curve null, inventory curve absent): keys drawn for this run, every node
    # a CURVE peer; the secret keys are in RUN/nodes/*.json only (0600), never in the manifest or another file
    assert man["security"]["curve"] is True and set(man["security"]["public_keys"]) == {"verifier", "d1", "d2",
                                                                                         "d3", "d4"}
    secrets = {json.loads((run_dir / "nodes" / f"{n}.json").read_text())["curve"]["secret_key"]
               for n in ("verifier", "d1", "d2")}
    assert all((run_dir / "nodes" / f"{n}.json").stat().st_mode & 0o077 == 0 for n in ("verifier", "d1", "d2"))
    for f in run_dir.rglob("*"):
        if f.is_file() and f.parent.name != "nodes":
            text = f.read_bytes().decode(errors="replace")
            assert not any(k in text for k in secrets), f
    # every drafter, emulated or real, finished its sessions against the real verifier
    for d in ("d1", "d2", "d3", "d4"):
        outs = [json.loads(l) for l in (run_dir / "outputs" / f"{d}.jsonl").read_text().splitlines() if l.strip()]
        assert len(outs) == 2 and all(o["tokens"] for o in outs), d
    verifier_events = [json.loads(l) for l in (run_dir / "events" / "verifier.jsonl").read_text().splitlines()]
    assert any(e["event"] == "ready" for e in verifier_events)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"]
    # the emulated path stayed in the loop: d1 (5 ms wireless + 5 ms backhaul each way) sees rounds of at least
    # that round trip, the real drafter d2 (same links through its stand-in) too
    for d in ("d1", "d2"):
        verdicts = [json.loads(l) for l in (run_dir / "events" / f"{d}.jsonl").read_text().splitlines()
                    if '"event":"verdict"' in l.replace(" ", "")]
        rtts = [v["rtt_s"] for v in verdicts]
        assert rtts and sorted(rtts)[len(rtts) // 2] >= 0.020, (d, rtts[:10])
    # nothing of the run is left: gateway veths, root-namespace rules, the host's scratch directory
    run_id = man["emulation"]["run"]
    assert not links_of(run_id)
    assert f"specnet:{run_id}" not in subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert not list(Path("/tmp").glob("specnet-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-*/owner"))   # orphans too


@needs_root
def test_a_real_hosts_link_shaped_on_that_host_and_open_in_the_emulator(tmp_path, real_host):
    """`shape:` puts d2's link (20 Mbit/s each way) on the real host's interface: HTB on its egress and on an
    IFB for its ingress, both carrying d2's traffic; the run completes; all of it is removed afterwards."""
    intf = "snrh" + real_host["ns"][4:] + "b"
    inv = inventory(tmp_path, {"d2": {"resource": "realhost", "shape": intf}})
    exp = experiment(tmp_path, links={"d2-ap1": {"delay_ms": 0, "jitter_ms": 0, "loss_pct": 0}})
    env = {**os.environ, "RAY_ADDRESS": real_host["address"]}
    r = subprocess.run(TESTBED + ["run", str(exp), "--results", str(tmp_path / "results"), "--inventory", str(inv)],
                       capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = next(p for p in (tmp_path / "results" / "realhost").iterdir() if (p / "manifest.json").exists())
    man = json.loads((run_dir / "manifest.json").read_text())
    shaping = man["real_hosts"]["d2"]["shaping"]
    assert shaping["interface"] == intf and shaping["link"] == "d2-ap1" and shaping["egress"] == "up"
    assert any("htb rate 20000kbit" in c for c in shaping["commands"])
    assert all(b > 10_000 for b in shaping["sent_bytes"].values()), shaping["sent_bytes"]   # both directions
    qdiscs = subprocess.run(["ip", "netns", "exec", real_host["ns"], "tc", "qdisc", "show", "dev", intf],
                            capture_output=True, text=True).stdout
    assert "htb" not in qdiscs and "ingress" not in qdiscs, qdiscs
    outs = (run_dir / "outputs" / "d2.jsonl").read_text().splitlines()
    assert len(outs) == 2
    # the link's 5 ms delay cannot be applied on a host without netem (this kernel): refused, said why
    inv = inventory(tmp_path, {"d2": {"resource": "realhost", "shape": intf}})
    r = subprocess.run(TESTBED + ["run", str(experiment(tmp_path)), "--results", str(tmp_path / "r2"),
                                  "--inventory", str(inv)], capture_output=True, text=True, timeout=600, cwd=REPO,
                       env=env)
    from testbed.net.capabilities import probe_netem
    if probe_netem().ok:                # a machine with netem applies the delay there and completes
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    else:
        assert r.returncode == 1 and "no netem" in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
        after = subprocess.run(["ip", "netns", "exec", real_host["ns"], "ip", "-br", "link"], capture_output=True,
                               text=True).stdout
        assert "ifb" not in after and "sn" not in after.replace(intf, ""), after
