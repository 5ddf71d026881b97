"""The host's CPU load while a run goes, sampled by the runner into RUN/events/load.jsonl (Load events).

Every emulated node shares this machine's CPUs: a figure measured while they were saturated may describe the
laptop rather than the modelled system. The pacing metrics (testbed/run/pacing.py) read these samples beside
the synthetic nodes' Pace events."""
from __future__ import annotations

import os
import time
from pathlib import Path

from nodes.events import LOAD_FILE, EventLog, Load


def read_cpu_times(stat: str = "/proc/stat") -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot; None where /proc/stat is absent (not Linux)."""
    try:
        with open(stat) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(x) for x in fields[1:9]]          # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class HostLoad:
    """Writes one Load event per `interval_s` when poll() is called often enough (the runner's supervise loop)."""

    def __init__(self, events_dir: Path, interval_s: float = 1.0, clock=time.monotonic):
        self.log = EventLog(Path(events_dir) / LOAD_FILE, "runner")
        self.interval_s, self.clock = interval_s, clock
        self.last = read_cpu_times()
        self.last_t = clock()
        self.cpus = os.cpu_count() or 0

    def poll(self) -> Load | None:
        if self.clock() - self.last_t < self.interval_s:
            return None
        now = read_cpu_times()
        self.last_t = self.clock()
        if now is None or self.last is None or now[1] <= self.last[1]:
            self.last = now
            return None
        busy = (now[0] - self.last[0]) / (now[1] - self.last[1])
        self.last = now
        event = Load(t=time.time(), node="runner", cpu_busy=round(min(max(busy, 0.0), 1.0), 4),
                     loadavg_1m=round(os.getloadavg()[0], 3), cpus=self.cpus)
        self.log.write(event)
        return event

    def close(self) -> None:
        self.log.close()
