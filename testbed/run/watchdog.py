"""A run's watchdog: a process of its own that cleans up after a runner killed without a chance to do it.

`testbed run` (mininet and local backends) starts one per run and holds the write end of a pipe to it. A runner
that ends normally writes `done` and the watchdog exits. If the pipe reaches EOF without `done`, the runner
died (SIGKILL, OOM killer, a crash in teardown): the watchdog then kills the run's processes (every node, delay
daemon and Mininet shell carries SPECNET_RUN=<id>), deletes its bridges and links, removes its registry entry,
marks its manifest `killed` and writes the metrics of whatever the logs hold. Nodes also get SIGTERM from the
kernel the moment the runner dies (runs.die_with_parent); the watchdog is what removes the rest.

The watchdog sits in a session of its own, so a Ctrl-C or a hang-up meant for the runner does not reach it.
`testbed clean` and the next `testbed run` do the same for a run whose watchdog was killed too (`reap`).

    python -m testbed.run.watchdog FD RUN_ID      (started by `Watchdog.start`, not by hand)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from testbed.net.runs import CleanReport, Run, clean

KILLED = "killed"


class Watchdog:
    def __init__(self, run: Run, log: Path):
        read_end, self._write_end = os.pipe()      # both non-inheritable: no node holds the pipe open
        out = open(log, "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "testbed.run.watchdog", str(read_end), run.id],
                                         pass_fds=(read_end,), start_new_session=True, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         env={k: v for k, v in os.environ.items() if k != "SPECNET_RUN"})
        finally:
            os.close(read_end)
            out.close()

    def done(self) -> None:
        """The run was torn down by its runner: nothing for the watchdog to do."""
        self._close(b"done\n")

    def reap_now(self) -> None:
        """The runner's own teardown failed: let the watchdog remove what is left, and wait for it."""
        self._close(b"")
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass

    def _close(self, word: bytes) -> None:
        if self._write_end is None:
            return
        try:
            if word:
                os.write(self._write_end, word)
        finally:
            os.close(self._write_end)
            self._write_end = None
        if word:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def mark_killed(run_dir: Path, why: str) -> bool:
    """A manifest still `running` becomes `killed`, and the partial logs' metrics are written. A manifest the
    runner already finalised is left alone (the runner died after writing it)."""
    from testbed.run import manifest as manifest_mod
    try:
        man = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(man, dict) or man.get("status") != "running":
        return False
    man = manifest_mod.final(man, KILLED, why)
    manifest_mod.write(run_dir, man)
    from testbed.run.runner import _write_results as write_results
    write_results(run_dir, man)
    return True


def reap(run_ids: list[str] | None = None, include_live: bool = False,
         why: str = "the runner died without stopping the run (killed?); cleaned up afterwards") -> CleanReport:
    """`runs.clean`, then every cleaned experiment run's manifest marked killed with its partial metrics."""
    report = clean(run_ids, include_live=include_live)
    for run_dir in report.run_dirs:
        try:
            if mark_killed(Path(run_dir), why):
                report.marked.append(run_dir)
        except Exception as e:        # one broken run directory must not stop the rest from being cleaned
            print(f"warning: could not finalise {run_dir}: {type(e).__name__}: {e}", file=sys.stderr)
    return report


def main(argv: list[str]) -> int:
    fd, run_id = int(argv[0]), argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    said = b""
    while chunk := os.read(fd, 64):
        said += chunk
    if said.startswith(b"done"):
        return 0
    report = reap([run_id], include_live=True,
                  why="the runner died without stopping the run (killed?); the watchdog cleaned up and wrote "
                      "the partial results")
    print(f"watchdog of run {run_id}: {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
