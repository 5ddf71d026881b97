"""A flood of bad frames leaves a bounded log that still counts every error (issue 14: 100,000 hostile frames
wrote 22 MB of verifier log)."""
from __future__ import annotations

from nodes.backends.synthetic import ComputeProfile, SyntheticTarget
from nodes.config import VerifierConfig
from nodes.core.actions import Record, Send
from nodes.core.errorlimit import ErrorLimiter
from nodes.core.verifier import VerifierCore
from nodes.events import Error


def test_the_first_errors_are_logged_then_counted_and_the_count_is_logged_later():
    lim = ErrorLimiter(burst=3, window_s=10.0)
    got = [lim.admit(("p", "bad_frame"), t * 0.01) for t in range(100)]
    assert got[:3] == [0, 0, 0] and all(g is None for g in got[3:])
    assert lim.pending() == 97
    assert lim.admit(("p", "bad_frame"), 10.5) == 97          # the next window's first carries the count
    assert lim.admit(("q", "bad_frame"), 10.5) == 0            # another peer: its own budget


def test_made_up_identities_share_one_budget_past_max_keys():
    lim = ErrorLimiter(burst=2, window_s=10.0, max_keys=5)
    logged = sum(lim.admit((f"peer{i}", "bad_frame"), 0.0) is not None for i in range(10_000))
    assert logged == 5 + 2


def test_a_verifier_flooded_with_garbage_logs_a_bounded_number_of_errors_and_answers_every_frame():
    core = VerifierCore(VerifierConfig(model={"backend": "synthetic", "vocab_size": 1000}),
                        SyntheticTarget(1000, ComputeProfile(0.0, 0.01, 0.0)))
    records = replies = 0
    for i in range(100_000):
        for a in core.on_frame(b"evil", b"\xc1garbage", i * 1e-4):       # 10 s of frames
            records += isinstance(a, Record) and isinstance(a.event, Error)
            replies += isinstance(a, Send)
    assert replies == 100_000
    assert records <= 10
    out = core.on_frame(b"evil", b"\xc1garbage", 10.5)
    (err,) = [a.event for a in out if isinstance(a, Record)]
    assert err.repeated == 100_000 - records
