"""Per-node event log: one JSON object per line, flushed per event, so a crash loses at most one round.

Every line has `t` (seconds since the epoch, time.time(): all emulated hosts share the machine's clock, so
one-way times between nodes can be computed directly), `node` and `event`.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class EventLog:
    def __init__(self, path: str | Path | None, node: str):
        self.node = node
        if path is None:
            self.f = None
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.f = open(path, "a", buffering=1)

    def write(self, event: str, **fields) -> None:
        if self.f is None:
            return
        self.f.write(json.dumps({"t": time.time(), "node": self.node, "event": event, **fields},
                                separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def log_error(node: str, message: str) -> None:
    print(f"{node}: {message}", file=sys.stderr, flush=True)
