"""Sweeps on a Ray cluster (`testbed run/reproduce --cluster`, testbed/cluster): bad input refused in one line before
anything starts, the shipped results unpacked safely, and a real Ray cluster on this machine (a head with no CPU
and two worker nodes, ray.cluster_utils.Cluster) running a 6-point simulated sweep across both workers while one
worker is killed in the middle of a point: that point is retried once on the other, every point completes, and
each run says where it ran. Then a mininet point, which only a worker advertising specnet_root may take."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from testbed.cluster.sweep import Job, UnsafeArchive, options, unpack
from testbed.cluster.task import SCRATCH_ENV

REPO = Path(__file__).resolve().parent.parent
SWEEP = "experiments/papers/goodspeed/qwen3-4.yaml"          # 6 points, simulated
# short points, and top-8 drafts instead of the full distribution: the simulator's packet-level network then
# carries a few hundred packets per round, not thousands (a point takes about 3 s instead of 9)
SHORT = ["--set", "workload.duration_s=3", "--set", "speculation.payload=topk:8"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error") or "--" in ln]
    assert any(all(n in ln for n in needles) for ln in lines), r.stderr


# --- bad input: exit 2, one line, nothing started ---------------------------------------------------------------

def test_an_unreachable_cluster_is_refused_in_one_line(tmp_path):
    port = _closed_port()
    t0 = time.monotonic()
    r = _cli("run", SWEEP, "--cluster", f"ray://127.0.0.1:{port}", "--results", str(tmp_path))
    _one_line_error(r, f"127.0.0.1:{port}", "unreachable")
    assert time.monotonic() - t0 < 60 and not any(tmp_path.iterdir())
    r = _cli("reproduce", "goodspeed", "--quick", "--no-docs", "--cluster", f"ray://127.0.0.1:{port}",
             "--results", str(tmp_path))
    _one_line_error(r, f"127.0.0.1:{port}", "unreachable")
    assert not (tmp_path / "reproduce").exists()


@pytest.mark.parametrize("option", ["ray:/x", "http://head:10001", "ray://head", "ray://head:99999", "slurm"])
def test_a_malformed_cluster_option_names_the_accepted_forms(tmp_path, option):
    r = _cli("run", SWEEP, "--cluster", option, "--results", str(tmp_path))
    _one_line_error(r, f"--cluster {option!r}", "ray://HOST:PORT")


def test_no_cluster_at_all_is_said(tmp_path):
    if Path("/tmp/ray/ray_current_cluster").exists():     # `ray start --head` ran here: `ray` means that cluster
        pytest.skip("a Ray cluster's address is recorded on this machine (/tmp/ray/ray_current_cluster)")
    r = _cli("run", SWEEP, "--cluster", "ray", "--results", str(tmp_path), env={"RAY_ADDRESS": ""})
    _one_line_error(r, "no Ray cluster here")


@pytest.mark.parametrize("point", ["0", "7", "-1"])
def test_a_point_outside_the_sweep_is_refused(point):
    r = _cli("run", SWEEP, "--point", point, "--dry-run")
    _one_line_error(r, f"--point {point}", "6 run(s)")


def test_an_experiment_outside_the_project_is_refused_with_why(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text((REPO / SWEEP).read_text().replace("topology: lan-4.yaml",
                                                        f"topology: {REPO / SWEEP.rsplit('/', 1)[0]}/lan-4.yaml"))
    r = _cli("run", str(mine), "--dry-run", "--cluster", "ray")
    _one_line_error(r, str(mine), "outside the project")


def test_cluster_and_inventory_together_are_refused(tmp_path):
    inv = tmp_path / "hosts.yaml"
    inv.write_text("hosts: {}\n")
    r = _cli("run", SWEEP, "--cluster", "ray", "--inventory", str(inv))
    _one_line_error(r, "--cluster and --inventory")


def test_placement_asks_ray_for_a_cpu_and_mininet_points_for_specnet_root():
    sim, emu = Job("a", [], "sim", Path("r")), Job("b", [], "mininet", Path("r"))
    assert options(sim) == {"num_cpus": 1, "max_retries": 0, "retry_exceptions": False}
    assert options(emu)["resources"] == {"specnet_root": 1} and options(emu)["max_retries"] == 0


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"{}") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


@pytest.mark.parametrize("bad", [
    _file("../escape.txt"), _file("/etc/evil"), _file("exp/run/../../../escape"),
    (lambda i: (setattr(i, "type", tarfile.SYMTYPE), setattr(i, "linkname", "/etc/passwd"), (i, None))[-1])(
        tarfile.TarInfo("exp/run/link")),
    (lambda i: (setattr(i, "type", tarfile.CHRTYPE), (i, None))[-1])(tarfile.TarInfo("exp/run/dev")),
])
def test_unpack_refuses_what_could_land_outside_results(tmp_path, bad):
    dest = tmp_path / "results"
    with pytest.raises(UnsafeArchive):
        unpack(_tar([_file("exp/run1/metrics.json"), bad]), dest)
    assert not (tmp_path / "escape.txt").exists() and not list(dest.rglob("metrics.json"))
    assert not list(dest.glob(".incoming-*"))


def test_unpack_places_runs_and_never_overwrites_one(tmp_path):
    data = _tar([_file("exp/20260101T000000Z-abc/metrics.json", b'{"a": 1}')])
    first, second = unpack(data, tmp_path), unpack(data, tmp_path)
    assert first == [tmp_path / "exp" / "20260101T000000Z-abc"]
    assert second == [tmp_path / "exp" / "20260101T000000Z-abc-2"]
    assert json.loads((second[0] / "metrics.json").read_text()) == {"a": 1}


def test_a_dead_workers_scratch_directory_is_removed_by_the_next_task_there(tmp_path):
    from testbed.cluster.task import remove_orphans
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan, live, starting = (tmp_path / f"specnet-point-{n}" for n in ("a", "b", "c"))
    for d, pid in ((orphan, dead.pid), (live, os.getpid())):
        d.mkdir()
        (d / "point.json").write_text(json.dumps({"pid": pid}))
    starting.mkdir()                       # no point.json yet: a task that is starting
    assert remove_orphans(tmp_path) == [orphan]
    assert not orphan.exists() and live.exists() and starting.exists()


# --- a real Ray cluster on this machine ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head with no CPU (it runs no point) and two worker nodes of one CPU each; workers inherit the scratch
    directory's variable from this process, which is how the test sees which node runs which point."""
    pytest.importorskip("ray", reason="the cluster extra (make setup installs it)")
    from ray.cluster_utils import Cluster
    scratch = tmp_path_factory.mktemp("scratch")
    old = os.environ.get(SCRATCH_ENV)
    os.environ[SCRATCH_ENV] = str(scratch)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        workers = [c.add_node(num_cpus=1), c.add_node(num_cpus=1)]
        c.wait_for_nodes()
        yield c, workers, scratch
    finally:
        c.shutdown()
        if old is None:
            os.environ.pop(SCRATCH_ENV, None)
        else:
            os.environ[SCRATCH_ENV] = old


