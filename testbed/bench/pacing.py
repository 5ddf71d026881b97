"""`make bench` (pacing half): how many synthetic drafters this machine paces within 5 % on the mininet backend.

Each point runs N synthetic drafters (2 ms per drafted token, α 0.8, γ 4) and a synthetic verifier (20 ms +
1 ms per token) on a star of N Wi-Fi stations, for a fixed time, and reads the run's pacing metrics
(testbed/run/pacing.py): realised/profile of the drafters' compute steps. Printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from testbed.run.pacing import P50_LIMIT, P95_LIMIT


def star(n: int) -> dict:
    nodes = {"ap1": {"role": "ap"}, "verifier": {"role": "verifier"}}
    nodes.update({f"d{i}": {"role": "drafter"} for i in range(1, n + 1)})
    links = [{"a": f"d{i}", "b": "ap1", "kind": "wireless", "rate_up_mbps": 20, "rate_down_mbps": 20, "delay_ms": 10}
             for i in range(1, n + 1)]
    links.append({"a": "ap1", "b": "verifier", "kind": "wired", "rate_up_mbps": 1000, "rate_down_mbps": 1000,
                  "delay_ms": 1, "queue_pkts": 1000})
    return {"name": f"star-{n}", "nodes": nodes, "links": links}


def point(n: int, seconds: float, results: Path) -> dict:
    from testbed.run.experiment import experiment_from_dict
    from testbed.run.runner import run_point
    exp = experiment_from_dict({
        "name": f"pacing-{n}", "topology": star(n), "backend": "mininet",
        "verifier": {"backend": "synthetic", "verify_base_ms": 20, "verify_per_token_ms": 1},
        "drafters": {"backend": "synthetic", "alpha": 0.8, "draft_token_ms": 2},
        "workload": {"duration_s": seconds, "max_new": 64},
        "speculation": {"gamma": 4, "proactive": True},
        "batching": {"rule": "fifo", "max_batch": 64},
        "limits": {"ready_timeout_s": 120, "run_timeout_s": 600},
    })
    r = run_point(exp, results)
    m = json.loads((r.run_dir / "metrics.json").read_text())
    p = m["pacing"]
    return {"n": n, "status": r.status, "drafter_p50": p["drafters"]["p50"], "drafter_p95": p["drafters"]["p95"],
            "verifier_p50": p["verifier"]["p50"], "cpu_busy": p["cpu_busy_mean"], "goodput": m["total"]["goodput_tps"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.pacing", description=__doc__.splitlines()[0])
    ap.add_argument("--drafters", default="2,4,8,16,32", help="N values to try, in increasing order")
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args(argv)
    rows, paced = [], 0
    with tempfile.TemporaryDirectory(prefix="specnet-bench-pacing-") as tmp:
        for n in [int(x) for x in args.drafters.split(",")]:
            row = point(n, args.seconds, Path(tmp))
            rows.append(row)
            ok = row["drafter_p50"] is not None and row["drafter_p50"] <= P50_LIMIT and row["drafter_p95"] <= P95_LIMIT
            print(f"pacing: {n:3d} synthetic drafters (mininet): drafter realised/profile p50 {row['drafter_p50']:.3f} "
                  f"p95 {row['drafter_p95']:.3f}; verifier p50 {row['verifier_p50']:.3f}; host CPU busy "
                  f"{100 * (row['cpu_busy'] or 0):.0f} %; goodput {row['goodput']:.0f} tok/s; "
                  f"{'paced' if ok else 'DISTORTED'}", flush=True)
            if not ok:
                break
            paced = n
    print(f"pacing: this machine paces {paced} synthetic drafters within 5 % at p50 and 20 % at p95 on the mininet backend "
          f"(tried {', '.join(str(r['n']) for r in rows)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
