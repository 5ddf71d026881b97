# Over 400 lines on purpose: the wire spec, every field rule and the frame codec of one message set belong together.
"""specnet wire protocol: drafter (ZeroMQ DEALER) <-> verifier (ROUTER).

Every ZeroMQ frame is ONE msgpack map (`use_bin_type=True`) holding `"v": 1` and `"type"`, plus exactly the
fields below: a missing or unknown key is an error (strict, so version skew fails loudly, not silently).
Token ids travel as raw little-endian int32 bytes (`<i4`), probabilities as little-endian float32 (`<f4`),
never as lists (a list of 64x1024 floats costs 5x the bytes and a lot of CPU) and never as serialised Python
objects (loading those from the network is remote code execution). Frames over MAX_FRAME (64 MiB) are rejected before unpacking.

  type     dir   fields (wire type, constraint)
  -------  ----  ------------------------------------------------------------------------------------------
  hello    D->V  drafter (id), model (name), tokenizer (name: hash), vocab_size (int 1..1e7),
                 payloads (list of 1..8 distinct payloads this drafter can send), proactive (bool)
  welcome  V->D  verifier (id), model (name), tokenizer (name), vocab_size (int 1..1e7)
  start    D->V  session (sid), prompt (<i4 bytes, 1..32768 tokens), max_new (int 1..100000),
                 temperature (float 0..100), payload (payload), seed (int 0..2^64-1),
                 gamma (int 0..64: initial window), t_send (float >= 0)
  draft    D->V  session (sid), round (int >= 0), base (int >= 1: committed tokens the draft continues from),
                 tokens (<i4 bytes, gamma = len 0..64), q_ids (<i4 bytes gamma*k | nil),
                 q_probs (<f4 bytes gamma*k | gamma*V | nil), k (int 0..1024), t_send (float >= 0),
                 draft_s, rtt_s (float >= 0: telemetry, 0 = not measured)
  verdict  V->D  session (sid), round (int >= 0), accepted (int 0..64), token (int >= 0),
                 next_gamma (int 0..64), done (bool), t_send, queue_s, verify_s (float >= 0), batch (int >= 1),
                 load (int >= 0: sessions open at the verifier)
  end      both  session (sid), reason (id)
  ask      U->D  request (id), prompt (UTF-8 bytes, 1..MAX_TEXT), prompt_tokens (int 1..32768),
                 max_new (int 1..100000), t_send (float >= 0)            [a user's client -> its drafter]
  answer   D->U  request (id), tokens (<i4 bytes, 0..100000), text (UTF-8 bytes, 0..MAX_TEXT), t_send
  error    both  code (id), message (text, 1..1024 chars), session (sid | nil)

  id      = str matching [A-Za-z0-9_.:-]{1,128};   sid = the same, at most 64 chars
  name    = non-empty str, <= 128 chars, no control characters;   text = the same, <= 1024 chars
  payload = "ids" | "full" | "topk:K" with 1 <= K <= 1024 (canonical digits)
  int     = msgpack int (a bool is NOT an int); float = msgpack float or int, finite (no NaN/inf)

The q payload of a draft (mode is implied by which fields are present):
  ids    q_ids = q_probs = nil, k = 0                      greedy drafts: only the tokens travel
  topk   q_ids [gamma x k] distinct ids per row, q_probs [gamma x k], k >= 1; each token is in its row
  full   q_ids = nil, q_probs [gamma x V] (V = len / gamma), k = 0; each token < V
Every q row has probabilities in [0, 1] summing to 1 within 1e-3, and q(drafted token) > 0, because the
verifier accepts with min(1, p/q) and q = 0 there would make verification undefined. An empty draft
(gamma = 0: prefill or autoregressive step) carries no q. Arrays are row-major, flattened on the wire.

Decode failures raise ProtocolError(code, message) with code bad_frame (not bytes, too big, not msgpack, not
a map), bad_version ("v" missing or not 1), bad_type ("type" missing or unknown) or bad_field (a field is
missing, unknown, mistyped, out of range, or inconsistent); the message names "<type>.<field>".
Messages are also validated when built in Python, so a node can never send what its peer would reject.
"""
from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Iterator, Union

