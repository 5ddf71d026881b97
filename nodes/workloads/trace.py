"""Open-loop arrivals from a trace: DSD-Sim's JSONL, one request a line (`workload.arrivals: trace`).

    {"request_id": "gsm8k_00001", "arrival_ms": 50.0, "prompt_tokens": 97, "target_tokens": 134,
     "device_tier": "default", "client_id": "c3"}

request_id (string or integer) and arrival_ms (a number >= 0, from the trace's start) are required;
prompt_tokens and target_tokens (integers >= 1), device_tier (a string) and client_id (string or integer, also
read from `metadata.client_id` as DSD-Sim's generator writes it) are optional; other keys are ignored. A value of
the wrong type is an error `FILE:LINE: field: expected ..., got ...`.

The runner splits a trace among the drafters (`split`): the distinct clients (client_id, else request_id), in the
order they first appear, go to the drafters in turn; a drafter gets its requests with their original times, so
the run keeps the trace's timeline. In a drafter a request starts a session at its arrival time after the
drafter began; prompt_tokens picks the prompt nearest in length (cut or repeated to that many tokens) and
target_tokens is the session's output length (at most workload.max_new).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


class TraceError(ValueError):
    """A trace that cannot be used; str() is one line, `FILE:LINE: field: expected ..., got ...`."""

    def __init__(self, where: str, message: str, field: str = ""):
        file, _, line = where.rpartition(":") if where.rpartition(":")[2].isdigit() else (where, "", "")
        self.file, self.line, self.field, self.message = file, int(line) if line else None, field, message
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")


@dataclass(frozen=True)
class TraceRequest:
    request_id: str
    arrival_s: float
    prompt_tokens: int | None = None
    target_tokens: int | None = None
    device_tier: str | None = None
    client_id: str | None = None
    line: int = 0

    def client(self) -> str:
        return self.request_id if self.client_id is None else self.client_id

    def to_json(self) -> dict:
        out = {"request_id": self.request_id, "arrival_ms": self.arrival_s * 1e3}
        for k in ("prompt_tokens", "target_tokens", "device_tier", "client_id"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


def _got(v) -> str:
    return "nothing" if v is _MISSING else repr(v)


_MISSING = object()


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _id(v, where: str, field: str, required: bool) -> str | None:
    if v is _MISSING or (v is None and not required):
        if required:
            raise TraceError(where, "expected a string or an integer, got nothing", field)
        return None
    if isinstance(v, str) and v or _int(v):
        return str(v)
    raise TraceError(where, f"expected a non-empty string or an integer, got {_got(v)}", field)


def _count(v, where: str, field: str) -> int | None:
    if v is _MISSING or v is None:
        return None
    if not _int(v) or v < 1:
        raise TraceError(where, f"expected an integer >= 1, got {_got(v)}", field)
    return v


def parse_line(obj, where: str, line: int = 0) -> TraceRequest:
    if not isinstance(obj, dict):
        raise TraceError(where, f"expected a JSON object, got {type(obj).__name__} {obj!r:.40}")
    rid = _id(obj.get("request_id", _MISSING), where, "request_id", True)
    t = obj.get("arrival_ms", _MISSING)
    if not (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0):
        raise TraceError(where, f"expected a number >= 0 (ms from the trace's start), got {_got(t)}", "arrival_ms")
    tier = obj.get("device_tier")
    if tier is not None and not isinstance(tier, str):
        raise TraceError(where, f"expected a string, got {tier!r}", "device_tier")
    client = obj.get("client_id", _MISSING)
    meta = obj.get("metadata")
    if client is _MISSING and isinstance(meta, dict) and "client_id" in meta:
        client = _id(meta["client_id"], where, "metadata.client_id", False)
    else:
        client = _id(client, where, "client_id", False)
    return TraceRequest(rid, float(t) / 1e3, _count(obj.get("prompt_tokens", _MISSING), where, "prompt_tokens"),
                        _count(obj.get("target_tokens", _MISSING), where, "target_tokens"), tier, client, line)


def read_trace(path: str | Path, allow_empty: bool = False) -> list[TraceRequest]:
    """Every request of a trace file, by arrival time (ties: file order); TraceError on the first bad line.
    A drafter's share of a split trace may be empty (allow_empty)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(str(path), f"cannot read the trace: {getattr(e, 'strerror', None) or e}") from None
    out: list[TraceRequest] = []
    seen: dict[str, int] = {}
    for n, text in enumerate(lines, 1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise TraceError(where, f"expected a JSON object, got {text[:40]!r} ({e.args[0].split(':')[0]})") \
                from None
        r = parse_line(obj, where, n)
        if r.request_id in seen:
            raise TraceError(where, f"expected a unique id, got {r.request_id!r} again (first on line "
                                    f"{seen[r.request_id]})", "request_id")
        seen[r.request_id] = n
        out.append(r)
    if not out and not allow_empty:
        raise TraceError(str(path), "expected at least one request, got none")
    return sorted(out, key=lambda r: r.arrival_s)


def split(requests: list[TraceRequest], drafters: list[str]) -> dict[str, list[TraceRequest]]:
    """Each drafter's requests: distinct clients in order of first appearance, dealt to the drafters in turn."""
    order: dict[str, int] = {}
    out: dict[str, list[TraceRequest]] = {d: [] for d in drafters}
    for r in requests:
        k = order.setdefault(r.client(), len(order))
        out[drafters[k % len(drafters)]].append(r)
    return out


def to_jsonl(requests: list[TraceRequest]) -> str:
    return "".join(json.dumps(r.to_json()) + "\n" for r in requests)