def test_mininet_points_without_a_specnet_root_worker_are_refused_before_anything_runs(cluster, tmp_path):
    c, _, _ = cluster
    r = _cli("run", SWEEP, "--set", "backend=mininet", "--cluster", "ray", "--results", str(tmp_path),
             env={"RAY_ADDRESS": c.address})
    _one_line_error(r, "6 mininet point(s)", "specnet_root")
    assert not any(tmp_path.iterdir())


def _markers(scratch: Path) -> list[dict]:
    out = []
    for marker in scratch.glob("specnet-point-*/point.json"):
        try:
            out.append(json.loads(marker.read_text()))
        except (OSError, ValueError):
            pass
    return out


def test_ctrl_c_stops_the_running_points_and_brings_back_what_they_wrote(cluster, tmp_path):
    c, workers, scratch = cluster
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", SWEEP, "--cluster", "ray", "--results",
                             str(tmp_path)], cwd=REPO, env={**os.environ, "RAY_ADDRESS": c.address},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(_markers(scratch)) < 2 and time.monotonic() < deadline:   # both workers are running a point
            time.sleep(0.2)
        assert len(_markers(scratch)) == 2, "two points never started"
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    # each worker ran one point at a time: the two running ones came back, stopped, with what they wrote
    runs = sorted(p.parent for p in tmp_path.glob("goodspeed-qwen3-4/*/manifest.json"))
    assert len(runs) == 2, err[-3000:]
    for d in runs:
        man = json.loads((d / "manifest.json").read_text())
        assert man["status"] == "interrupted" and (d / "metrics.json").exists() and man["cluster"]["node_id"]
    assert {json.loads((d / "cluster.json").read_text())["node_id"] for d in runs} == {w.node_id for w in workers}
    assert err.count(": interrupted in 0 s: not started") == 4, err[-3000:]
    assert "Traceback" not in err
    time.sleep(1)
    assert not _markers(scratch)             # every task cleaned its scratch directory
    assert str(scratch) not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def _kill_on_second_point(c, workers, scratch: Path, killed: dict, stop: threading.Event) -> None:
    """Watches the workers' scratch directories (task.py's point.json); the first worker seen starting a second
    point is removed from the cluster at once, SIGKILL, no grace: its point is lost mid-run."""
    seen: dict[str, set] = {}
    while not stop.is_set():
        for marker in scratch.glob("specnet-point-*/point.json"):
            try:
                p = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            keys = seen.setdefault(p["node_id"], set())
            keys.add(p["key"])
            if len(keys) == 2:
                node = next(w for w in workers if w.node_id == p["node_id"])
                time.sleep(1.0)              # inside the point (3-5 s on this machine), past its start
                c.remove_node(node, allow_graceful=False)
                killed.update(node_id=p["node_id"], key=p["key"])
                return
        time.sleep(0.1)