import msgpack
import numpy as np

from nodes.backends import DraftToken, lacks_q

PROTOCOL_VERSION = 3     # 3: incarnations in HELLO/WELCOME, resumed sessions in START
MAX_FRAME = 64 * 1024 * 1024
MAX_GAMMA = 64
MAX_TOPK = 1024
MAX_PROMPT = 32768
MAX_VOCAB = 10_000_000
MAX_TEXT = 1 << 20               # a client's prompt or answer text, bytes
MAX_ANSWER = 100_000
ROW_SUM_TOL = 1e-3
INT32_MAX = 2**31 - 1

_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_SID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_PAYLOAD_RE = re.compile(r"ids|full|topk:([1-9][0-9]{0,3})")
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Per-object caps for the unpacker: no legal frame has more than 10 keys, an 8-item list or a 1024-char
# string (4 KiB of UTF-8), so a hostile header declaring a 4 GiB map/array/str fails before allocating.
# Bins may be large (a full-vocabulary q), but never larger than the frame itself. No ext types at all.
_UNPACK = dict(raw=False, strict_map_key=True, use_list=True, max_bin_len=MAX_FRAME, max_str_len=8192,
               max_array_len=64, max_map_len=32, max_ext_len=0)


class ProtocolError(ValueError):
    """A frame or message that breaks the protocol. `code` is machine-readable (it goes into ERROR frames)."""

    def __init__(self, code: str, message: str, session: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.session = code, message, session


def _repr_pieces(x: Any) -> Iterator[str]:
    """repr(x) in pieces, lazily, so a caller that needs only a prefix never walks (or recurses into) the
    rest: a decoded value can be 64 MiB long or nested a thousand lists deep."""
    t = type(x)
    if t is list or t is tuple:
        yield "[" if t is list else "("
        for i, e in enumerate(x):
            yield ", " if i else ""
            yield from _repr_pieces(e)
        yield ("]" if t is list else ",)" if len(x) == 1 else ")")
    elif t is dict:
        yield "{"
        for i, (k, v) in enumerate(x.items()):
            yield ", " if i else ""
            yield from _repr_pieces(k)
            yield ": "
            yield from _repr_pieces(v)
        yield "}"
    elif (t is str or t is bytes) and len(x) > 61:
        # repr of a prefix (the result is cut at 60 characters anyway), quoted as the whole value would be:
        # the quotes a repr uses depend on which quote characters occur anywhere in the value
        sq, dq = ("'", '"') if t is str else (b"'", b'"')
        yield repr(x[:61] + (sq[:0] if sq not in x else sq if dq not in x else sq + dq))
    else:
        yield repr(x)


def _short(x: Any) -> str:
    """repr for error messages, bounded so an error about a huge value is not itself huge."""
    r = ""
    for piece in _repr_pieces(x):
        r += piece
        if len(r) > 60:
            return r[:57] + "..."
    return r


def _tn(x: Any) -> str:
    return type(x).__name__


def _fail(where: str, msg: str) -> None:
    raise ProtocolError("bad_field", f"{where}: {msg}")


def valid_payload(p: Any) -> bool:
    """True for "ids", "full" and "topk:K" with 1 <= K <= 1024."""
    m = _PAYLOAD_RE.fullmatch(p) if isinstance(p, str) else None
    return m is not None and (m.group(1) is None or int(m.group(1)) <= MAX_TOPK)


# ---- field checkers: (value, "type.field") -> normalised value, or raise ProtocolError(bad_field) ----------
Check = Callable[[Any, str], Any]


def _int(lo: int, hi: int) -> Check:
    def check(x: Any, where: str) -> int:
        # bool subclasses int in Python; True must not pass for a round number. numpy ints are accepted
        # from Python callers (msgpack never produces them) and normalised to int so they can be packed.
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            _fail(where, f"expected int, got {_tn(x)}")
        if not lo <= int(x) <= hi:
            _fail(where, f"{int(x)} out of range [{lo}, {hi}]")
        return int(x)
    return check


def _float(lo: float, hi: float) -> Check:
    def check(x: Any, where: str) -> float:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
            _fail(where, f"expected float, got {_tn(x)}")
        f = float(x)
        if not math.isfinite(f):
            _fail(where, f"must be finite, got {f}")
        if not lo <= f <= hi:
            _fail(where, f"{f} out of range [{lo}, {hi}]")
        return f
    return check


def _str(maxlen: int, pattern: re.Pattern | None = None) -> Check:
    def check(x: Any, where: str) -> str:
        if type(x) is not str:
            _fail(where, f"expected str, got {_tn(x)}")
        if not 1 <= len(x) <= maxlen:
            _fail(where, f"length {len(x)} not in 1..{maxlen}")
        if pattern is not None and not pattern.fullmatch(x):
            _fail(where, f"{_short(x)} does not match {pattern.pattern}")
        if _CTRL_RE.search(x):   # these strings end up in logs; no forged log lines
            _fail(where, "contains control characters")
        if not x.isascii():       # ASCII is valid UTF-8; the common case skips the encode
            try:
                x.encode("utf-8")     # lone surrogates would only fail later, inside packb
            except UnicodeEncodeError:
                _fail(where, "is not valid UTF-8")
        return x
    return check


def _bool(x: Any, where: str) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        _fail(where, f"expected bool, got {_tn(x)}")
    return bool(x)


def _payload(x: Any, where: str) -> str:
    if not valid_payload(x):
        _fail(where, f"{_short(x)} is not 'ids', 'full' or 'topk:K' with 1 <= K <= {MAX_TOPK}")
    return x


def _payloads(x: Any, where: str) -> tuple[str, ...]:
    if not isinstance(x, (list, tuple)):
        _fail(where, f"expected list, got {_tn(x)}")
    # distinct by value for strings; anything else is refused below anyway, so a bounded repr tells them apart
    if not 1 <= len(x) <= 8 or len({p if type(p) is str else (_short(p),) for p in x}) != len(x):
        _fail(where, f"need 1..8 distinct payloads, got {len(x)} items")
    return tuple(_payload(p, f"{where}[{i}]") for i, p in enumerate(x))


def _opt(check: Check) -> Check:
    return lambda x, where: None if x is None else check(x, where)


def _array(kind: str) -> Check:
    """int32 ids ('i', each in 0..INT32_MAX) or float32 probabilities ('f'). Always returns a read-only
    array that owns its data, so neither the sender's buffer nor a received frame is aliased."""
    def check(x: Any, where: str) -> np.ndarray:
        try:
            a = np.asarray(x)
        except Exception as e:  # ragged lists and the like, from Python callers only
            _fail(where, f"not an array ({_short(e)})")
        ok = a.dtype.kind in ("iu" if kind == "i" else "f") or (a.size == 0 and a.dtype.kind in "iuf")
        if not ok or a.ndim > 2:
            want = "int ids" if kind == "i" else "float probabilities"
            _fail(where, f"expected an array of {want}, got dtype {a.dtype} with ndim {a.ndim}")
        if kind == "i" and a.size and (a.min() < 0 or a.max() > INT32_MAX):
            _fail(where, f"ids must be in 0..{INT32_MAX}")
        out = np.array(a, dtype="<i4" if kind == "i" else "<f4")   # a copy, owned
        out.setflags(write=False)
        return out
    return check


def _text(lo: int) -> Check:
    """A prompt or an answer as UTF-8 bytes (any characters, newlines too: it is data, never logged as is)."""
    def check(x: Any, where: str) -> bytes:
        if type(x) is not bytes:
            _fail(where, f"expected UTF-8 bytes, got {_tn(x)}")
        if not lo <= len(x) <= MAX_TEXT:
            _fail(where, f"length {len(x)} not in {lo}..{MAX_TEXT}")
        try:
            x.decode("utf-8")
        except UnicodeDecodeError:
            _fail(where, "is not valid UTF-8")
        return x
    return check


_ID, _NAME, _SID = _str(128, _ID_RE), _str(128), _str(64, _SID_RE)
_TIME = _float(0.0, math.inf)
_ROUND = _int(0, INT32_MAX)


class _Message:
    """Shared machinery. Subclasses declare TYPE and SPEC (field -> checker); __post_init__ validates and
    normalises every field, then _check() does the cross-field rules."""
    TYPE: ClassVar[str]
    SPEC: ClassVar[dict[str, Check]]
    ARRAYS: ClassVar[dict[str, str]] = {}   # byte fields -> dtype; a "?" suffix means nil is allowed

    def __post_init__(self) -> None:
        for name, check in self.SPEC.items():
            object.__setattr__(self, name, check(getattr(self, name), f"{self.TYPE}.{name}"))
        self._check()

    def _check(self) -> None:
        pass

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        # dataclasses.fields() rebuilds its tuple on every call; every frame needs the names twice
        names = cls.__dict__.get("_NAMES")
        if names is None:
            names = tuple(f.name for f in fields(cls))
            cls._NAMES = names
        return names

    def to_wire(self) -> dict:
        d: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": self.TYPE}
        for name in self._names():
            x = getattr(self, name)
            d[name] = x.tobytes() if isinstance(x, np.ndarray) else list(x) if isinstance(x, tuple) else x
        return d

    @classmethod
    def from_wire(cls, d: dict) -> _Message:
        """Build from an unpacked map (v and type already checked). Byte fields become arrays here; all
        value checks happen in __post_init__."""
        names = cls._names()
        have = set(d) - {"v", "type"}
        if missing := [n for n in names if n not in have]:
            raise ProtocolError("bad_field", f"{cls.TYPE}: missing field(s) {', '.join(missing)}")
        if unknown := have - set(names):
            raise ProtocolError("bad_field", f"{cls.TYPE}: unknown field(s) {', '.join(sorted(map(_short, unknown)))}")
        kw = {n: _from_bytes(d[n], cls.ARRAYS[n], f"{cls.TYPE}.{n}") if n in cls.ARRAYS else d[n] for n in names}
        return cls(**kw)

    def __eq__(self, other: object) -> bool:
        # dataclass equality would compare arrays with ==, which is ambiguous; compare them exactly.
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # type: ignore[assignment]  # holds arrays: not hashable


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and bool(np.array_equal(a, b)))
    return a == b


