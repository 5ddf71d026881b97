"""Which verifier a session's rounds go to, when several verifiers serve the drafters (DSD's M targets).

`route(session, queues, now)` gets the session id, each verifier's queue length (requests waiting plus the
one in service, as DSD's simulator counts it) and the current time, and returns a verifier name.

Session affinity, shared by every policy: the first round of a session is placed by the policy; every later
round of that session goes to the same verifier until `release(session)`, because the session's KV cache
lives there (DSD pins a conversation's decode rounds to the target of its prefill). If the pinned verifier is
no longer in `queues` (it left or failed) the session is placed afresh: its cache is gone either way.
Only first placements consult the policy, so they alone advance round-robin's counter or draw from the RNG.

Policies are pure apart from that affinity table and their seeded RNG: no I/O, no clock (time is passed in;
these policies ignore it, time-aware ones may not). Where a policy compares verifiers it walks them in
sorted-name order, so results never depend on the mapping's insertion order.
"""
from __future__ import annotations

import math
import random
from collections import deque
from typing import Mapping, Protocol, Sequence
from testbed.policies.timing import best_seconds_per_call

ROUTERS = ("random", "round-robin", "jsq", "jsq-d")


class RoutingPolicy(Protocol):
    name: str

    def route(self, session: str, queues: Mapping[str, int], now: float) -> str: ...

    def release(self, session: str) -> None: ...


def _seed(seed) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return seed


class _AffinityRouter:
    """Affinity bookkeeping; subclasses implement `_place(names, queues)` for a session's first round."""
    name = "?"

    def __init__(self) -> None:
        self._pinned: dict[str, str] = {}

    def route(self, session: str, queues: Mapping[str, int], now: float) -> str:
        pinned = self._pinned.get(session)
        if pinned is not None and pinned in queues:
            return pinned       # the common case: O(1), no validation of the whole mapping
        if not queues:
            raise ValueError("queues must name at least one verifier")
        for v, q in queues.items():
            if not isinstance(q, int) or isinstance(q, bool) or q < 0:
                raise ValueError(f"queues[{v!r}] must be an integer >= 0, got {q!r}")
        choice = self._place(sorted(queues), queues)
        self._pinned[session] = choice
        return choice

    def release(self, session: str) -> None:
        self._pinned.pop(session, None)   # releasing an unknown session is harmless (e.g. a retry)

    def assigned(self, session: str) -> str | None:
        """The verifier the session is pinned to, or None."""
        return self._pinned.get(session)

    def _place(self, names: list[str], queues: Mapping[str, int]) -> str:
        raise NotImplementedError


class RandomRouter(_AffinityRouter):
    """A uniformly random verifier, ignoring queues (seeded)."""
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self._rng = random.Random(_seed(seed))

    def _place(self, names: list[str], queues: Mapping[str, int]) -> str:
        return names[self._rng.randrange(len(names))]


class RoundRobinRouter(_AffinityRouter):
    """The k-th first placement goes to sorted(verifiers)[(start + k) mod M], ignoring queues. If the verifier
    set changes the counter carries on over the new sorted list. start = 0 by default; each drafter gives its own
    (`start=offset`), since many drafters each running their own counter from 0 would all place their first
    sessions on the same verifier (a central round-robin, as DSD-Sim's, spreads them)."""
    name = "round-robin"

    def __init__(self, start: int = 0) -> None:
        super().__init__()
        self._next = _seed(start)

    def _place(self, names: list[str], queues: Mapping[str, int]) -> str:
        choice = names[self._next % len(names)]
        self._next += 1
        return choice


class JSQRouter(_AffinityRouter):
    """Join the shortest queue. ties="name" (default): the first tied verifier by name, deterministic;
    ties="random": uniformly among the tied ones (seeded), which spreads light load instead of piling the
    idle-time placements onto one verifier."""
    name = "jsq"

    def __init__(self, ties: str = "name", seed: int = 0) -> None:
        super().__init__()
        if ties not in ("name", "random"):
            raise ValueError(f"ties must be 'name' or 'random', got {ties!r}")
        self.ties = ties
        self._rng = random.Random(_seed(seed))

    def _place(self, names: list[str], queues: Mapping[str, int]) -> str:
        low = min(queues[v] for v in names)
        tied = [v for v in names if queues[v] == low]
        return tied[0] if self.ties == "name" else tied[self._rng.randrange(len(tied))]


