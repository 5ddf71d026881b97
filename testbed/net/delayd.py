"""Controller for one nfqdelay daemon process (see testbed/net/nfqdelay.py for the protocol).

Single-threaded use only: requests and replies share one pipe and carry no tags, so two
threads talking to the same DelayDaemon could read each other's replies. Also start() it
from a thread that lives as long as the daemon should: PR_SET_PDEATHSIG fires when the
*thread* that forked the daemon exits, not only when the process does.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

DAEMON_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'nfqdelay.py')
REPLY_TIMEOUT_S = 2.0
STDERR_TAIL_BYTES = 2000


class DelayDaemonError(RuntimeError):
    """The daemon failed to start, replied with an error, died, or stopped answering."""


@dataclass(frozen=True)
class QueueParams:
    queue: int
    delay_ms: float = 0
    jitter_ms: float = 0
    loss: float = 0

    def spec(self) -> str:
        """The daemon's --queue SPEC; repr(float) so no precision is lost on the way."""
        return '%d,delay=%r,jitter=%r,loss=%r' % (self.queue, float(self.delay_ms),
                                                   float(self.jitter_ms), float(self.loss))


class DelayDaemon:
    """Starts nfqdelay (optionally inside a netns and under SCHED_FIFO) and talks to it."""

    def __init__(self, queues: list[QueueParams], netns_prefix: list[str] = (),
                 seed: int | None = None, realtime: bool = True, python: str = sys.executable,
                 env: dict | None = None):
        if not queues:
            raise ValueError('DelayDaemon needs at least one QueueParams')
        nums = [q.queue for q in queues]
        if len(set(nums)) != len(nums):
            raise ValueError('queue numbers must be unique, got %s' % nums)
        self.queues = list(queues)
        self.netns_prefix = list(netns_prefix)
        self.seed = seed
        self.realtime = realtime
        self.python = python
        self.env = env
        self._proc: subprocess.Popen | None = None
        self._stderr = None   # a temp file, not a pipe: a full pipe would stall the daemon
        self._buf = b''
        self._broken: str | None = None   # why the reply stream can no longer be trusted
        self._final: dict | None = None
        self._stop_error: DelayDaemonError | None = None

    # ------------------------------------------------------------ command line
    def argv(self) -> list[str]:
        cmd = list(self.netns_prefix)
        # chrt -f 50: without it release lateness reaches p99 3 ms (netemu.md 3a)
        if self.realtime and shutil.which('chrt'):
            cmd += ['chrt', '-f', '50']
        cmd += [self.python, DAEMON_PATH]
        for q in self.queues:
            cmd += ['--queue', q.spec()]
        if self.seed is not None:
            cmd += ['--seed', str(int(self.seed))]
        return cmd

    @property
    def pid(self) -> int | None:
        """Pid of the process Popen started; the daemon itself when the prefix execs
        (ip netns exec, mnexec, chrt all do), a wrapper's pid otherwise."""
        return self._proc.pid if self._proc else None

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 5.0) -> 'DelayDaemon':
        if self._proc is not None:
            raise DelayDaemonError('daemon already started (pid %d)' % self._proc.pid)
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._stderr, env=self.env, close_fds=True)
        except OSError as e:
            raise DelayDaemonError('cannot run %s: %s' % (self.argv(), e)) from e
        try:
            line = self._read_line(timeout)
        except DelayDaemonError:
            self._kill()
            raise
        if line != 'ready':
            self._kill()
            raise self._error('expected "ready", got %r' % line)
        return self

    def stop(self, timeout: float = 5.0) -> dict:
        """Send quit; return the final stats. Kills the daemon if it does not answer.
        Idempotent: later calls return the same stats (or raise the same error)."""
        if self._final is None and self._stop_error is None:
            self._stop(timeout)
        if self._stop_error is not None:
            raise self._stop_error
        return self._final

    def _stop(self, timeout: float) -> None:
        if self._proc is None:
            self._final = {}
            return
        try:
            if self._broken:
                raise self._error(self._broken)
            self._send('quit')
            self._final = self._parse_stats(self._read_line(timeout))
            self._proc.wait(timeout)
        except (DelayDaemonError, subprocess.TimeoutExpired) as e:
            self._kill()
            self._stop_error = e if isinstance(e, DelayDaemonError) else self._error(
                'did not exit within %.1f s after quit; killed' % timeout)
        finally:
            self._close_pipes()

    def __enter__(self) -> 'DelayDaemon':
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.stop()
        except DelayDaemonError:
            if exc_type is None:  # don't hide the exception that is already unwinding
                raise

    # ------------------------------------------------------------ requests
    def set(self, queue: int, delay_ms: float | None = None, jitter_ms: float | None = None,
            loss: float | None = None) -> None:
        parts = ['set', str(int(queue))]
        for key, val in (('delay', delay_ms), ('jitter', jitter_ms), ('loss', loss)):
            if val is not None:
                parts += [key, repr(float(val))]
        if len(parts) == 2:
            raise ValueError('set() needs at least one of delay_ms, jitter_ms, loss')
        reply = self._request(' '.join(parts))
        if reply != 'ok':
            raise DelayDaemonError('daemon rejected %r: %s' % (' '.join(parts), reply))

    def stats(self) -> dict:
        return self._parse_stats(self._request('stats'))

    def _request(self, line: str) -> str:
        if self._proc is None or self._final is not None or self._stop_error is not None:
            raise DelayDaemonError('daemon is not running (call start() first)')
        if self._broken:
            raise self._error(self._broken)
        self._send(line)
        return self._read_line(REPLY_TIMEOUT_S)

    # ------------------------------------------------------------ pipe plumbing
    def _send(self, line: str) -> None:
        try:
            self._proc.stdin.write((line + '\n').encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            self._broken = 'daemon stdin closed (%s)' % e
            raise self._error(self._broken) from e

    def _read_line(self, timeout: float) -> str:
        """One reply line, read straight from the fd so select() sees every byte."""
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b'\n' not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self._broken = 'no reply within %.1f s' % timeout
                raise self._error(self._broken)
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    try:
                        self._proc.wait(1.0)
                    except subprocess.TimeoutExpired:
                        pass
                    self._broken = 'daemon closed stdout (exit code %s)' % self._proc.poll()
                    raise self._error(self._broken)
                self._buf += chunk
        line, self._buf = self._buf.split(b'\n', 1)
        return line.decode('utf-8', 'replace').strip()

    def _parse_stats(self, line: str) -> dict:
        try:
            return json.loads(line)
        except ValueError:
            raise self._error('expected a stats JSON line, got %r' % line) from None

    def _error(self, why: str) -> DelayDaemonError:
        return DelayDaemonError('nfqdelay%s: %s\n  argv: %s\n  stderr: %s'
                                % (' pid %d' % self.pid if self.pid else '', why,
                                   ' '.join(self.argv()), self.stderr_tail() or '(empty)'))

    def stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ''
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - STDERR_TAIL_BYTES))
        return self._stderr.read().decode('utf-8', 'replace').strip()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            try:
                self._proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass  # unkillable (D state); PDEATHSIG still ends it with us

    def _close_pipes(self) -> None:
        for f in (self._proc.stdin, self._proc.stdout, self._stderr):
            try:
                f.close()
            except OSError:
                pass