def _from_bytes(x: Any, dtype: str, where: str) -> np.ndarray | None:
    if x is None and dtype.endswith("?"):
        return None
    dtype = dtype.rstrip("?")
    if type(x) is not bytes:
        _fail(where, f"expected raw {dtype} bytes, got {_tn(x)}")
    if len(x) % 4:
        _fail(where, f"byte length {len(x)} is not a multiple of 4")
    return np.frombuffer(x, dtype=dtype)   # read-only view; the checker copies it


@dataclass(frozen=True, eq=False)
class Hello(_Message):
    drafter: str
    model: str
    tokenizer: str
    vocab_size: int
    payloads: tuple[str, ...]     # given as any sequence, stored as a tuple so the message stays immutable
    proactive: bool
    # a number drawn when the drafter process started: a HELLO under the same name with another one is a
    # restarted drafter, whose predecessor's sessions the verifier drops (nodes/core/recovery.py)
    incarnation: int = 0
    TYPE: ClassVar[str] = "hello"
    SPEC: ClassVar[dict] = dict(drafter=_ID, model=_NAME, tokenizer=_NAME, vocab_size=_int(1, MAX_VOCAB),
                                payloads=_payloads, proactive=_bool, incarnation=_int(0, 2**63 - 1))


@dataclass(frozen=True, eq=False)
class Welcome(_Message):
    verifier: str
    model: str
    tokenizer: str
    vocab_size: int
    incarnation: int = 0          # the verifier's: another one than before means it restarted and lost its sessions
    TYPE: ClassVar[str] = "welcome"
    SPEC: ClassVar[dict] = dict(verifier=_ID, model=_NAME, tokenizer=_NAME, vocab_size=_int(1, MAX_VOCAB),
                                incarnation=_int(0, 2**63 - 1))


