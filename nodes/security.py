"""Transport security between drafters and verifiers: ZeroMQ CURVE (authentication and encryption).

A node config's optional `curve` block turns it on (testbed/run/curve.py fills it per run; off by default inside
the emulated network, where nothing crosses a real wire):

    verifier: {"public_key": Z85, "secret_key": Z85, "clients": [drafter public keys it accepts]}
    drafter:  {"public_key": Z85, "secret_key": Z85, "server_keys": [each `connect` endpoint's verifier key]}

The verifier is the CURVE server: a ZAP handler of its own (ZapGuard, a thread on inproc://zeromq.zap.01) accepts
only the listed client keys and logs every refusal as an `auth_refused` event, rate-limited per peer (ZeroMQ
reconnects every 0.1-1 s: a hostile peer must not fill the log). A drafter watches its handshakes (Handshakes): a
refused one ends it at once with one line on stderr and a `crash` event, instead of waiting out its timeout.
The users' clients' socket (a drafter's clients_bind) stays plain: the users' clients are emulated hosts.
"""
from __future__ import annotations

import threading
import time
from typing import Annotated

import zmq
import zmq.utils.z85
from pydantic import AfterValidator, ConfigDict, Field, model_validator

from nodes.core.errorlimit import ErrorLimiter
from nodes.events import AuthRefused
from testbed.common.strict import StrictModel

ZAP_ENDPOINT = "inproc://zeromq.zap.01"      # where libzmq asks for each handshake's verdict (RFC 27)
REFUSAL_LOG_WINDOW_S = 10.0                  # per peer: the first refusal logged, then a count per window
MAX_CLIENT_KEYS = 100_000

