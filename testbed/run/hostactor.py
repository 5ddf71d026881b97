"""The Ray actor that runs a run's node on a real host (a GPU server, an edge board): placed by the host's
resource label, it starts `python -m nodes.<kind> --config FILE` there as a real process and hands its files
back in pieces while it runs. The runner talks to it through testbed/run/realhosts.py.

Everything of one run lives under a scratch directory on the host, removed at the end. The node dies with the
actor (PR_SET_PDEATHSIG), and Ray kills the actor when the runner (its owner) dies: a killed runner leaves
nothing running on the real host. Only the runner's own files cross: paths are checked to stay in the scratch
directory, nothing received is unpickled by this code (Ray's own transport carries plain bytes and dicts).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAX_CHUNK = 4 << 20          # bytes of one file handed back per call: a burst of events comes in a few calls


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"{rel!r} leaves the run's scratch directory")
    return path


def _remove_orphans(root: Path, mine: Path) -> list[Path]:
    """Scratch directories under `root` whose owning actor process is gone (a killed run's)."""
    from testbed.net.runs import _proc_start_time
    removed = []
    for d in root.glob("specnet-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-*"):
        if d == mine or not d.is_dir() or d.is_symlink():
            continue
        try:                      # no readable owner file: not one of ours, left alone
            pid, start = (d / "owner").read_text().split(" ", 1)
            alive = _proc_start_time(int(pid)) == start
        except (OSError, ValueError):
            continue
        if not alive:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


class NodeHost:
    """One per real host and run. Methods are called by the runner through Ray (`actor.method.remote`)."""

    def __init__(self, run_id: str, scratch_root: str | None = None):
        root = scratch_root or os.environ.get("SPECNET_REALHOST_SCRATCH") or tempfile.gettempdir()
        Path(root).mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"specnet-{run_id}-", dir=root)).resolve()
        for sub in ("events", "outputs", "logs", "nodes"):      # as the runner makes them in a run directory
            (self.dir / sub).mkdir()
        self.procs: dict[str, subprocess.Popen] = {}
        # A killed runner's actor is killed with SIGKILL (and its children with it) and cannot remove its scratch
        # directory: each directory names its owner, and the next actor on this host removes orphans.
        from testbed.net.runs import _proc_start_time
        (self.dir / "owner").write_text(f"{os.getpid()} {_proc_start_time(os.getpid())}")
        _remove_orphans(Path(root), self.dir)
        self.gates: dict[str, int] = {}
        self.project = Path.cwd().resolve()      # Ray's runtime_env working_dir: the runner's project, shipped

    def info(self) -> dict:
        import ray
        ctx = ray.get_runtime_context()
        return {"hostname": socket.gethostname(), "node_ip": ray.util.get_node_ip_address(),
                "node_id": ctx.get_node_id(), "python": sys.executable, "dir": str(self.dir),
                "project": str(self.project), "time": time.time(), "pid": os.getpid()}

    def now(self) -> float:
        return time.time()

    def put(self, rel: str, data: bytes) -> None:
        path = _inside(self.dir, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)              # a node reading linkstate.json never sees half a file

    def mkfifo(self, rel: str) -> None:
        path = _inside(self.dir, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        os.mkfifo(path)

    def start(self, name: str, module: str, config_rel: str, log_rel: str, python: str | None = None,
              extra: list[str] | None = None, append: bool = False) -> int:
        if module not in ("nodes.verifier", "nodes.drafter"):
            raise ValueError(f"not a node module: {module!r}")
        from testbed.net.runs import die_with_parent
        config, log = _inside(self.dir, config_rel), _inside(self.dir, log_rel)
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [python or sys.executable, "-m", module, "--config", str(config), *(extra or [])]
        with open(log, "ab" if append else "wb") as out:
            self.procs[name] = subprocess.Popen(argv, cwd=self.project, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent(),
                                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self.procs[name].pid

    def signal(self, name: str, sig: int) -> None:
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            p.send_signal(sig)

    def sync(self, offsets: dict[str, int]) -> dict:
        """Exit codes of every node so far, and each file's bytes past the offset given (up to MAX_CHUNK)."""
        files = {}
        for rel, offset in offsets.items():
            try:
                with open(_inside(self.dir, rel), "rb") as f:
                    f.seek(offset)
                    data = f.read(MAX_CHUNK)
            except FileNotFoundError:
                continue
            if data:
                files[rel] = data
        return {"rc": {n: p.poll() for n, p in self.procs.items()}, "files": files}

    def hold_gate(self, rel: str) -> bool:
        """Open a drafter's start gate for writing once it waits there (as runner._open_gates does locally)."""
        if rel in self.gates:
            return True
        try:
            self.gates[rel] = os.open(_inside(self.dir, rel), os.O_WRONLY | os.O_NONBLOCK)
            return True
        except OSError:          # ENXIO: its reader is not there yet
            return False

    def release_gates(self) -> None:
        for fd in self.gates.values():
            os.close(fd)
        self.gates.clear()

    def stop(self, grace_s: float = 10.0) -> dict:
        self.release_gates()
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.wait()
        return {n: p.returncode for n, p in self.procs.items()}

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- shaping the host's own link (inventory `shape:`) ----------------------------------------------------
    def run_commands(self, cmds: list[list[str]]) -> None:
        """Run tc / ip commands built by the runner (realhosts.shaping_commands), each checked: a host whose
        link cannot be shaped must not run unshaped."""
        for argv in cmds:
            if argv[0] not in ("tc", "ip", "ethtool"):
                raise ValueError(f"not a shaping command: {argv[0]!r}")
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed (exit {r.returncode}): "
                                   f"{(r.stderr or r.stdout).strip()[:300]}")

    def undo_commands(self, cmds: list[list[str]]) -> None:
        for argv in cmds:                  # best effort: each may already be gone
            if argv[0] in ("tc", "ip", "ethtool"):
                subprocess.run(argv, capture_output=True, timeout=10)

    def offloads(self, intf: str) -> dict[str, str]:
        """The interface's tso/gso/gro settings now (restored after the run)."""
        r = subprocess.run(["ethtool", "-k", intf], capture_output=True, text=True, timeout=10)
        names = {"tcp-segmentation-offload": "tso", "generic-segmentation-offload": "gso",
                 "generic-receive-offload": "gro"}
        out = {}
        for line in r.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in names:
                out[names[key.strip()]] = value.split()[0] if value.split() else "off"
        return out

    def sent_bytes(self, intfs: list[str]) -> dict[str, int]:
        """Bytes each interface's shaper (HTB class 5:1) has sent."""
        import re
        out = {}
        for intf in intfs:
            r = subprocess.run(["tc", "-s", "class", "show", "dev", intf, "classid", "5:1"], capture_output=True,
                               text=True, timeout=10)
            m = re.search(r"Sent (\d+) bytes", r.stdout)
            out[intf] = int(m.group(1)) if m else -1
        return out