@dataclass(frozen=True, eq=False)
class Start(_Message):
    session: str
    prompt: np.ndarray
    max_new: int
    temperature: float
    payload: str
    seed: int
    gamma: int
    t_send: float
    # a session resumed on a restarted verifier: the tokens already committed after the prompt (re-prefilled
    # with it) and the round this START counts as; a new session has none and round 0
    committed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    round: int = 0
    TYPE: ClassVar[str] = "start"
    ARRAYS: ClassVar[dict] = dict(prompt="<i4", committed="<i4")
    SPEC: ClassVar[dict] = dict(session=_SID, prompt=_array("i"), max_new=_int(1, 100_000),
                                temperature=_float(0.0, 100.0), payload=_payload, seed=_int(0, 2**64 - 1),
                                gamma=_int(0, MAX_GAMMA), t_send=_TIME, committed=_array("i"), round=_ROUND)

    def _check(self) -> None:
        if self.prompt.ndim != 1 or not 1 <= len(self.prompt) <= MAX_PROMPT:
            _fail("start.prompt", f"need 1..{MAX_PROMPT} tokens, got shape {self.prompt.shape}")
        if self.committed.ndim != 1 or len(self.committed) >= self.max_new:
            _fail("start.committed", f"need a list of fewer than max_new={self.max_new} tokens, "
                                     f"got shape {self.committed.shape}")
        if len(self.committed) and not self.round:
            _fail("start.round", "a resumed session (committed tokens) needs the round it resumes at, >= 1")
        if lacks_q(self.temperature, self.payload):
            # ids-only drafts carry no q, so sampled verification could not be lossless.
            _fail("start.payload", "'ids' only works with temperature 0; use 'topk:K' or 'full'")


