"""nfqdelay daemon and its DelayDaemon controller.

Unit tests run anywhere. Tests marked root build two network namespaces joined by a veth
pair, delay each namespace's ingress through NFQUEUE and measure UDP round trips with
application timers (plain ping misses ingress delay, see research/netemu.md 3a).
"""
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time

import pytest

from testbed.net import nfqdelay
from testbed.net.delayd import DAEMON_PATH, DelayDaemon, DelayDaemonError, QueueParams
from testbed.net.nfqdelay import ControlError, DelayLine, QueueSpec, parse_control, parse_queue_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
root_only = pytest.mark.skipif(os.geteuid() != 0, reason='needs root: creates network namespaces, '
                                                         'iptables rules and NFQUEUE daemons')


# ---------------------------------------------------------------- parsing, no root

def test_queue_spec_parsing():
    assert parse_queue_spec('0') == QueueSpec(0, 0.0, 0.0, 0.0)
    assert parse_queue_spec('3,delay=10,jitter=2.5,loss=0.1') == QueueSpec(3, 10.0, 2.5, 0.1)
    assert parse_queue_spec('7, loss=1 ,delay=0') == QueueSpec(7, 0.0, 0.0, 1.0)


@pytest.mark.parametrize('bad', ['', 'x', '-1', '65536', '0,delay=-1', '0,loss=1.5', '0,delay',
                                 '0,foo=1', '0,delay=1,delay=2', '0,delay=nan', '0,jitter=inf'])
def test_queue_spec_rejects(bad):
    with pytest.raises(ControlError):
        parse_queue_spec(bad)


def test_control_parsing():
    assert parse_control('set 0 delay 20') == ('set', 0, {'delay': 20.0})
    assert parse_control(' set 2 loss 0.5 jitter 1 delay 3 \n') == (
        'set', 2, {'loss': 0.5, 'jitter': 1.0, 'delay': 3.0})
    assert parse_control('stats') == ('stats',)
    assert parse_control('quit\n') == ('quit',)
    assert parse_control('   \n') is None


@pytest.mark.parametrize('bad', ['set', 'set 0', 'set 0 delay', 'set x delay 1', 'set 0 loss 1.1',
                                 'set 0 loss -0.1', 'set 0 delay -5', 'set 0 delay inf',
                                 'set 0 rate 5', 'set 0 delay 1 delay 2', 'frob', 'stats now'])
def test_control_rejects(bad):
    with pytest.raises(ControlError):
        parse_control(bad)


