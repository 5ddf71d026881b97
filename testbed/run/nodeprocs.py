"""The node processes of one run: started in emulated hosts (mininet), on this machine (local) or on real hosts
(an inventory: testbed/run/realhosts.py), each logging to RUN/logs/<name>.log; restarted after a node fault."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from nodes.config import write_private
from testbed.net.runs import Run, die_with_parent


class Nodes:
    """Starts node processes in emulated hosts (mininet) or on this machine (local), logs to files."""

    def __init__(self, emu, run_dir: Path, run: Run, real=None):
        self.emu, self.run_dir, self.run = emu, run_dir, run
        self.real = real                        # RealHosts: hosts whose node runs on a real machine (inventory)
        self.procs: dict[str, subprocess.Popen] = {}
        self.kinds: dict[str, str] = {}         # name -> drafter | verifier | client (a user's)
        self.started: dict[str, tuple[str, list[str]]] = {}    # name -> (host, argv): a node fault restarts it
        (run_dir / "logs").mkdir(exist_ok=True)

    def address(self, host: str) -> str:
        return str(self.emu.net_plan.ip(host)) if self.emu else "127.0.0.1"

    def start(self, name: str, host: str, argv: list[str], mode: str = "w") -> subprocess.Popen:
        self.started.setdefault(name, (host, argv))        # as first started: a restart derives from it
        out = open(self.run_dir / "logs" / f"{name}.log", mode)
        kw = dict(stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        # local: tagged with the run's id and dying with the runner, as Emulation.popen does in Mininet's hosts
        if self.real is not None and host in self.real:
            out.close()                         # the real host's log is mirrored into it (realhosts.py)
            p = self.real.start_node(name, host, argv, self.run_dir.resolve(), mode)
        else:
            p = self.emu.popen(host, argv, **kw) if self.emu else subprocess.Popen(
                argv, env=self.run.env(), preexec_fn=die_with_parent(), **kw)
        self.procs[name] = p
        self.kinds[name] = "client" if "nodes.client" in argv else "drafter" if "nodes.drafter" in argv else "verifier"
        return p

    def restart(self, name: str, elapsed_s: float) -> subprocess.Popen:
        """The node again, after a node fault killed it: its log continues; a drafter keeps its finished sessions
        and, in a timed workload, starts sessions only for what is left of the run's duration_s (its own clock
        starts again at its restart)."""
        host, argv = self.started[name]
        if self.kinds[name] == "drafter":
            config = json.loads(Path(argv[-1]).read_text())
            w = config.get("workload", {})
            if w.get("duration_s") is not None:
                w["duration_s"] = max(1e-3, w["duration_s"] - elapsed_s)
                path = Path(argv[-1]).with_name(f"{name}.restart.json")
                write_private(path, json.dumps(config, indent=1))    # it may hold a CURVE secret key
                argv = argv[:-1] + [str(path)]
            argv = argv + ["--resume"]
        return self.start(name, host, argv, mode="a")

    def name_of(self, node: str) -> str:
        """A node fault's `node`: a node's name, or a verifier's host (the one verifier is named "verifier")."""
        if node in self.procs:
            return node
        return next((n for n, (host, _) in self.started.items() if host == node), node)

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.run_dir / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    " + l for l in text[-lines:])

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