@dataclass(frozen=True, eq=False)
class Draft(_Message):
    session: str
    round: int
    base: int
    tokens: np.ndarray               # int32 [gamma]
    q_ids: np.ndarray | None         # int32 [gamma, k] (topk) or None
    q_probs: np.ndarray | None       # float32 [gamma, k] (topk) or [gamma, V] (full) or None
    k: int
    t_send: float
    # telemetry for the verifier's speculation policies (0 = not measured yet): this window's draft compute
    # time and the drafter's last send-to-verdict time for this session
    draft_s: float = 0.0
    rtt_s: float = 0.0
    TYPE: ClassVar[str] = "draft"
    ARRAYS: ClassVar[dict] = dict(tokens="<i4", q_ids="<i4?", q_probs="<f4?")
    SPEC: ClassVar[dict] = dict(session=_SID, round=_ROUND, base=_int(1, INT32_MAX), tokens=_array("i"),
                                q_ids=_opt(_array("i")), q_probs=_opt(_array("f")), k=_int(0, MAX_TOPK),
                                t_send=_TIME, draft_s=_TIME, rtt_s=_TIME)

    @property
    def gamma(self) -> int:
        return len(self.tokens)

    @property
    def payload(self) -> str:
        """The payload mode this draft was sent in (for logs; the session's Start fixes the mode)."""
        if self.q_probs is None:
            return "ids"
        return f"topk:{self.k}" if self.q_ids is not None else "full"

    def _check(self) -> None:
        g, t = len(self.tokens), self.tokens
        if t.ndim != 1 or g > MAX_GAMMA:
            _fail("draft.tokens", f"need 0..{MAX_GAMMA} tokens, got shape {t.shape}")
        if self.q_probs is None:
            if self.q_ids is not None:
                _fail("draft.q_probs", "required when q_ids is present (topk mode)")
            if self.k != 0:
                _fail("draft.k", f"must be 0 when the draft carries no q, got {self.k}")
            return
        if g == 0:
            _fail("draft.q_probs", "an empty draft (gamma 0) carries no q")
        if self.q_ids is not None:                                     # topk
            k = self.k
            if k < 1:
                _fail("draft.k", "must be >= 1 in topk mode (q_ids present)")
            for name in ("q_ids", "q_probs"):
                a = getattr(self, name)
                if a.size != g * k or (a.ndim == 2 and a.shape != (g, k)):
                    _fail(f"draft.{name}", f"has shape {a.shape}, want gamma*k = {g}*{k} entries")
            ids, probs = self.q_ids.reshape(g, k), self.q_probs.reshape(g, k)
            if k > 1 and (np.diff(np.sort(ids, axis=1), axis=1) == 0).any():
                _fail("draft.q_ids", "a row repeats a token id")
            hit = ids == t[:, None]
            if not hit.any(axis=1).all():
                _fail("draft.tokens", f"token {int(np.argmin(hit.any(axis=1)))} is not among its q_ids row")
            q_tok = probs[hit]
        else:                                                          # full
            if self.k != 0:
                _fail("draft.k", f"must be 0 in full mode (no q_ids), got {self.k}")
            a = self.q_probs
            if a.size == 0 or a.size % g or (a.ndim == 2 and a.shape[0] != g):
                _fail("draft.q_probs", f"shape {a.shape} is not gamma={g} rows of the vocabulary")
            probs = self.q_probs.reshape(g, -1)
            if (t >= probs.shape[1]).any():
                _fail("draft.tokens", f"token id >= vocabulary size {probs.shape[1]} implied by q_probs")
            ids, q_tok = None, probs[np.arange(g), t]
        if not (np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()):
            _fail("draft.q_probs", "probabilities must be finite and in [0, 1]")
        sums = probs.sum(axis=1, dtype=np.float64)
        if (bad := np.abs(sums - 1.0) > ROW_SUM_TOL).any():
            j = int(np.argmax(bad))
            _fail("draft.q_probs", f"row {j} sums to {sums[j]:.6g}, want 1 +- {ROW_SUM_TOL}")
        if (q_tok <= 0).any():
            _fail("draft.q_probs", f"q of drafted token {int(np.argmax(q_tok <= 0))} is 0")
        object.__setattr__(self, "q_probs", probs)
        if ids is not None:
            object.__setattr__(self, "q_ids", ids)

    @classmethod
    def from_tokens(cls, session: str, round: int, base: int, draft_tokens: list[DraftToken], payload: str,
                    vocab_size: int, t_send: float, draft_s: float = 0.0, rtt_s: float = 0.0) -> Draft:
        """Pack a backend's DraftTokens. `payload` is the session's mode: each token must carry exactly K
        (topk:K) or vocab_size (full) q entries; ids mode (and an empty draft) sends no q."""
        _payload(payload, "draft.payload")
        _int(1, MAX_VOCAB)(vocab_size, "draft.vocab_size")
        mode = payload if draft_tokens else "ids"
        width = vocab_size if mode == "full" else int(mode[5:]) if mode.startswith("topk:") else 0

        def rows(attr: str) -> np.ndarray | None:
            if mode == "ids" or (mode == "full" and attr == "q_ids"):
                return None
            for i, d in enumerate(draft_tokens):
                n = None if getattr(d, attr) is None else np.size(getattr(d, attr))
                if n != width:
                    _fail(f"draft.{attr}[{i}]", f"{payload} needs {width} entries per token, got {n}")
            return np.stack([np.ravel(getattr(d, attr)) for d in draft_tokens])

        msg = cls(session, round, base, _array("i")([d.token for d in draft_tokens], "draft.tokens"),
                  rows("q_ids"), rows("q_probs"), width if mode.startswith("topk:") else 0, t_send, draft_s, rtt_s)
        for name in ("tokens", "q_ids"):   # the sender knows its vocabulary; the frame alone does not
            a = getattr(msg, name)
            if a is not None and a.size and int(a.max()) >= vocab_size:
                _fail(f"draft.{name}", f"token id {int(a.max())} >= vocab_size {vocab_size}")
        return msg

    def draft_tokens(self) -> list[DraftToken]:
        """One DraftToken per drafted token, q rows as read-only views of this message's arrays."""
        return [DraftToken(int(tok), None if self.q_ids is None else self.q_ids[j],
                           None if self.q_probs is None else self.q_probs[j]) for j, tok in enumerate(self.tokens)]


