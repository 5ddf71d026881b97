"""The worker's side of a point on a Ray cluster: run `testbed run ...` as a child, return its results as bytes.

Runs inside a Ray task whose working directory is the driver's project (shipped at ray.init, raycluster.py), so
the worker runs the driver's code and experiment files with its own Python. The child dies with the task
(PR_SET_PDEATHSIG: a lost worker leaves no run behind; SIGTERM lets a mininet run take its network down), and a
cancelled task (the driver's Ctrl-C) stops the child the same way before it returns.
"""
from __future__ import annotations

import io
import json
import os
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


def run_point(cli_args: list[str], key: str, attempt: int) -> dict:
    """`python -m testbed.cli <cli_args> --results SCRATCH` on this worker; its exit status, the log's tail, the
    results folder as a gzipped tarball, where it ran and how long it took."""
    from testbed.net.runs import die_with_parent
    node = _node()
    root = os.environ.get(SCRATCH_ENV) or tempfile.gettempdir()
    Path(root).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="specnet-point-", dir=root))
    try:
        (work / "point.json").write_text(json.dumps({"key": key, "attempt": attempt, "pid": os.getpid(), **node}))
        argv = [sys.executable, "-m", "testbed.cli", *cli_args, "--results", str(work / "results")]
        here = os.getcwd()            # the shipped project
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])}
        t0 = time.monotonic()
        with open(work / "point.log", "w") as log:
            log.write(f"$ testbed {' '.join(cli_args)}   (on {node['host']} {node['ip']}, try {attempt})\n")
            log.flush()
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=here, env=env,
                                    preexec_fn=die_with_parent(signal.SIGTERM))
            try:
                rc = proc.wait()
            except BaseException:     # cancelled (KeyboardInterrupt from ray.cancel) or the worker is going
                proc.terminate()
                try:
                    proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
        return {"rc": rc, "log": _tail(work / "point.log"), "tar": _tarball(work / "results"),
                "seconds": time.monotonic() - t0, **node}
    finally:
        shutil.rmtree(work, ignore_errors=True)
