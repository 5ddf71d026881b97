#!/usr/bin/env python3
# Over 400 lines on purpose: a self-contained stdlib daemon started by path inside namespaces, so it cannot import helpers.
"""Userspace delay/jitter/loss for NFQUEUE queues (stdlib only, runs with any python3).

Why userspace: this kernel has no netem (nor fq/etf), so nothing in the kernel can hold a
packet for a while (research/netemu.md section 3a). An iptables rule sends packets to an
NFQUEUE; this daemon receives only their metadata (NFQNL_COPY_META), holds each packet id
for delay +- jitter and then answers NF_ACCEPT, or answers NF_DROP at once for loss.

  python -m testbed.net.nfqdelay --queue 0,delay=10,jitter=2,loss=0.01 [--queue 1,...]
                             [--seed N] [--netns-pid PID]

Control on stdin, one command per line, one reply line on stdout per command:
  set NUM [delay MS] [jitter MS] [loss FRAC]  -> "ok" | "error <reason>"
  stats                                       -> {"queues": {"NUM": {...}}, "cpu_s": ...}
  quit                                        -> accept held packets, final stats line, exit 0
Blank lines get no reply. 'ready' is printed once every queue is bound. stdin EOF (the
parent's pipe closed), SIGTERM and SIGINT act like quit. The daemon dies with its parent
(PR_SET_PDEATHSIG) because a leftover daemon keeps a Mininet host's netns alive.
Per queue: pkts = delayed (accepted after holding) + dropped + flushed (accepted at exit) + held.
"""
import argparse
import collections
import ctypes
import json
import math
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO = 1, 4
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_CAP_LEN = 1, 2, 13
NF_DROP, NF_ACCEPT = 0, 1
SOL_NETLINK, NETLINK_NO_ENOBUFS = 270, 5
SO_RCVBUFFORCE = 33
PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000
PACKET_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
VERDICTS_PER_SEND = 256  # 32-byte messages: 8 KiB per send() keeps well inside netlink limits

QueueSpec = collections.namedtuple('QueueSpec', 'queue delay_ms jitter_ms loss')
PARAM_KEYS = ('delay', 'jitter', 'loss')


class ControlError(ValueError):
    """A bad --queue spec or control line; the text is sent back as 'error <text>'."""


# ---------------------------------------------------------------- parsing / validation

def check_param(key, text):
    """Parse one delay/jitter/loss value; reject NaN, negatives and loss outside [0, 1]."""
    if key not in PARAM_KEYS:
        raise ControlError('unknown parameter %r (expected delay, jitter or loss)' % key)
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ControlError('bad number for %s: %r' % (key, text))
    if not math.isfinite(value) or value < 0:
        raise ControlError('%s must be a finite number >= 0, got %r' % (key, text))
    if key == 'loss' and value > 1:
        raise ControlError('loss must be within [0, 1], got %r' % text)
    return value


def check_queue(text):
    try:
        num = int(text)
    except (TypeError, ValueError):
        raise ControlError('bad queue number %r' % (text,))
    if not 0 <= num <= 65535:
        raise ControlError('queue number must be within 0..65535, got %r' % (text,))
    return num


def parse_queue_spec(text):
    """'NUM[,delay=MS][,jitter=MS][,loss=FRAC]' -> QueueSpec."""
    parts = text.split(',')
    queue = check_queue(parts[0].strip())
    values = {}
    for part in parts[1:]:
        key, sep, val = part.partition('=')
        key = key.strip()
        if not sep:
            raise ControlError('expected key=value in queue spec %r, got %r' % (text, part))
        if key in values:
            raise ControlError('%s given twice in queue spec %r' % (key, text))
        values[key] = check_param(key, val.strip())
    return QueueSpec(queue, values.get('delay', 0.0), values.get('jitter', 0.0), values.get('loss', 0.0))