@dataclass(frozen=True, eq=False)
class Verdict(_Message):
    session: str
    round: int
    accepted: int
    token: int
    next_gamma: int
    done: bool
    t_send: float
    queue_s: float
    verify_s: float
    batch: int
    load: int = 0                    # sessions open at this verifier after the batch (for drafters' routing)
    # DSD's fused mode: the window of this round as the verifier drafted it with its co-located draft model (None:
    # the drafter's own window), and whether the verifier drafts the next round too (the drafter then sends none)
    drafted: np.ndarray | None = None
    fused: bool = False
    TYPE: ClassVar[str] = "verdict"
    ARRAYS: ClassVar[dict] = dict(drafted="<i4?")
    SPEC: ClassVar[dict] = dict(session=_SID, round=_ROUND, accepted=_int(0, MAX_GAMMA), token=_int(0, INT32_MAX),
                                next_gamma=_int(0, MAX_GAMMA), done=_bool, t_send=_TIME, queue_s=_TIME,
                                verify_s=_TIME, batch=_int(1, INT32_MAX), load=_int(0, INT32_MAX),
                                drafted=_opt(_array("i")), fused=_bool)

    def _check(self) -> None:
        d = self.drafted
        if d is not None and (d.ndim != 1 or len(d) > MAX_GAMMA or self.accepted > len(d)):
            _fail("verdict.drafted", f"need a window of 0..{MAX_GAMMA} tokens holding the {self.accepted} accepted, "
                                     f"got shape {d.shape}")


