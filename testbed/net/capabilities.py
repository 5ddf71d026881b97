"""What this machine can do: probes for `testbed doctor` and for picking the delay backend.

Every probe returns a Capability instead of raising, so doctor can show all of them at
once; only choose_delay_backend raises, when no usable backend is left. Probes that touch
the kernel run in a throwaway network namespace (`unshare -n`): the namespace, and any
qdisc or iptables rule in it, vanishes when the probe's process exits, so nothing leaks
even if the probe is interrupted.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from testbed.net.delayd import DelayDaemon, DelayDaemonError, QueueParams

PROBE_TIMEOUT_S = 3.0
BACKEND_ENV = 'SPECNET_DELAY_BACKEND'
BACKENDS = ('netem', 'nfqueue')
NEEDS_ROOT = 'needs root'


class CapabilityError(RuntimeError):
    """A required capability (e.g. a forced delay backend) is missing on this machine."""


@dataclass(frozen=True)
class Capability:
    name: str
    ok: bool
    detail: str  # version/path when ok, why not otherwise


# ---------------------------------------------------------------- helpers

def _is_root() -> bool:
    return os.geteuid() == 0


def _run(argv: list[str], timeout: float = PROBE_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run without a shell or stdin; a timeout becomes a failed result, not an exception."""
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, '', 'timed out after %.0f s' % timeout)
    except OSError as e:
        return subprocess.CompletedProcess(argv, 127, '', str(e))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ''


def _kernel_message(proc: subprocess.CompletedProcess) -> str:
    """'Error: Specified qdisc kind is unknown.' -> 'Specified qdisc kind is unknown'."""
    msg = _first_line(proc.stderr) or _first_line(proc.stdout) or 'exit code %d' % proc.returncode
    return re.sub(r'^Error:\s*', '', msg).rstrip('.')


def _tool(name: str, version_args: list[str] | None = None) -> Capability:
    """A binary on PATH; detail is its path plus the first line of its version output."""
    path = shutil.which(name)
    if not path:
        return Capability(name, False, '%s not found on PATH' % name)
    if version_args is None:
        return Capability(name, True, path)
    proc = _run([path] + version_args)
    version = _first_line(proc.stdout) or _first_line(proc.stderr)
    return Capability(name, True, '%s (%s)' % (path, version) if version else path)


def _missing_tools(*names: str) -> str | None:
    missing = [n for n in names if not shutil.which(n)]
    return ', '.join(missing) + ' not found on PATH' if missing else None


# ---------------------------------------------------------------- individual probes

def probe_root() -> Capability:
    if _is_root():
        return Capability('root', True, 'euid 0')
    return Capability('root', False, 'euid %d: Mininet, tc and iptables need root' % os.geteuid())


def probe_mininet() -> Capability:
    spec = importlib.util.find_spec('mininet')
    if spec is None:
        return Capability('mininet', False, 'python package mininet not importable (run make setup)')
    mnexec = shutil.which('mnexec')
    if not mnexec:
        return Capability('mininet', False, 'package found but mnexec not on PATH')
    version = '?'
    for loc in spec.submodule_search_locations or ():
        # read VERSION from the source: importing mininet.net pulls in half of Mininet
        try:
            with open(os.path.join(loc, 'net.py')) as f:
                m = re.search(r'^VERSION\s*=\s*["\']([^"\']+)', f.read(), re.M)
        except OSError:
            continue
        if m:
            version = m.group(1)
            break
    return Capability('mininet', True, 'mininet %s, mnexec %s' % (version, mnexec))


def probe_iptables() -> Capability:
    """iptables plus what the testbed uses: the statistic match (loss) and NFQUEUE (delay)."""
    base = _tool('iptables', ['-V'])
    if not base.ok:
        return base
    if not _is_root():
        return Capability('iptables', False, '%s: %s' % (NEEDS_ROOT, base.detail))
    missing = _missing_tools('unshare')
    if missing:
        return Capability('iptables', False, missing)
    rules = {'statistic match': ['-m', 'statistic', '--mode', 'random', '--probability', '0.5', '-j', 'DROP'],
             'NFQUEUE target': ['-j', 'NFQUEUE', '--queue-num', '0', '--queue-bypass']}
    for what, rule in rules.items():
        proc = _run(['unshare', '-n', 'iptables', '-t', 'raw', '-A', 'PREROUTING'] + rule)
        if proc.returncode != 0:
            return Capability('iptables', False, '%s rejected: %s' % (what, _kernel_message(proc)))
    return Capability('iptables', True, base.detail + ', statistic + NFQUEUE ok')


def probe_gpu() -> Capability:
    smi = shutil.which('nvidia-smi')
    if smi:
        proc = _run([smi, '--query-gpu=name', '--format=csv,noheader'])
        if proc.returncode == 0 and proc.stdout.strip():
            return Capability('gpu', True, ', '.join(proc.stdout.split('\n')).strip(', '))
        return Capability('gpu', False, 'nvidia-smi failed: %s' % _kernel_message(proc))
    if os.path.exists('/dev/nvidia0'):
        return Capability('gpu', True, '/dev/nvidia0 (no nvidia-smi)')
    return Capability('gpu', False, 'no nvidia-smi and no /dev/nvidia0')


def probe_torch() -> Capability:
    # find_spec + metadata: importing torch would cost seconds and may touch the GPU
    if importlib.util.find_spec('torch') is None:
        return Capability('torch', False, 'python package torch not installed')
    try:
        return Capability('torch', True, 'torch ' + importlib.metadata.version('torch'))
    except importlib.metadata.PackageNotFoundError:
        return Capability('torch', True, 'torch (version unknown)')