HANDSHAKE_FAILURES = {     # what a drafter's monitor reports, worded for its one-line error
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "CURVE authentication failed (is this drafter's key in the verifier's list?)",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "security handshake failed (the verifier requires CURVE and this drafter "
                                         "has no keys, or the reverse)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "security handshake failed (this drafter's key for the verifier is wrong, "
                                          "or the verifier does not use CURVE)",
}


def key_problem(key) -> str | None:
    """Why `key` is not a CURVE key in Z85 (40 characters decoding to 32 bytes), or None. Never echoes the key:
    it may be a secret one."""
    if not isinstance(key, str):
        return f"expected a CURVE key: a string of 40 Z85 characters, got {type(key).__name__}"
    if len(key) != 40:
        return f"expected a CURVE key: 40 Z85 characters, got {len(key)}"
    try:
        if len(zmq.utils.z85.decode(key.encode("ascii"))) == 32:
            return None
    except (ValueError, KeyError, UnicodeEncodeError, IndexError, TypeError):
        pass
    return "expected a CURVE key in Z85 (characters 0-9 a-z A-Z .-:+=^!/*?&<>()[]{}@%$#), got other characters"


def _z85(v):
    why = key_problem(v)
    if why:
        raise ValueError(why)
    return v


def public_of(secret: str) -> str:
    return zmq.curve_public(secret.encode("ascii")).decode("ascii")


Z85Key = Annotated[str, AfterValidator(_z85)]


class _Keypair(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    public_key: Z85Key
    secret_key: Z85Key

    @model_validator(mode="after")
    def _pair(self):
        if public_of(self.secret_key) != self.public_key:
            raise ValueError("public_key: is not the public key of secret_key (zmq.curve_public gives another)")
        return self

    def __repr__(self) -> str:             # a traceback or a debug print must not show the secret key
        return f"{type(self).__name__}(public_key={self.public_key!r}, secret_key='<hidden>')"

    __str__ = __repr__


class VerifierCurve(_Keypair):
    """A verifier's CURVE: its keypair and the drafters' public keys it accepts (nobody else gets in)."""
    clients: list[Z85Key] = Field(..., min_length=1, max_length=MAX_CLIENT_KEYS)


class DrafterCurve(_Keypair):
    """A drafter's CURVE: its keypair and, per `connect` endpoint (same order), that verifier's public key. A list
    and not a mapping by endpoint: the runner may rewrite endpoints (a real host reaches a verifier through a
    gateway) and keeps their order."""
    server_keys: list[Z85Key] = Field(..., min_length=1, max_length=1024)


def _b(key: str) -> bytes:
    return key.encode("ascii")


# ------------------------------------------------------------------------------------------ verifier

class ZapGuard:
    """The verifier's CURVE server side: `secure(sock)` before the socket binds. A thread answers libzmq's ZAP
    requests (accepted: a listed client key; anything else refused) and watches the socket's monitor for
    handshakes that failed before ZAP was asked (a drafter without CURVE: a mechanism mismatch). Every refusal is
    an AuthRefused event; per peer address the first is logged and then one per REFUSAL_LOG_WINDOW_S carrying
    how many were refused in between (`repeated`), and past 1024 peers they share one count."""

    def __init__(self, curve: VerifierCurve, log, node: str, ctx: zmq.Context | None = None):
        self.curve, self.log, self.node = curve, log, node
        self.ctx = ctx or zmq.Context.instance()
        self.allowed = {zmq.utils.z85.decode(_b(k)) for k in curve.clients}
        self.limiter = ErrorLimiter(burst=1, window_s=REFUSAL_LOG_WINDOW_S)
        self.refused = 0                   # every refusal, logged or counted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._monitor_addr = f"inproc://specnet-zap-monitor-{id(self)}"

    def secure(self, sock: zmq.Socket) -> None:
        # the handler is bound before the socket: a handshake that found no ZAP handler would be let in unchecked
        zap = self.ctx.socket(zmq.REP)
        zap.linger = 0
        zap.bind(ZAP_ENDPOINT)
        sock.curve_server = True
        sock.curve_secretkey = _b(self.curve.secret_key)
        sock.zap_domain = b"specnet"
        sock.monitor(self._monitor_addr, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        monitor = self.ctx.socket(zmq.PAIR)
        monitor.linger = 0
        monitor.connect(self._monitor_addr)
        self._thread = threading.Thread(target=self._serve, args=(zap, monitor), name="zap", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def _serve(self, zap: zmq.Socket, monitor: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(200))
                if zap in ready:
                    zap.send_multipart(self.answer(zap.recv_multipart()))
                if monitor in ready:
                    self._monitor_event(monitor.recv_multipart())
        except zmq.ContextTerminated:
            pass
        finally:
            zap.close(0)
            monitor.close(0)

    def answer(self, frames: list[bytes]) -> list[bytes]:
        """A ZAP reply to a ZAP request (RFC 27: version, request id, domain, address, identity, mechanism,
        credentials...): 200 only for CURVE with a listed client key."""
        if len(frames) < 6 or frames[0] != b"1.0":
            rid = frames[1] if len(frames) > 1 else b""
            return [b"1.0", rid, b"500", b"malformed ZAP request", b"", b""]
        rid, address, mechanism, creds = frames[1], frames[3], frames[5], frames[6:]
        key = creds[0] if mechanism == b"CURVE" and len(creds) == 1 and len(creds[0]) == 32 else None
        if key is not None and key in self.allowed:
            return [b"1.0", rid, b"200", b"OK", b"", b""]
        reason = "key not in the verifier's list" if key is not None else \
            f"mechanism {mechanism.decode('ascii', 'replace')[:20]} without a CURVE key"
        self._refusal(address.decode("ascii", "replace")[:64],
                      zmq.utils.z85.encode(key).decode("ascii") if key is not None else "", reason)
        return [b"1.0", rid, b"400", b"not an accepted drafter key", b"", b""]

    def _monitor_event(self, frames: list[bytes]) -> None:
        from zmq.utils.monitor import parse_monitor_message
        try:
            event = parse_monitor_message(frames)["event"]
        except Exception:               # libzmq's own frames; nothing to refuse, nothing to log
            return
        # libzmq names no peer here; either way it is a drafter without CURVE or with a wrong verifier key
        kind = "protocol error" if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL else "no detail"
        self._refusal("", "", f"handshake failed before authentication ({kind}): a drafter without CURVE, or "
                              f"with a wrong key for this verifier")

    def _refusal(self, peer: str, key: str, reason: str) -> None:
        self.refused += 1
        now = time.time()
        repeated = self.limiter.admit((peer or "?", reason), now)
        if repeated is None:
            return
        try:
            # one unbuffered write (O_APPEND) per event, as the main thread's: lines never interleave
            self.log.write(AuthRefused(t=now, node=self.node, peer=peer, key=key, reason=reason, repeated=repeated))
        except ValueError:              # the log was closed: the process is ending
            pass


# ------------------------------------------------------------------------------------------ drafter

def secure_client(sock: zmq.Socket, curve: DrafterCurve | None, index: int) -> None:
    """A drafter's DEALER to its `index`-th verifier as a CURVE client (nothing without a curve block)."""
    if curve is None:
        return
    sock.curve_serverkey = _b(curve.server_keys[index])
    sock.curve_publickey = _b(curve.public_key)
    sock.curve_secretkey = _b(curve.secret_key)


class Handshakes:
    """The handshakes of a drafter's DEALER while it waits for its verifier's WELCOME: `wait(timeout_ms)` is
    sock.poll, except that a failed security handshake raises Refused at once (with CURVE a refused drafter
    would otherwise wait out its whole timeout, silently; without CURVE against a CURVE verifier, the same)."""

    def __init__(self, sock: zmq.Socket, endpoint: str):
        self.sock, self.endpoint = sock, endpoint
        self.monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, addr=f"inproc://specnet-drafter-monitor-{id(sock)}")
        self.poller = zmq.Poller()
        self.poller.register(sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def wait(self, timeout_ms: int) -> bool:
        """True once a frame is waiting on the socket; False after timeout_ms without one."""
        from zmq.utils.monitor import recv_monitor_message
        deadline = time.monotonic() + timeout_ms / 1e3
        while True:
            left = max(0, int((deadline - time.monotonic()) * 1e3))
            ready = dict(self.poller.poll(left))
            if self.sock in ready:
                return True
            if self.monitor in ready:
                event = recv_monitor_message(self.monitor)["event"]
                if event in HANDSHAKE_FAILURES:
                    raise Refused(f"refused by verifier {self.endpoint}: {HANDSHAKE_FAILURES[event]}")
            if not ready and left == 0:
                return False

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)


class Refused(Exception):
    """A verifier refused this drafter's handshake; str() is the one line to report."""