class Replies(nfqdelay.Daemon):
    """A Daemon that records replies instead of writing to fd 1 (no sockets are bound)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.out = []

    def reply(self, text):
        self.out.append(text)


def test_daemon_control_keeps_running_after_errors():
    d = Replies([QueueSpec(0, 10.0, 0.0, 0.0), QueueSpec(4, 0.0, 0.0, 0.0)], seed=1)
    for line in ['set 9 delay 1', 'set 0 loss 2', 'set 0 delay 5 loss 0.25', '', 'stats']:
        d.handle_line(line)
    assert d.out[0].startswith('error unknown queue 9')
    assert d.out[1].startswith('error loss')
    assert d.out[2] == 'ok'
    assert len(d.out) == 4 and d.running
    st = json.loads(d.out[3])
    assert set(st['queues']) == {'0', '4'} and 'cpu_s' in st
    assert st['queues']['0']['delay_ms'] == 5.0 and st['queues']['0']['loss'] == 0.25
    d.handle_line('quit')
    assert not d.running


def test_delay_line_fifo_jitter_and_loss():
    line = DelayLine(QueueSpec(0, 10.0, 4.0, 0.1), random.Random(5))
    now, dues, kept = 100.0, [], 0
    for pid in range(2000):
        now += 0.0005
        if line.admit(pid, 100, now):
            kept += 1
            due = line.fifo[-1][0]
            # within delay +- jitter, unless pushed back by its predecessor (never earlier)
            assert now + 0.006 - 1e-9 <= due
            assert due <= now + 0.014 + 1e-9 or due == dues[-1]
            dues.append(due)
    assert dues == sorted(dues)
    assert 0.08 < line.dropped / 2000 < 0.12 and line.pkts == 2000 and line.bytes == 200000
    released = line.pop_due(now + 1.0)
    assert released == sorted(released) and len(released) == kept
    st = line.stats()
    assert st['delayed'] == kept and st['held'] == 0 and st['late_p99_ms'] is not None


def test_delay_line_seed_is_reproducible():
    def run(seed):
        line = DelayLine(QueueSpec(0, 5.0, 5.0, 0.3), random.Random(seed))
        return [line.admit(i, 1, i * 1e-3) and line.fifo[-1][0] for i in range(300)]
    assert run(11) == run(11) != run(12)


def test_cli_rejects_bad_spec_without_root():
    proc = subprocess.run([sys.executable, DAEMON_PATH, '--queue', '0,loss=3'], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2 and 'loss must be within [0, 1]' in proc.stderr


# ---------------------------------------------------------------- DelayDaemon.argv, no root

def test_argv_content(monkeypatch):
    monkeypatch.setattr('shutil.which', lambda name: '/usr/bin/' + name)
    d = DelayDaemon([QueueParams(0, 10, 2), QueueParams(3, loss=0.05)], ['mnexec', '-a', '1234'],
                    seed=7, python='/opt/py/bin/python3')
    argv = d.argv()
    assert argv[:6] == ['mnexec', '-a', '1234', 'chrt', '-f', '50']
    assert argv[6:8] == ['/opt/py/bin/python3', DAEMON_PATH]
    assert os.path.isabs(DAEMON_PATH) and os.path.isfile(DAEMON_PATH)
    specs = [parse_queue_spec(argv[i + 1]) for i, a in enumerate(argv) if a == '--queue']
    assert specs == [QueueSpec(0, 10.0, 2.0, 0.0), QueueSpec(3, 0.0, 0.0, 0.05)]
    assert argv[-2:] == ['--seed', '7']
    assert d.pid is None


def test_argv_without_realtime_or_chrt(monkeypatch):
    argv = DelayDaemon([QueueParams(1)], realtime=False).argv()
    assert 'chrt' not in argv and argv[0] == sys.executable and '--seed' not in argv
    monkeypatch.setattr('shutil.which', lambda name: None)
    assert 'chrt' not in DelayDaemon([QueueParams(1)]).argv()


def test_controller_rejects_bad_arguments():
    with pytest.raises(ValueError):
        DelayDaemon([])
    with pytest.raises(ValueError):
        DelayDaemon([QueueParams(0), QueueParams(0)])
    d = DelayDaemon([QueueParams(0)])
    with pytest.raises(ValueError):
        d.set(0)
    with pytest.raises(DelayDaemonError):
        d.stats()  # never started
    assert d.stop() == {}  # stopping a never-started daemon is a no-op


# ---------------------------------------------------------------- real namespaces (root)

ECHO_SERVER = r'''
import ctypes, signal, socket, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # die with the test run
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print('ready', flush=True)
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data, addr)
'''

# Paced probes, replies collected concurrently: 1000 probes take ~1 s, not 1000 RTTs.
UDP_CLIENT = r'''
import json, select, socket, struct, sys, time
host, port, count, interval, grace = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((host, port))
s.setblocking(False)
clock = time.perf_counter
sent, rtt, nxt, deadline = {}, {}, 0, None
start = clock()
while True:
    now = clock()
    if nxt < count and now >= start + nxt * interval:
        sent[nxt] = clock()
        s.send(struct.pack('!I', nxt) + b'x' * 60)
        nxt += 1
        if nxt == count:
            deadline = clock() + grace
        continue
    if deadline is not None and (len(rtt) == count or now >= deadline):
        break
    wake = start + nxt * interval if nxt < count else deadline
    if select.select([s], [], [], max(0.0, wake - clock()))[0]:
        while True:
            try:
                data = s.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                break
            t = clock()
            seq = struct.unpack('!I', data[:4])[0]
            rtt.setdefault(seq, (t - sent[seq]) * 1e3)
print(json.dumps([rtt.get(i) for i in range(count)]))
'''

PORT = 7777


def sh(*argv):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise RuntimeError('%s failed (%d): %s' % (' '.join(argv), proc.returncode, proc.stderr.strip()))
    return proc.stdout


class VethPair:
    """Namespaces A and B joined by a veth; each delays its ingress through NFQUEUE 0."""

    def __init__(self):
        tag = 'sntest%d' % os.getpid()
        self.ns = {'a': tag + 'a', 'b': tag + 'b'}
        self.ifname = {'a': 'sn%da' % os.getpid(), 'b': 'sn%db' % os.getpid()}
        self.ip = {'a': '10.77.0.1', 'b': '10.77.0.2'}
        self.server = None

    def prefix(self, side):
        return ['ip', 'netns', 'exec', self.ns[side]]

    def setup(self):
        for ns in self.ns.values():
            sh('ip', 'netns', 'add', ns)
        # created inside A and moved straight to B: the root namespace never sees it
        sh('ip', '-n', self.ns['a'], 'link', 'add', self.ifname['a'], 'type', 'veth',
           'peer', 'name', self.ifname['b'], 'netns', self.ns['b'])
        for side in 'ab':
            ns, ifn = self.ns[side], self.ifname[side]
            sh('ip', '-n', ns, 'addr', 'add', self.ip[side] + '/24', 'dev', ifn)
            sh('ip', '-n', ns, 'link', 'set', ifn, 'up')
            sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
            sh(*self.prefix(side), 'iptables', '-t', 'raw', '-A', 'PREROUTING', '-i', ifn,
               '-j', 'NFQUEUE', '--queue-num', '0')
        self.server = subprocess.Popen(self.prefix('b') + [sys.executable, '-c', ECHO_SERVER,
                                                           self.ip['b'], str(PORT)],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        assert self.server.stdout.readline().strip() == 'ready'

    def teardown(self):
        if self.server is not None:
            self.server.kill()
            self.server.wait()
        for ns in self.ns.values():
            subprocess.run(['ip', 'netns', 'delete', ns], capture_output=True)

    def daemons(self, delay_ms, seed=1):
        return [DelayDaemon([QueueParams(0, delay_ms)], self.prefix(side), seed=seed) for side in 'ab']

    def probe(self, count, interval_s, grace_s=0.5):
        """RTTs in ms from A to B's echo server, None for a lost probe."""
        out = sh(*self.prefix('a'), sys.executable, '-c', UDP_CLIENT, self.ip['b'], str(PORT),
                 str(count), str(interval_s), str(grace_s))
        return json.loads(out)


