"""`TcBatch`: one persistent `tc -force -batch -` per namespace, for live link changes.

A fork/exec of tc costs 1.7-3.2 ms; a line into a running batch about 0.035 ms (research/netemu.md §4).
After each group of lines we ask tc to show one class and wait for that line: tc answers commands in
order and writes errors to stderr before it, so when the marker arrives every error of the group is
already readable, and a failed change raises instead of passing silently.

A batch tc grows by about a kilobyte per command it reads (iproute2 6.1; `make soak` measured 29 MB after 75 s
of 32 channel-driven links, and 1.5 GB over 30 minutes across the run's batches), so each process is replaced
by a fresh one after RECYCLE_LINES lines: one fork/exec every half minute or so instead of unbounded memory.
"""
from __future__ import annotations

import os
import select
import subprocess

from testbed.common.errors import ShapingError


RECYCLE_LINES = 10_000


class TcBatch:
    def __init__(self, prefix: list[str], marker_intf: str, env: dict | None = None, timeout: float = 3.0,
                 recycle_lines: int = RECYCLE_LINES):
        self.argv = prefix + ["tc", "-force", "-batch", "-"]
        self.marker = f"class show dev {marker_intf} classid 5:1\n"
        self.timeout, self.env, self.recycle_lines = timeout, env, recycle_lines
        self.lines = 0                # read by the current process
        self.recycled = 0             # processes replaced
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1, env=self.env)
        os.set_blocking(proc.stderr.fileno(), False)
        return proc

    def apply(self, lines: list[str]) -> None:
        if self.lines >= self.recycle_lines:       # its memory grows with every line it has read
            self.close()
            self.proc, self.lines = self._spawn(), 0
            self.recycled += 1
        self.lines += len(lines) + 1
        if self.proc.poll() is not None:
            raise ShapingError(" ".join(self.argv), self.proc.returncode, self._stderr())
        self.proc.stdin.write("".join(line + "\n" for line in lines) + self.marker)
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready or not self.proc.stdout.readline():
            raise ShapingError("; ".join(lines), -1, f"tc batch did not answer within {self.timeout} s. "
                               + self._stderr())
        err = self._stderr()
        if err:
            raise ShapingError("; ".join(lines), 1, err)

    def _stderr(self) -> str:
        try:
            return self.proc.stderr.read() or ""
        except (BlockingIOError, TypeError):
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