def test_a_sweep_runs_across_both_workers_and_survives_one_killed_mid_point(cluster, tmp_path):
    c, workers, scratch = cluster
    killed: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_on_second_point, args=(c, workers, scratch, killed, stop), daemon=True)
    watcher.start()
    try:
        r = _cli("run", SWEEP, *SHORT, "--cluster", "ray", "--results", str(tmp_path), env={"RAY_ADDRESS": c.address},
                 timeout=400)
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was killed: the watcher never saw a node start its second point"
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    runs = sorted(p.parent for p in tmp_path.glob("goodspeed-qwen3-4/*/metrics.json"))
    assert len(runs) == 6
    records = {json.loads((d / "manifest.json").read_text())["label"]: json.loads((d / "cluster.json").read_text())
               for d in runs}
    assert len(records) == 6
    for d in runs:                    # the manifest says the same as cluster.json, and the run completed
        man = json.loads((d / "manifest.json").read_text())
        assert man["cluster"] == json.loads((d / "cluster.json").read_text()) and man["status"] == "complete"
    # both workers ran points; the killed one completed one before it was lost
    by_node = {}
    for label, rec in records.items():
        by_node.setdefault(rec["node_id"], []).append(label)
    assert set(by_node) == {w.node_id for w in workers}, by_node
    assert by_node[killed["node_id"]]
    # the lost point: two tries, the first lost (Ray's reason recorded), the second on the surviving worker
    retried = records[killed["key"]]
    assert len(retried["tries"]) == 2 and "lost" in retried["tries"][0], retried
    assert retried["node_id"] != killed["node_id"]
    assert all(len(rec["tries"]) == 1 for label, rec in records.items() if label != killed["key"])
    assert f"{killed['key']}: worker lost" in r.stderr and "retrying once" in r.stderr
    # the comparison table has a "ran on" row naming the node of every column, and the retried one's try
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("| ran on"))
    assert row.count("(node ") == 6 and "try 2" in row
    # the lost point's child went with its worker (PR_SET_PDEATHSIG): no `testbed.cli run` left of this sweep
    time.sleep(2)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(scratch) not in ps


def test_a_mininet_point_goes_only_to_the_worker_advertising_specnet_root(cluster, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a mininet point needs root (CI runs as root)")
    c, _, _ = cluster
    root_node = c.add_node(num_cpus=1, resources={"specnet_root": 1})
    c.wait_for_nodes()
    r = _cli("run", SWEEP, "--set", "backend=mininet", *SHORT, "--point", "2", "--cluster", "ray",
             "--results", str(tmp_path), env={"RAY_ADDRESS": c.address}, timeout=300)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    (run,) = [p.parent for p in tmp_path.glob("goodspeed-qwen3-4/*/metrics.json")]
    rec = json.loads((run / "cluster.json").read_text())
    assert rec["node_id"] == root_node.node_id
    man = json.loads((run / "manifest.json").read_text())
    assert man["backend"] == "mininet" and man["label"] == "C=24 scheduler=fixed" and man["status"] == "complete"


def test_a_reproduce_suite_runs_its_points_on_the_cluster_with_logs_and_runs_where_they_go_here(cluster, tmp_path,
                                                                                               monkeypatch):
    import ray
    from testbed.common.raycluster import connect
    from testbed.reproduce import driver, goodspeed, suite
    c, _, _ = cluster
    monkeypatch.setenv("RAY_ADDRESS", c.address)
    pts = [p for p in goodspeed.points(True) if p.key in ("qwen3-4/C24/goodspeed", "qwen3-4/C24/fixed")]
    pts = [suite.Point(p.key, p.file, p.sets[:1] + ("workload.duration_s=3", "speculation.payload=topk:8"), p.drafters, "sim") for p in pts]
    lines = []
    try:
        runner = suite.Runner(tmp_path, jobs=1, progress=lines.append, cluster=connect("ray"))
        done = runner.run(pts)
        # --resume: both complete points are kept (their logs name the same command); nothing is placed
        again = suite.Runner(tmp_path, jobs=1, progress=lines.append, cluster=connect("ray"), resume=True).run(pts)
    finally:
        ray.shutdown()
    assert all(r.message == suite.KEPT and r.run_dir == done[k].run_dir for k, r in again.items())
    assert sum("point(s) on the Ray cluster" in ln for ln in lines) == 1
    assert [done[p.key].status for p in pts] == ["complete", "complete"], [r.message for r in done.values()]
    for p in pts:
        r = done[p.key]
        assert r.run_dir.parent.parent == tmp_path / "runs" / p.key          # where `reproduce` analyses it
        record = json.loads((r.run_dir / "cluster.json").read_text())
        assert record["address"] == c.address
        assert driver._ran_on(r.run_dir) == {"ran_on": record["ran_on"]}      # reproduce.json's points say it
        assert r.log.read_text().startswith("$ testbed run experiments/papers/goodspeed/qwen3-4.yaml")
    assert any("2 point(s) on the Ray cluster" in ln for ln in lines)