@pytest.fixture(scope='module')
def veth():
    pair = VethPair()
    try:
        pair.setup()
        yield pair
    finally:
        pair.teardown()


def started(daemons):
    for d in daemons:
        d.start()
    return daemons


def median_rtt(rtts):
    got = [r for r in rtts if r is not None]
    assert len(got) >= 0.98 * len(rtts), 'unexpected loss: %d of %d' % (len(rtts) - len(got), len(rtts))
    return statistics.median(got)


@pytest.mark.root
@root_only
def test_rtt_follows_delay_and_runtime_set(veth):
    a, b = started(veth.daemons(10))
    try:
        rtt10 = median_rtt(veth.probe(150, 0.005))
        for d in (a, b):
            d.set(0, delay_ms=20)
        rtt20 = median_rtt(veth.probe(150, 0.005))
    finally:
        final = [a.stop(), b.stop()]
    print('median RTT: %.3f ms at 2x10 ms, %.3f ms at 2x20 ms' % (rtt10, rtt20))
    # Never shorter than configured; the daemon's own per-packet cost comes on top and grows with the host's load
    # (0.3 ms idle, 1.6 ms seen in a CI run on a busy host: that is `make bench`'s business, not a pass/fail
    # bound). The runtime set must move the RTT by exactly its 2 x 10 ms, whatever that overhead is.
    assert 20.0 <= rtt10 <= 23.0
    assert 40.0 <= rtt20 <= 43.0
    assert abs((rtt20 - rtt10) - 20.0) <= 0.6
    for st in final:
        q = st['queues']['0']
        assert q['pkts'] >= 300 and q['delay_ms'] == 20.0 and q['dropped'] == 0
        assert q['pkts'] == q['delayed'] + q['flushed'] and q['held'] == 0
    assert a.stop() == final[0]  # idempotent


