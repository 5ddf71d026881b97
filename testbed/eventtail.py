"""Follow the nodes' JSONL event logs while they grow (the runner's progress bar, the channel driver's demand)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


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