@dataclass(frozen=True, eq=False)
class End(_Message):
    session: str
    reason: str
    TYPE: ClassVar[str] = "end"
    SPEC: ClassVar[dict] = dict(session=_SID, reason=_ID)


@dataclass(frozen=True, eq=False)
class Error(_Message):
    code: str
    message: str
    session: str | None = None
    TYPE: ClassVar[str] = "error"
    SPEC: ClassVar[dict] = dict(code=_ID, message=_str(1024), session=_opt(_SID))


@dataclass(frozen=True, eq=False)
class Ask(_Message):
    """A user's request to the drafter that serves it (Zhu et al.'s upload): its prompt as text, sized by the
    client; the drafter encodes it and cuts or repeats the ids to exactly `prompt_tokens`."""
    request: str
    prompt: bytes
    prompt_tokens: int
    max_new: int
    t_send: float
    TYPE: ClassVar[str] = "ask"
    SPEC: ClassVar[dict] = dict(request=_ID, prompt=_text(1), prompt_tokens=_int(1, MAX_PROMPT),
                                max_new=_int(1, 100_000), t_send=_TIME)


@dataclass(frozen=True, eq=False)
class Answer(_Message):
    """The drafter's reply once the request's session is done: the output ids and their text."""
    request: str
    tokens: np.ndarray
    text: bytes
    t_send: float
    TYPE: ClassVar[str] = "answer"
    ARRAYS: ClassVar[dict] = dict(tokens="<i4")
    SPEC: ClassVar[dict] = dict(request=_ID, tokens=_array("i"), text=_text(0), t_send=_TIME)

    def _check(self) -> None:
        if self.tokens.ndim != 1 or len(self.tokens) > MAX_ANSWER:
            _fail("answer.tokens", f"need 0..{MAX_ANSWER} tokens, got shape {self.tokens.shape}")


Message = Union[Hello, Welcome, Start, Draft, Verdict, End, Error, Ask, Answer]
MESSAGE_TYPES: dict[str, type] = {c.TYPE: c for c in (Hello, Welcome, Start, Draft, Verdict, End, Error, Ask, Answer)}


_IN_PROCESS: dict[bytes, Message] | None = None   # frames encode() made while in_process_frames() is on


@contextmanager
def in_process_frames() -> Iterator[None]:
    """For the simulator, where every sender and receiver is in this process: decode(frame) of a frame that
    encode() made here returns the very message encode() was given (validated when it was built, immutable,
    its arrays read-only) instead of parsing and checking the same bytes again. The frame still exists, so its
    size is exactly what the protocol sends. The ZeroMQ nodes never turn it on: their frames come from sockets."""
    global _IN_PROCESS
    before, _IN_PROCESS = _IN_PROCESS, {}
    try:
        yield
    finally:
        _IN_PROCESS = before