@pytest.mark.root
@root_only
def test_loss_matches_dropped_counter(veth):
    with DelayDaemon([QueueParams(0, 5)], veth.prefix('a'), seed=3) as a, \
            DelayDaemon([QueueParams(0, 5)], veth.prefix('b'), seed=3) as b:
        b.set(0, loss=0.2)  # drops requests at B's ingress; replies are never dropped
        before = b.stats()['queues']['0']
        rtts = veth.probe(1000, 0.001)
        after = b.stats()['queues']['0']
        assert a.stats()['queues']['0']['dropped'] == 0
    lost = sum(r is None for r in rtts)
    dropped = after['dropped'] - before['dropped']
    print('loss 0.2: client lost %d of 1000, daemon dropped %d' % (lost, dropped))
    assert 0.15 <= lost / 1000 <= 0.25
    assert abs(dropped - lost) <= 2
    assert after['pkts'] - before['pkts'] == 1000


@pytest.mark.root
@root_only
def test_several_queues_in_one_daemon_and_bad_set(veth):
    # queue 5 has no rule: it only proves one process binds several queues
    with DelayDaemon([QueueParams(0, 3), QueueParams(5, 50)], veth.prefix('a')) as a, \
            DelayDaemon([QueueParams(0, 0)], veth.prefix('b')) as b:
        rtt = median_rtt(veth.probe(50, 0.005))
        with pytest.raises(DelayDaemonError, match='unknown queue 9'):
            a.set(9, delay_ms=1)
        with pytest.raises(DelayDaemonError, match='loss'):
            a.set(0, loss=1.5)
        st = a.stats()
        assert b.stats()['queues']['0']['pkts'] >= 50
    assert set(st['queues']) == {'0', '5'} and st['queues']['5']['delay_ms'] == 50.0
    assert 3.0 <= rtt <= 6.0       # queue 0's 3 ms, not queue 5's 50 ms; the daemon's overhead grows with load


@pytest.mark.root
@root_only
def test_sigterm_and_stdin_eof_release_held_packets(veth):
    """Held packets are accepted on the way out, never dropped with the socket."""
    def popen(side, delay_ms):
        argv = DelayDaemon([QueueParams(0, delay_ms)], veth.prefix(side)).argv()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == 'ready'
        return proc

    a, b = popen('a', 0), popen('b', 60000)  # B would hold the requests for a minute
    try:
        client = subprocess.Popen(veth.prefix('a') + [sys.executable, '-c', UDP_CLIENT, veth.ip['b'],
                                                      str(PORT), '20', '0.001', '2.0'],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        b.send_signal(signal.SIGTERM)
        final_b = json.loads(b.stdout.readline())
        rtts = json.loads(client.communicate(timeout=5)[0])
        a.stdin.close()  # EOF on the control pipe ends the daemon like quit
        final_a = json.loads(a.stdout.readline())
        assert b.wait(2) == 0 and a.wait(2) == 0
    finally:
        for proc in (a, b):
            proc.kill()
            proc.wait()
    assert final_b['queues']['0']['flushed'] == 20 and final_b['queues']['0']['dropped'] == 0
    assert all(r is not None and 400 < r < 2000 for r in rtts), rtts
    assert final_a['queues']['0']['pkts'] == 20 and final_a['queues']['0']['delayed'] == 20


PARENT = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
from testbed.net.delayd import DelayDaemon, QueueParams
d = DelayDaemon([QueueParams(3)], ['ip', 'netns', 'exec', sys.argv[2]])
d.start()
print(d.pid, flush=True)
time.sleep(60)
'''


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


@pytest.mark.root
@root_only
def test_daemon_dies_with_its_parent(veth):
    parent = subprocess.Popen([sys.executable, '-c', PARENT, REPO, veth.ns['a']],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid = int(parent.stdout.readline())
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            assert b'nfqdelay.py' in f.read()  # ip netns exec and chrt exec, never fork
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 2.0
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid), 'daemon %d outlived its SIGKILLed parent' % pid
    finally:
        parent.kill()
        parent.wait()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)  # started by this test, so ours to end
