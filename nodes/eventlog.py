"""Per-node event logs: EventLog writes one JSON object per line, flushed per event, so a crash loses at most
one round; EventTail follows logs while they grow (the runner's progress, the channel driver's demand).

Every line has `t` (seconds since the epoch, time.time(): all emulated hosts share the machine's clock, so
one-way times between nodes can be computed directly), `node` and `event`.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterator


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


class EventTail:
    """New complete events of each named log since the last call; a half-written last line waits for the next."""

    def __init__(self, files: dict[str, Path]):
        self.files = {name: Path(f) for name, f in files.items()}
        self.offsets = {name: 0 for name in files}

    def new_events(self) -> Iterator[tuple[str, dict]]:
        for name, f in self.files.items():
            try:
                with open(f, "rb") as fh:
                    fh.seek(self.offsets[name])
                    chunk = fh.read()
            except OSError:            # not created yet
                continue
            complete = chunk[:chunk.rfind(b"\n") + 1]
            self.offsets[name] += len(complete)
            for line in complete.splitlines():
                try:
                    yield name, json.loads(line)
                except ValueError:     # a node's crash can leave garbage; progress must not die of it
                    continue