class JSQdRouter(_AffinityRouter):
    """Power of d choices: sample d distinct verifiers uniformly (seeded), join the shortest of those; ties
    by name among the sampled. d >= M is plain JSQ."""
    name = "jsq-d"

    def __init__(self, d: int = 2, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise ValueError(f"d must be an integer >= 1, got {d!r}")
        self.d = d
        self._rng = random.Random(_seed(seed))

    def sample(self, names: Sequence[str]) -> list[str]:
        """The d distinct candidates (all of them if d >= len(names)), in sorted order; consumes the RNG."""
        names = sorted(names)
        return sorted(self._rng.sample(names, min(self.d, len(names))))

    def _place(self, names: list[str], queues: Mapping[str, int]) -> str:
        return min(self.sample(names), key=lambda v: queues[v])   # min keeps the first (by name) of ties


_CLASSES = {"random": RandomRouter, "round-robin": RoundRobinRouter, "jsq": JSQRouter, "jsq-d": JSQdRouter}
_PARAMS = {"random": ("seed",), "round-robin": ("start",), "jsq": ("ties", "seed"), "jsq-d": ("d", "seed")}


def make_router(name: str, **params) -> RoutingPolicy:
    """`make_router("jsq-d", d=2, seed=1)`; unknown names or parameters raise ValueError."""
    if name not in _CLASSES:
        raise ValueError(f"router must be one of {', '.join(ROUTERS)}, got {name!r}")
    for key in params:
        if key not in _PARAMS[name]:
            raise ValueError(f"router {name!r}: unknown parameter {key!r} (takes {', '.join(_PARAMS[name]) or 'none'})")
    return _CLASSES[name](**params)


def simulate_routing(router: RoutingPolicy, arrivals: Sequence[float], service_times: Sequence[float],
                     n_servers: int) -> list[float]:
    """Waits in queue (start of service − arrival) of jobs routed onto n_servers identical FIFO servers.

    A small discrete-event model for comparing policies on identical inputs: job k arrives at arrivals[k]
    (nondecreasing) needing service_times[k]; it is its own one-round session "job<k>", routed on arrival
    with the queue lengths at that instant (jobs waiting plus in service) and released at once (a session
    that never returns needs no affinity). Deterministic given the router's seed.
    """
    if not isinstance(n_servers, int) or isinstance(n_servers, bool) or n_servers < 1:
        raise ValueError(f"n_servers must be an integer >= 1, got {n_servers!r}")
    if len(arrivals) != len(service_times):
        raise ValueError(f"service_times must have one entry per arrival ({len(arrivals)}), got {len(service_times)}")
    names = [f"v{i}" for i in range(n_servers)]
    departures = {v: deque() for v in names}   # per server, departure times of the jobs still there (FIFO)
    waits: list[float] = []
    last = -math.inf
    for k, (t, s) in enumerate(zip(arrivals, service_times)):
        if not (math.isfinite(t) and t >= last):
            raise ValueError(f"arrivals[{k}] must be finite and nondecreasing, got {t!r}")
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"service_times[{k}] must be a finite number >= 0, got {s!r}")
        last = t
        for dq in departures.values():
            while dq and dq[0] <= t:
                dq.popleft()
        v = router.route(f"job{k}", {u: len(departures[u]) for u in names}, t)
        router.release(f"job{k}")
        dq = departures[v]
        start = dq[-1] if dq else t     # FIFO: service starts when the last job ahead departs
        waits.append(start - t)
        dq.append(start + s)
    return waits


def decision_times(n: int = 64, repeats: int = 2000, seed: int = 0) -> dict[str, float]:
    """Seconds per first placement (route + release of a new session) with n verifiers, best of 5 batches.
    Affine rounds are a dict lookup and not measured."""
    rng = random.Random(seed)
    queues = {f"v{i}": rng.randrange(16) for i in range(n)}
    times: dict[str, float] = {}
    for name in ROUTERS:
        router = make_router(name)

        def place_and_release(router=router):
            router.route("s", queues, 0.0)
            router.release("s")
        times[name] = best_seconds_per_call(place_and_release, repeats)
    return times