@functools.cache
def probe_netem() -> Capability:
    """Can a netem qdisc be created? Tried on lo of a scratch netns."""
    if not _is_root():
        return Capability('netem', False, NEEDS_ROOT)
    missing = _missing_tools('unshare', 'tc')
    if missing:
        return Capability('netem', False, missing)
    proc = _run(['unshare', '-n', 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms'])
    if proc.returncode != 0:
        return Capability('netem', False, _kernel_message(proc))
    return Capability('netem', True, 'tc qdisc netem accepted')


@functools.cache
def probe_nfqueue() -> Capability:
    """Can nfqdelay bind a queue and iptables send packets to it? Tried in a scratch netns."""
    if not _is_root():
        return Capability('nfqueue', False, NEEDS_ROOT)
    missing = _missing_tools('unshare', 'nsenter', 'iptables')
    if missing:
        return Capability('nfqueue', False, missing)
    # unshare execs the daemon, so the scratch netns lives exactly as long as the daemon
    daemon = DelayDaemon([QueueParams(0)], netns_prefix=['unshare', '-n'], realtime=False)
    try:
        daemon.start(timeout=PROBE_TIMEOUT_S)
        proc = _run(['nsenter', '-t', str(daemon.pid), '-n', 'iptables', '-t', 'raw', '-A',
                     'PREROUTING', '-j', 'NFQUEUE', '--queue-num', '0', '--queue-bypass'])
    except DelayDaemonError as e:
        why = daemon.stderr_tail() or str(e).splitlines()[0]
        return Capability('nfqueue', False, 'nfqdelay did not start: %s' % why)
    finally:
        try:
            daemon.stop(timeout=PROBE_TIMEOUT_S)
        except DelayDaemonError:
            pass  # stop() has killed it and closed the pipes; the reason is reported above
    if proc.returncode != 0:
        return Capability('nfqueue', False, 'iptables NFQUEUE rule rejected: %s' % _kernel_message(proc))
    return Capability('nfqueue', True, 'nfqdelay bound queue 0; iptables NFQUEUE rule accepted')


def probe_all() -> list[Capability]:
    return [
        probe_root(),
        probe_mininet(),
        _named('bridge', _tool('brctl', ['--version'])),
        _tool('tc', ['-V']),
        probe_netem(),
        probe_nfqueue(),
        probe_iptables(),
        _tool('ethtool', ['--version']),
        _tool('chrt', ['--version']),
        probe_gpu(),
        probe_torch(),
    ]


def _named(name: str, cap: Capability) -> Capability:
    return Capability(name, cap.ok, cap.detail)


# ---------------------------------------------------------------- delay backend

def choose_delay_backend(forced: str | None = None) -> tuple[str, str]:
    """('netem' | 'nfqueue', reason). An explicit forced backend beats $SPECNET_DELAY_BACKEND;
    None or 'auto' defers to the variable, and unset/'auto' there means: netem if it works,
    else nfqueue. A forced backend the machine lacks raises CapabilityError."""
    source = 'forced by caller'
    choice = forced
    if choice in (None, 'auto'):
        choice = os.environ.get(BACKEND_ENV, '').strip() or 'auto'
        source = 'forced by $%s' % BACKEND_ENV
    if choice not in BACKENDS + ('auto',):
        raise ValueError('delay backend must be auto, netem or nfqueue, got %r (%s)' % (choice, source))
    probes = {'netem': probe_netem, 'nfqueue': probe_nfqueue}
    if choice != 'auto':
        cap = probes[choice]()
        if not cap.ok:
            raise CapabilityError('delay backend %s was %s, but %s is not available here: %s'
                                  % (choice, source, choice, cap.detail))
        return choice, source
    netem = probe_netem()
    if netem.ok:
        return 'netem', 'netem available'
    nfq = probe_nfqueue()
    if nfq.ok:
        return 'nfqueue', 'netem: %s' % netem.detail
    raise CapabilityError('no delay backend works here: netem: %s; nfqueue: %s' % (netem.detail, nfq.detail))


# What each capability is used for, and what happens without it.
USES = {
    'root': ('building networks (Mininet, tc, iptables)', 'only check and the probes run'),
    'mininet': ('hosts and bridges (LinuxBridge, no controller)', 'no network can be built'),
    'bridge': ('APs and switches as Linux bridges', 'no network can be built'),
    'tc': ('rate shaping: HTB class per link direction', 'no network can be built'),
    'netem': ('delay, jitter, loss as the HTB leaf', 'the NFQUEUE daemon does it instead'),
    'nfqueue': ('delay, jitter, loss in a userspace daemon per host', 'netem is needed'),
    'iptables': ('steering packets to the delay daemon', 'the nfqueue backend cannot work'),
    'ethtool': ('offloads off, so HTB shapes every frame', 'super-packets would leave at line rate'),
    'chrt': ('real-time priority for the delay daemon', 'daemon runs at normal priority (p99 +4 ms)'),
    'gpu': ('the verifier model on CUDA', 'models run on the CPU'),
    'torch': ('the hf model backend', 'only the synthetic backend is available'),
}


def format_table(caps: list[Capability], backend: str | None, reason: str) -> str:
    """One row per capability: whether it is here, what it gives or what happens without it, and the
    detail; then the delay backend that will be used and why."""
    width = max([len('capability')] + [len(c.name) for c in caps])
    role_width = max(len(u) for pair in USES.values() for u in pair)
    row = '%-*s  %-7s  %-*s  %s'
    rows = [row % (width, 'capability', 'status', role_width, 'used for / without it', 'detail')]
    for c in caps:
        use, without = USES.get(c.name, ('', ''))
        rows.append(row % (width, c.name, 'ok' if c.ok else 'MISSING', role_width,
                           use if c.ok else without, c.detail))
    rows.append('delay backend: %s (%s)' % (backend or 'none', reason))
    return '\n'.join(rows)
