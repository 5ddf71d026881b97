"""The timing rule of every policy benchmark (testbed/bench/policies.py, and routing's `decision_times`): run by
`make bench`, never asserted in tests."""
from __future__ import annotations

import time
from typing import Callable


def best_seconds_per_call(call: Callable[[], object], repeats: int, batches: int = 5) -> float:
    """Seconds per call, the best of `batches` batches of `repeats` calls: the minimum is the run least
    disturbed by other load on a shared machine."""
    best = float("inf")
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best