def parse_control(line):
    """One control line -> ('set', queue, {key: value}) | ('stats',) | ('quit',) | None (blank)."""
    toks = line.split()
    if not toks:
        return None
    cmd, args = toks[0], toks[1:]
    if cmd in ('stats', 'quit'):
        if args:
            raise ControlError('%s takes no arguments' % cmd)
        return (cmd,)
    if cmd != 'set':
        raise ControlError('unknown command %r (expected set, stats or quit)' % cmd)
    if not args:
        raise ControlError('usage: set NUM [delay MS] [jitter MS] [loss FRAC]')
    queue = check_queue(args[0])
    pairs = args[1:]
    if not pairs or len(pairs) % 2:
        raise ControlError('set needs key/value pairs: set NUM [delay MS] [jitter MS] [loss FRAC]')
    values = {}
    for key, val in zip(pairs[::2], pairs[1::2]):
        if key in values:
            raise ControlError('%s given twice' % key)
        values[key] = check_param(key, val)
    return ('set', queue, values)


# ---------------------------------------------------------------- per-queue delay line

class LatenessHistogram(object):
    """How late packets were released versus their due time, in 0.1 ms buckets (for p99)."""

    def __init__(self):
        self.buckets = {}
        self.n = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, late_s):
        self.n += 1
        self.total += late_s
        if late_s > self.max:
            self.max = late_s
        b = int(late_s * 1e4)
        self.buckets[b] = self.buckets.get(b, 0) + 1

    def summary(self):
        if not self.n:
            return {'late_mean_ms': None, 'late_p99_ms': None, 'late_max_ms': None}
        acc, p99 = 0, None
        for b in sorted(self.buckets):
            acc += self.buckets[b]
            if acc >= 0.99 * self.n:
                p99 = (b + 1) / 10.0  # upper edge of the bucket: never under-reports
                break
        return {'late_mean_ms': 1e3 * self.total / self.n, 'late_p99_ms': p99,
                'late_max_ms': 1e3 * self.max}


class DelayLine(object):
    """One queue: its parameters, its FIFO of held packet ids and its counters.

    FIFO, not a heap: a packet is never due before the one queued ahead of it, so jitter
    never reorders (like netem with a rate or a pfifo child)."""

    def __init__(self, spec, rng):
        self.queue = spec.queue
        self.rng = rng
        self.delay_ms, self.jitter_ms, self.loss = spec.delay_ms, spec.jitter_ms, spec.loss
        self.fifo = collections.deque()  # (due, packet_id)
        self.last_due = 0.0
        self.pkts = self.bytes = self.delayed = self.dropped = self.flushed = self.max_held = 0
        self.late = LatenessHistogram()

    def set(self, delay=None, jitter=None, loss=None):
        if delay is not None:
            self.delay_ms = delay
        if jitter is not None:
            self.jitter_ms = jitter
        if loss is not None:
            self.loss = loss

    def admit(self, pid, plen, now):
        """Count a new packet; False means drop it now, True means it is held."""
        self.pkts += 1
        self.bytes += plen
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return False
        hold = self.delay_ms
        if self.jitter_ms:
            hold += (2.0 * self.rng.random() - 1.0) * self.jitter_ms
        due = now + max(0.0, hold) / 1e3
        if due < self.last_due:
            due = self.last_due
        self.last_due = due
        self.fifo.append((due, pid))
        if len(self.fifo) > self.max_held:
            self.max_held = len(self.fifo)
        return True

    def next_due(self):
        return self.fifo[0][0] if self.fifo else None

    def pop_due(self, now):
        out = []
        fifo = self.fifo
        while fifo and fifo[0][0] <= now:
            due, pid = fifo.popleft()
            self.late.add(now - due)
            out.append(pid)
        self.delayed += len(out)
        return out

    def pop_all(self):
        out = [pid for _, pid in self.fifo]
        self.fifo.clear()
        self.flushed += len(out)
        return out

    def stats(self):
        st = {'pkts': self.pkts, 'bytes': self.bytes, 'delayed': self.delayed,
              'dropped': self.dropped, 'flushed': self.flushed, 'held': len(self.fifo),
              'max_held': self.max_held, 'delay_ms': self.delay_ms,
              'jitter_ms': self.jitter_ms, 'loss': self.loss}
        st.update(self.late.summary())
        return st


