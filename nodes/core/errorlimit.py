"""Protocol errors in a node's log, bounded: a peer that floods a node with bad frames must not fill its disk.

    limiter = ErrorLimiter()
    repeated = limiter.admit((peer, code), now)     # None: count it, log nothing; else log it with `repeated`

The first `burst` errors of each (peer, code) in a `window_s` window are logged; the rest of the window's are
counted, and the next one logged after the window carries that count (`repeated`), so the log still says how many
there were. Peers are bounded too (a hostile sender may make up a new identity per frame): past `max_keys`
distinct keys, every further peer shares one key, "*". Pure: no I/O, time is given.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable


@dataclass
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


@dataclass
class ErrorLimiter:
    burst: int = 10
    window_s: float = 10.0
    max_keys: int = 1024
    _keys: dict[Hashable, _Window] = field(default_factory=dict)

    def admit(self, key: Hashable, now: float) -> int | None:
        if key not in self._keys and len(self._keys) >= self.max_keys:
            key = ("*", key[1] if isinstance(key, tuple) and len(key) > 1 else None)
        w = self._keys.get(key)
        if w is None or now - w.start >= self.window_s:
            repeated = w.suppressed if w is not None else 0
            self._keys[key] = _Window(now, 1)
            return repeated
        if w.logged < self.burst:
            w.logged += 1
            return 0
        w.suppressed += 1
        return None

    def pending(self) -> int:
        """Errors counted but not yet logged (in windows that have not been followed by another error)."""
        return sum(w.suppressed for w in self._keys.values())
