"""How a drafter notices that its verifier died, stalled or restarted, and what it does then. Pure: time is given.

Semantics (documented in README "Faults and recovery"):
- Every node draws an *incarnation* number when its process starts. The verifier sends its own in every WELCOME;
  the drafter sends its own in every HELLO.
- A drafter with work in flight at a verifier that has sent nothing for `probe_s` sends it HELLO again (a probe;
  at most one per `probe_s`). A verifier that is alive but slow or stalled (SIGSTOP) answers WELCOME with the same
  incarnation once it runs again: nothing else happens, the windows in flight are answered as usual. A link outage
  is the same: TCP delivers the frames when the link comes back.
- A verifier that answers with another incarnation restarted and lost every session: the drafter re-opens each of
  its sessions there with START carrying the prompt *and every token committed so far* (`committed`, re-prefilled
  by the verifier) and the next round number. Windows lost with the old process are drafted again from the
  committed tokens. No committed token is lost or repeated, so with greedy decoding every session's output is the
  unfaulted run's, token for token.
- A restarted verifier answers frames queued for its predecessor with ERROR not_registered / bad_session: the
  drafter takes those as "probe now", not as a refusal.
- A verifier that receives HELLO from a known drafter name with another incarnation drops the old one's sessions
  (the drafter restarted; `nodes/drafter.py` says what a restarted drafter does with its unfinished requests).
- A verifier silent for the drafter's `timeout_s` (default 120 s) ends the drafter with an error, as before.
Fused modes (the verifier drafts with a co-located model) do not resume: a restart there ends the drafter.
"""
from __future__ import annotations

# ERROR codes from a verifier that does not know this drafter or a session: what a restarted verifier says to
# frames sent to its predecessor
LOST_STATE_CODES = frozenset({"not_registered", "bad_session"})


class VerifierWatch:
    """Per verifier: its incarnation, when it was last heard from, and when it was last probed."""

    def __init__(self, probe_s: float):
        self.probe_s = probe_s
        self.incarnation: dict[str, int] = {}
        self.heard: dict[str, float] = {}
        self.probed: dict[str, float] = {}

    def welcomed(self, verifier: str, incarnation: int, now: float) -> bool:
        """A WELCOME arrived; True if it comes from a new incarnation of a verifier already known (a restart)."""
        before = self.incarnation.get(verifier)
        self.incarnation[verifier] = incarnation
        self.heard[verifier] = now
        self.probed.pop(verifier, None)
        return before is not None and before != incarnation

    def heard_from(self, verifier: str, now: float) -> None:
        self.heard[verifier] = now

    def due(self, busy: set[str]) -> float:
        """When the next probe of a verifier with work in flight is due (inf: none)."""
        times = [max(self.heard.get(v, 0.0), self.probed.get(v, -float("inf"))) + self.probe_s for v in busy]
        return min(times, default=float("inf"))

    def to_probe(self, busy: set[str], now: float, force: str | None = None) -> list[str]:
        """Verifiers to send a probe HELLO now: silent for probe_s with work in flight, not probed within probe_s;
        `force`: one that just answered with a lost-state ERROR (still at most one probe per probe_s)."""
        out = []
        for v in sorted(busy | ({force} if force else set())):
            # the very sums due() wakes at: `now - heard >= probe_s` can be false at now == heard + probe_s in
            # floating point, and a simulated clock would then wake at that instant forever
            silent = now >= self.heard.get(v, now) + self.probe_s
            if (v == force or silent) and now >= self.probed.get(v, -float("inf")) + self.probe_s:
                self.probed[v] = now
                out.append(v)
        return out