# ---------------------------------------------------------------- netlink

def nla(atype, data):
    n = 4 + len(data)
    return struct.pack('=HH', n, atype) + data + b'\0' * (-n % 4)


class NfqSocket(object):
    """One NETLINK_NETFILTER socket, bound to one or more queue numbers.

    The kernel keys queue instances by number and checks the port id, so one socket may
    hold several queues; packets carry their queue number in nfgenmsg.res_id."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:  # big buffer: bursts of metadata must not overflow while we sleep
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.bind((0, 0))
        self.sock.settimeout(2.0)  # config acks come at once; never hang on a broken kernel
        self.queues = []
        self.early = []   # packets of already-bound queues that arrived while configuring
        self.errors = 0   # netlink error replies (e.g. verdict for an unknown id)
        self._seq = 0
        self._prefix = {}

    def fileno(self):
        return self.sock.fileno()

    def _msg(self, qnum, mtype, attrs, flags):
        self._seq += 1
        body = struct.pack('=BB', socket.AF_UNSPEC, 0) + struct.pack('!H', qnum) + b''.join(attrs)
        return struct.pack('=IHHII', 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | mtype,
                           flags, self._seq, 0) + body

    def bind_queue(self, qnum, maxlen):
        """Bind qnum; raises OSError. Only the BIND step may fail softly (caller retries)."""
        self._config(qnum, [nla(NFQA_CFG_CMD, struct.pack('!BBH', NFQNL_CFG_CMD_BIND, 0, socket.AF_INET))])
        self.queues.append(qnum)
        self._config(qnum, [nla(NFQA_CFG_PARAMS, struct.pack('!IB', 0xffff, NFQNL_COPY_META))])
        self._config(qnum, [nla(NFQA_CFG_QUEUE_MAXLEN, struct.pack('!I', maxlen))])
        mask = NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN  # GSO: super-packets pass whole, unsegmented
        self._config(qnum, [nla(NFQA_CFG_FLAGS, struct.pack('!I', NFQA_CFG_F_GSO)),
                            nla(NFQA_CFG_MASK, struct.pack('!I', mask))])
        self._prefix[qnum] = (struct.pack('=IHHII', 32, (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT,
                                          NLM_F_REQUEST, 0, 0)
                              + struct.pack('=BB', socket.AF_UNSPEC, 0) + struct.pack('!H', qnum)
                              + struct.pack('=HH', 12, NFQA_VERDICT_HDR))

    def _config(self, qnum, attrs):
        self.sock.send(self._msg(qnum, NFQNL_MSG_CONFIG, attrs, NLM_F_REQUEST | NLM_F_ACK))
        seq = self._seq
        while True:
            data = self.sock.recv(65536)
            for typ, off, ln in _messages(data):
                if typ == PACKET_TYPE:
                    self._parse_packet(data, off, ln, self.early)
                elif typ == NLMSG_ERROR and struct.unpack_from('=I', data, off + 28)[0] == seq:
                    err = struct.unpack_from('=i', data, off + 16)[0]
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return

    def start(self):
        self.sock.setblocking(False)

    def recv_packets(self, out):
        """Append (queue, packet_id, length) of every waiting packet to out."""
        if self.early:
            out.extend(self.early)
            del self.early[:]
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            for typ, off, ln in _messages(data):
                if typ == PACKET_TYPE:
                    self._parse_packet(data, off, ln, out)
                elif typ == NLMSG_ERROR and struct.unpack_from('=i', data, off + 16)[0]:
                    self.errors += 1

    @staticmethod
    def _parse_packet(data, off, ln, out):
        qnum = struct.unpack_from('!H', data, off + 18)[0]
        a, end = off + 20, off + ln
        pid, plen = None, 0
        while a + 4 <= end:
            alen, atyp = struct.unpack_from('=HH', data, a)
            atyp &= 0x3fff
            if atyp == NFQA_PACKET_HDR:
                pid = struct.unpack_from('!I', data, a + 4)[0]
            elif atyp == NFQA_CAP_LEN:
                plen = struct.unpack_from('!I', data, a + 4)[0]
            if alen < 4:
                break
            a += (alen + 3) & ~3
        if pid is not None:
            out.append((qnum, pid, plen))

    def verdicts(self, qnum, pids, verdict):
        """Send many verdicts per send(): one syscall per batch instead of per packet."""
        prefix = self._prefix[qnum]
        msgs = [prefix + struct.pack('!II', verdict, pid) for pid in pids]
        for i in range(0, len(msgs), VERDICTS_PER_SEND):
            self.sock.send(b''.join(msgs[i:i + VERDICTS_PER_SEND]))

    def close(self):
        self.sock.close()


def _messages(data):
    off = 0
    while off + 16 <= len(data):
        ln, typ = struct.unpack_from('=IH', data, off)
        if ln < 16:
            return
        yield typ, off, ln
        off += (ln + 3) & ~3


# ---------------------------------------------------------------- process plumbing

def setns_pid(pid):
    """Enter the network namespace of pid (e.g. a Mininet host shell) before binding."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open('/proc/%d/ns/net' % pid, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, 'setns into netns of pid %d: %s' % (pid, os.strerror(err)))
    finally:
        os.close(fd)


