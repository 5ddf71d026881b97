"""The worker's side of a point on a Ray cluster: run `testbed run ...` as a child, return its results as bytes.

Runs inside a Ray task whose working directory is the driver's project (shipped at ray.init, raycluster.py), so
the worker runs the driver's code and experiment files with its own Python. The child dies with the task
(PR_SET_PDEATHSIG: a lost worker leaves no run behind; SIGTERM lets a mininet run take its network down). The
driver's Ctrl-C cancels the task (ray.cancel: a KeyboardInterrupt here); the task then stops its child the same
way and hands what the run wrote to the driver's Collector, since a cancelled task's return value is lost.
The task makes no other Ray call while its child runs: a task blocked in ray.get lends its CPU back to Ray,
which would start another point on this worker beside the running one.
"""
from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

# Where a point's scratch directory goes on the worker (default: the system's temporary directory). Each holds
# point.json (which point, which try, which node: what a test looks for to kill the worker mid-point).
SCRATCH_ENV = "SPECNET_CLUSTER_SCRATCH"
LOG_TAIL_BYTES = 64 * 1024
STOP_GRACE_S = 30.0
POLL_S = 1.0


def _node() -> dict:
    import ray
    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "host": socket.gethostname()}


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _tarball(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        if folder.is_dir():
            for child in sorted(folder.iterdir()):
                tar.add(child, arcname=child.name)
    return buf.getvalue()


class Collector:
    """The driver's actor (no CPU) that receives the results of points stopped by its Ctrl-C."""

    def __init__(self):
        self.results: dict = {}
        self.running: set = set()

    def start(self, tag: str) -> None:
        self.running.add(tag)

    def started(self) -> set:
        return set(self.running)

    def deposit(self, tag: str, result: dict) -> None:
        self.results[tag] = result

    def take(self) -> dict:
        out, self.results = self.results, {}
        return out


def _wait(proc: subprocess.Popen) -> int:
    """proc.wait() in short steps: Ray's cancel interrupts Python code, not a blocking waitpid."""
    while True:
        try:
            return proc.wait(POLL_S)
        except subprocess.TimeoutExpired:
            pass


def _stop(proc: subprocess.Popen) -> int:
    proc.terminate()
    try:
        return proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _result(rc: int, work: Path, node: dict, seconds: float) -> dict:
    return {"rc": rc, "log": _tail(work / "point.log"), "tar": _tarball(work / "results"), "seconds": seconds, **node}


def remove_orphans(root: Path) -> list[Path]:
    """Scratch directories whose task's worker is dead (SIGKILLed with its node, or force-cancelled: no `finally`
    ran there). A directory without a readable point.json is left alone: it may be starting."""
    gone = []
    for d in Path(root).glob("specnet-point-*"):
        try:
            pid = int(json.loads((d / "point.json").read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        try:
            os.kill(pid, 0)
            continue              # its worker still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue              # another user's process
        shutil.rmtree(d, ignore_errors=True)
        gone.append(d)
    return gone


def run_point(cli_args: list[str], key: str, attempt: int, collector=None) -> dict:
    """`python -m testbed.cli <cli_args> --results SCRATCH` on this worker; its exit status, the log's tail, the
    results folder as a gzipped tarball, where it ran and how long it took. `collector`: the driver's Collector."""
    from testbed.net.runs import die_with_parent
    tag = f"{key}#{attempt}"
    if collector is not None:
        collector.start.remote(tag)   # not waited for (see above)
    node = _node()
    root = os.environ.get(SCRATCH_ENV) or tempfile.gettempdir()
    Path(root).mkdir(parents=True, exist_ok=True)
    remove_orphans(Path(root))
    work = Path(tempfile.mkdtemp(prefix="specnet-point-", dir=root))
    proc, t0 = None, time.monotonic()
    try:
        (work / "point.json").write_text(json.dumps({"key": key, "attempt": attempt, "pid": os.getpid(), **node}))
        argv = [sys.executable, "-m", "testbed.cli", *cli_args, "--results", str(work / "results")]
        here = os.getcwd()            # the shipped project
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])}
        with open(work / "point.log", "w") as log:
            log.write(f"$ testbed {shlex.join(cli_args)}   (on {node['host']} {node['ip']}, try {attempt})\n")
            log.flush()
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=here, env=env,
                                    preexec_fn=die_with_parent(signal.SIGTERM))
            rc = _wait(proc)
        return _result(rc, work, node, time.monotonic() - t0)
    except KeyboardInterrupt:         # ray.cancel: the driver's Ctrl-C
        rc = _stop(proc) if proc is not None and proc.poll() is None else (proc.returncode if proc else 130)
        if collector is not None:
            import ray
            ray.get(collector.deposit.remote(tag, _result(rc, work, node, time.monotonic() - t0)), timeout=60)
        raise
    finally:
        if proc is not None and proc.poll() is None:     # anything else went wrong here: the child goes too
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
