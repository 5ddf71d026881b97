"""Per-run names, the run registry, and cleanup of what dead runs left behind.

Every run gets a 4-hex id. Its bridges are named `sn<id>s<i>` and every process it starts (Mininet host
shells, delay daemons, tc batch processes, probes) carries SPECNET_RUN=<id> in its environment, so cleanup
can find exactly one run's leftovers and nothing else. Mininet's own global cleanup is never used: it kills
other runs' shells and every ping on the machine.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ENV_VAR = "SPECNET_RUN"
BRIDGE_RE = re.compile(r"^sn([0-9a-f]{4})[sg]\d+(-eth\d+)?$")    # bridges (s) and real-host gateways (g)


def registry_dir() -> Path:
    """Root's runs register in /run/specnet (cleared at boot); another user's (a local run) in /tmp."""
    default = "/run/specnet" if os.geteuid() == 0 else f"/tmp/specnet-{os.geteuid()}"
    return Path(os.environ.get("SPECNET_RUN_DIR", default))


PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM):
    """A Popen `preexec_fn`: the child gets `sig` when the process that started it dies, even by SIGKILL, so no
    node outlives its runner. Survives exec (and mnexec, which execs). If the parent died between fork and this
    call, the signal would never come: the child then ends itself at once."""
    parent = os.getpid()

    def preexec() -> None:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
    return preexec


def _proc_start_time(pid: int) -> str | None:
    """Start time of a process in clock ticks, to tell a live owner from a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass
class Run:
    id: str
    topology: str
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)
    run_dir: str | None = None      # an experiment run's results: `clean` marks its manifest killed

    @classmethod
    def new(cls, topology: str, run_dir: Path | None = None) -> "Run":
        used = set(run_ids_in_registry()) | {m.group(1) for m in map(BRIDGE_RE.match, link_names()) if m}
        while True:
            rid = secrets.token_hex(2)
            if rid not in used:
                return cls(rid, topology, run_dir=str(Path(run_dir).resolve()) if run_dir else None)

    @property
    def file(self) -> Path:
        return registry_dir() / f"{self.id}.json"

    def register(self) -> None:
        registry_dir().mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")        # atomic: a runner killed mid-write leaves no half entry
        tmp.write_text(json.dumps({"id": self.id, "pid": self.pid, "pid_start": _proc_start_time(self.pid),
                                   "topology": self.topology, "started": self.started, "run_dir": self.run_dir}))
        tmp.replace(self.file)

    def unregister(self) -> None:
        self.file.unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        return {**os.environ, ENV_VAR: self.id}


def run_ids_in_registry() -> list[str]:
    d = registry_dir()
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def registry_entry(run_id: str) -> dict:
    try:
        entry = json.loads((registry_dir() / f"{run_id}.json").read_text())
        return entry if isinstance(entry, dict) else {}
    except (OSError, ValueError):
        return {}


def is_live(run_id: str) -> bool:
    entry = registry_entry(run_id)
    try:
        return _proc_start_time(int(entry["pid"])) == entry.get("pid_start")
    except (KeyError, TypeError, ValueError):
        return False


def link_names() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def processes_of(run_id: str) -> list[int]:
    """PIDs whose environment says they belong to `run_id` (never this process)."""
    tag = f"{ENV_VAR}={run_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if tag in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def links_of(run_id: str) -> list[str]:
    return [n for n in link_names() if (m := BRIDGE_RE.match(n)) and m.group(1) == run_id]


@dataclass
class CleanReport:
    runs: list[str] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    skipped_live: list[str] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)      # results of the cleaned runs (experiment runs only)
    marked: list[str] = field(default_factory=list)        # of those, the ones whose manifest said running

    def __str__(self) -> str:
        if not self.runs:
            live = f" ({len(self.skipped_live)} live run(s) left alone: {', '.join(self.skipped_live)})" if self.skipped_live else ""
            return "nothing to clean" + live
        lines = [f"cleaned run(s) {', '.join(self.runs)}: killed {len(self.killed)} process(es), "
                 f"deleted {len(self.links)} link(s)/bridge(s)"]
        if self.marked:
            lines.append(f"marked killed, with partial metrics: {', '.join(self.marked)}")
        if self.skipped_live:
            lines.append(f"left live run(s) alone: {', '.join(self.skipped_live)}")
        return "\n".join(lines)


def _kill(pids: list[int], grace: float = 1.0) -> list[int]:
    killed = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                continue
        killed += [p for p in alive if p not in killed]
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if Path(f"/proc/{p}").exists() and _proc_state(p) != "Z"]
            time.sleep(0.02)
        if not alive:
            break
        pids = alive
    return killed


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def clean(run_ids: list[str] | None = None, include_live: bool = False) -> CleanReport:
    """Remove the leftovers of the given runs (default: every run whose owner process is gone)."""
    report = CleanReport()
    if run_ids is None:
        seen = set(run_ids_in_registry()) | {m.group(1) for m in map(BRIDGE_RE.match, link_names()) if m}
        run_ids = sorted(seen)
    for rid in run_ids:
        if not re.fullmatch(r"[0-9a-f]{4}", rid):
            raise ValueError(f"run id must be 4 hex digits, got {rid!r}")
        if is_live(rid) and not include_live:
            report.skipped_live.append(rid)
            continue
        report.runs.append(rid)
        if isinstance(run_dir := registry_entry(rid).get("run_dir"), str):
            report.run_dirs.append(run_dir)
        report.killed += _kill(processes_of(rid))
        # Bridges first: their ports go with them or with the host namespaces that just emptied.
        for name in sorted(links_of(rid), key=lambda n: "-eth" in n):
            if subprocess.run(["ip", "link", "del", name], capture_output=True).returncode == 0:
                report.links.append(name)
        from testbed.net.gateway import drop_rules     # a real-host gateway's rules in the root namespace
        report.links += drop_rules(rid)
        (registry_dir() / f"{rid}.json").unlink(missing_ok=True)
    return report