def die_with_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, 'prctl(PR_SET_PDEATHSIG): ' + os.strerror(err))


class Daemon(object):
    """The select() loop: packets in, due verdicts out, control lines, signals."""

    def __init__(self, specs, seed=None, control=True, maxlen=10000):
        nums = [s.queue for s in specs]
        if not specs or len(set(nums)) != len(nums):
            raise ControlError('need at least one --queue, each number once (got %s)' % nums)
        self.lines = {}
        for s in specs:  # seed + queue: each queue reproducible on its own
            rng = random.Random(seed + s.queue) if seed is not None else random.Random()
            self.lines[s.queue] = DelayLine(s, rng)
        self.control = control
        self.maxlen = maxlen
        self.socks = []
        self.sock_of = {}
        self.running = True
        self._inbuf = b''
        self._cpu0 = time.process_time()

    def bind(self):
        """Bind every queue; share one socket, or open another if the kernel refuses."""
        for qnum in self.lines:
            if self.socks and self._try_bind(self.socks[-1], qnum):
                self.sock_of[qnum] = self.socks[-1]
                continue
            fresh = NfqSocket()
            try:
                fresh.bind_queue(qnum, self.maxlen)
            except OSError as e:
                fresh.close()
                # the kernel answers EPERM both to non-root and to a queue another socket holds
                hint = {1: ' (needs CAP_NET_ADMIN, i.e. root; or another process has bound it)',
                        16: ' (already bound)'}.get(e.errno, '')
                raise OSError(e.errno, 'cannot bind NFQUEUE %d: %s%s' % (qnum, e.strerror or e, hint))
            self.socks.append(fresh)
            self.sock_of[qnum] = self.socks[-1]
        for s in self.socks:
            s.start()

    def _try_bind(self, sock, qnum):
        try:
            sock.bind_queue(qnum, self.maxlen)
            return True
        except OSError:
            return False  # the caller retries on a socket of its own

    def stats(self):
        return {'queues': {str(q): line.stats() for q, line in self.lines.items()},
                'cpu_s': round(time.process_time() - self._cpu0, 6),
                'netlink_errors': sum(s.errors for s in self.socks)}

    def reply(self, text):
        data = (text + '\n').encode()
        try:
            while data:
                data = data[os.write(1, data):]
        except BrokenPipeError:  # parent gone: nobody to answer, so wind down
            self.running = False

    def handle_line(self, line):
        try:
            cmd = parse_control(line)
            if cmd is None:
                return
            if cmd[0] == 'set':
                if cmd[1] not in self.lines:
                    raise ControlError('unknown queue %d (bound: %s)' % (cmd[1], sorted(self.lines)))
                self.lines[cmd[1]].set(**cmd[2])
                self.reply('ok')
            elif cmd[0] == 'stats':
                self.reply(json.dumps(self.stats()))
            else:
                self.running = False  # final stats are printed on the way out
        except ControlError as e:
            self.reply('error %s' % e)

    def read_control(self):
        chunk = os.read(0, 65536)  # raw fd, not sys.stdin: its buffer would hide lines from select
        if not chunk:
            self.running = False
            return
        self._inbuf += chunk
        *lines, self._inbuf = self._inbuf.split(b'\n')
        for raw in lines:
            if self.running:
                self.handle_line(raw.decode('utf-8', 'replace'))

    def release_due(self, now):
        for qnum, line in self.lines.items():
            if line.fifo and line.fifo[0][0] <= now:
                self.sock_of[qnum].verdicts(qnum, line.pop_due(now), NF_ACCEPT)

    def catch_signals(self):
        """SIGTERM/SIGINT only clear a flag; the returned pipe fd wakes select() at once."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)

        def on_signal(*_):
            self.running = False
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        return wake_r

    def run(self, wake_r):
        rlist = list(self.socks) + [wake_r] + ([0] if self.control else [])
        mono = time.monotonic
        batch = []
        while self.running:
            dues = [d for d in (line.next_due() for line in self.lines.values()) if d is not None]
            timeout = 1.0 if not dues else min(1.0, max(0.0, min(dues) - mono()))
            ready, _, _ = select.select(rlist, [], [], timeout)
            for s in self.socks:
                if s in ready:
                    s.recv_packets(batch)
            if batch:
                now = mono()
                drops = collections.defaultdict(list)
                for qnum, pid, plen in batch:
                    if not self.lines[qnum].admit(pid, plen, now):
                        drops[qnum].append(pid)
                for qnum, pids in drops.items():
                    self.sock_of[qnum].verdicts(qnum, pids, NF_DROP)
                del batch[:]
            if wake_r in ready:
                os.read(wake_r, 4096)
            if 0 in ready:
                self.read_control()
            self.release_due(mono())
        self.shutdown()

    def shutdown(self):
        """Accept everything still held: closing the socket would make the kernel drop it."""
        for qnum, line in self.lines.items():
            self.sock_of[qnum].verdicts(qnum, line.pop_all(), NF_ACCEPT)
        final = json.dumps(self.stats())
        for s in self.socks:
            s.close()
        self.reply(final)


def main(argv=None):
    ap = argparse.ArgumentParser(prog='nfqdelay', description=__doc__.split('\n\n')[0])
    ap.add_argument('--queue', action='append', required=True, metavar='SPEC',
                    help='NUM[,delay=MS][,jitter=MS][,loss=FRAC]; repeat for more queues')
    ap.add_argument('--seed', type=int, help='random.Random(seed + queue) per queue')
    ap.add_argument('--netns-pid', type=int, help='setns() into the netns of this pid first')
    ap.add_argument('--maxlen', type=int, default=10000, help='kernel queue length per queue')
    ap.add_argument('--no-control', action='store_true',
                    help='ignore stdin (run until SIGTERM), e.g. when started with </dev/null')
    a = ap.parse_args(argv)
    try:
        specs = [parse_queue_spec(s) for s in a.queue]
        die_with_parent()
        if a.netns_pid:
            setns_pid(a.netns_pid)
        daemon = Daemon(specs, seed=a.seed, control=not a.no_control, maxlen=a.maxlen)
        wake_r = daemon.catch_signals()  # before bind: a SIGTERM from now on still flushes
        daemon.bind()
    except (ControlError, OSError) as e:
        sys.stderr.write('nfqdelay: %s\n' % (getattr(e, 'strerror', None) or e))
        return 2
    daemon.reply('ready')
    daemon.run(wake_r)
    return 0


if __name__ == '__main__':
    sys.exit(main())
