"""32 synthetic drafter processes against one synthetic verifier process on loopback.

Four groups of eight drafters draft with alpha 0.5, 0.7, 0.8 and 0.9 (gamma 4, proactive drafting on), each
for at least 200 verification rounds. From the verifier's own event log (`verify` events: drafter, gamma,
accepted) the per-position acceptance of each group is estimated as

    accepted / (accepted + rounds with accepted < gamma)

i.e. successes over the Bernoulli trials the verifier actually observed: a round tests its drafts in order and
stops at the first rejection, so it contributes `accepted` successes plus one failure if it stopped early.
The naive accepted / proposed is biased low: the drafts after the first rejection are proposed but never
tested (they are discarded whatever they were), so it estimates E[accepted] / gamma
= alpha (1 - alpha^gamma) / ((1 - alpha) gamma), e.g. 0.23 instead of 0.5 for alpha 0.5, gamma 4.
"""
from __future__ import annotations

import collections
import math
import time

from nodes.backends.synthetic import SyntheticDraft, session_key, true_token
from tests.nodeproc import finish, read_jsonl, start_drafter, verifier

V = 1000
GAMMA = 4
ALPHAS = (0.5, 0.7, 0.8, 0.9)
PER_GROUP = 8
MIN_ROUNDS = 200
TARGET_ROUNDS = 280      # expected rounds per drafter; the spread around it is a few rounds
TOL = 0.03


def tokens_per_round(alpha: float, gamma: int = GAMMA) -> float:
    """Expected accepted + 1 per round: sum_{j=0..gamma} alpha^j."""
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def test_32_drafters_acceptance_matches_alpha_per_group(tmp_path):
    t0 = time.monotonic()
    log = tmp_path / "verifier.jsonl"
    drafters = {}     # name -> (alpha, prompt, seed, max_new)
    for g, alpha in enumerate(ALPHAS):
        max_new = math.ceil(TARGET_ROUNDS * tokens_per_round(alpha))
        for i in range(PER_GROUP):
            n = g * PER_GROUP + i
            drafters[f"a{int(alpha * 100)}-{i}"] = (alpha, f"prompt {n}", n, max_new)
    with verifier("--backend", "synthetic", "--vocab-size", str(V), "--max-batch", "32", log=log) as (vp, ep):
        procs = [start_drafter(ep, name, tmp_path / f"{name}.jsonl", "--backend", "synthetic", "--vocab-size", str(V),
                               "--alpha", str(alpha), "--prompt", prompt, "--seed", str(seed), "--max-new",
                               str(max_new), "--gamma", str(GAMMA), "--timeout", "60")
                 for name, (alpha, prompt, seed, max_new) in drafters.items()]
        finish(procs, timeout=150)          # every drafter exited 0 (finish asserts it)
        assert vp.poll() is None, "verifier died"
    wall_s = time.monotonic() - t0

    # every drafter's output is its true sequence
    for name, (alpha, prompt, seed, max_new) in drafters.items():
        [res] = read_jsonl(tmp_path / f"{name}.jsonl")
        key = session_key(SyntheticDraft(V).encode(prompt), seed)
        assert res["tokens"] == [true_token(key, i, V) for i in range(max_new)], name

    events = [e for e in read_jsonl(log) if e["event"] == "verify"]
    rounds = collections.Counter(e["drafter"] for e in events if e["gamma"] > 0)
    assert set(rounds) == set(drafters)
    assert min(rounds.values()) >= MIN_ROUNDS, rounds
    assert all(e["gamma"] in (0, GAMMA) for e in events)
    max_batch = max(e["batch"] for e in events)
    assert max_batch > 1, "the verifier never batched"

    report = []
    for alpha in ALPHAS:
        mine = [e for e in events if drafters[e["drafter"]][0] == alpha and e["gamma"] > 0]
        successes = sum(e["accepted"] for e in mine)
        failures = sum(e["accepted"] < e["gamma"] for e in mine)
        est = successes / (successes + failures)
        naive = successes / sum(e["gamma"] for e in mine)
        report.append(f"alpha {alpha}: {est:.4f} over {successes + failures} trials "
                      f"(accepted/proposed {naive:.3f}), rounds/drafter {min(rounds[n] for n in drafters if drafters[n][0] == alpha)}"
                      f"..{max(rounds[n] for n in drafters if drafters[n][0] == alpha)}")
        assert abs(est - alpha) <= TOL, report[-1]
    print(f"\n{len(events)} verify events, max batch {max_batch}, wall {wall_s:.1f} s\n" + "\n".join(report))
    assert wall_s < 90, wall_s