def encode(msg: Message) -> bytes:
    """One frame for `msg` (already validated when it was built)."""
    if not isinstance(msg, _Message):
        raise TypeError(f"encode() takes a protocol message, got {_tn(msg)}")
    frame = msgpack.packb(msg.to_wire(), use_bin_type=True)
    if len(frame) > MAX_FRAME:
        raise ProtocolError("bad_frame", f"{msg.TYPE} frame is {len(frame)} bytes, over MAX_FRAME={MAX_FRAME}")
    if _IN_PROCESS is not None:
        _IN_PROCESS[frame] = msg
    return frame


def decode(frame: bytes) -> Message:
    """Parse and validate one frame. Raises ProtocolError and nothing else, whatever the bytes."""
    if _IN_PROCESS is not None and type(frame) is bytes:
        msg = _IN_PROCESS.pop(frame, None)
        if msg is not None:
            return msg
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise ProtocolError("bad_frame", f"frame must be bytes, got {_tn(frame)}")
    size = frame.nbytes if isinstance(frame, memoryview) else len(frame)
    if size > MAX_FRAME:
        raise ProtocolError("bad_frame", f"frame is {size} bytes, over MAX_FRAME={MAX_FRAME}")
    try:
        obj = msgpack.unpackb(frame, **_UNPACK)   # msgpack yields only plain data, never Python objects
    except Exception as e:  # any parse failure (incl. StackError, ExtraData) is the sender's fault
        raise ProtocolError("bad_frame", f"not a valid msgpack frame ({_tn(e)}: {_short(str(e))})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_frame", f"frame must be a msgpack map, got {_tn(obj)}")
    sid = obj.get("session")
    try:
        v = obj.get("v")
        if type(v) is not int or v != PROTOCOL_VERSION:
            raise ProtocolError("bad_version", f"v: expected {PROTOCOL_VERSION}, got {_short(v)}")
        t = obj.get("type")
        if not isinstance(t, str) or t not in MESSAGE_TYPES:
            raise ProtocolError("bad_type", f"type: unknown message type {_short(t)}")
        return MESSAGE_TYPES[t].from_wire(obj)
    except ProtocolError as e:
        # Tag the error with the session when the frame named a valid one, so the ERROR reply can too.
        if e.session is None and isinstance(sid, str) and _SID_RE.fullmatch(sid):
            e.session = sid
        raise


def make_error_frame(exc: BaseException, session: str | None = None) -> bytes:
    """ERROR frame describing `exc`; never raises (it runs inside error handlers)."""
    try:
        if isinstance(exc, ProtocolError):
            code, text, session = exc.code, exc.message, session or exc.session
        else:
            code, text = "internal", f"{_tn(exc)}: {exc}"
        code = code if isinstance(code, str) and _ID_RE.fullmatch(code) else "internal"
        text = _CTRL_RE.sub(" ", str(text)).encode("utf-8", "replace").decode("utf-8")[:1024] or code
        session = session if isinstance(session, str) and _SID_RE.fullmatch(session) else None
        return encode(Error(code, text, session))
    except Exception:  # an exception whose __str__ fails, say; still answer something
        return encode(Error("internal", f"unprintable {type(exc).__name__}"))


def describe(msg: Message) -> str:
    """One log line: TYPE then key=value, arrays as their shape, floats short."""
    parts = [msg.TYPE.upper()]
    for f in fields(msg):
        x = getattr(msg, f.name)
        if isinstance(x, np.ndarray):
            x = "x".join(map(str, x.shape))
        elif isinstance(x, float):
            x = f"{x:.6g}"
        elif isinstance(x, tuple):
            x = ",".join(x)
        elif isinstance(x, bytes):
            x = f"{len(x)}B"
        parts.append(f"{f.name}={x}")
    if isinstance(msg, Draft):
        parts.append(f"payload={msg.payload}")
    return " ".join(parts)
