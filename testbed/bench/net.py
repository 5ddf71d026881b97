"""`make bench`: how faithfully the emulator reproduces rate and RTT over a grid (not a pass/fail test).

One star-wifi-4 emulation; the d1 link is set to each rate × RTT in turn (backhaul fast and delay-free), then
measured as `testbed calibrate` does. Prints configured vs measured with ratios; timings on a shared 2-core
machine are noisy, so read ratios, not absolutes.
"""
from __future__ import annotations

import argparse
import sys
import time

from testbed.net import calibrate as cal
from testbed.net.emulation import Emulation
from testbed.net.linkstate import LinkState
from testbed.net.topology import load_topology

RATES = (1, 10, 50, 100)
RTTS = (5, 20, 80)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.net", description=__doc__.splitlines()[0])
    ap.add_argument("--topology", default="topologies/star-wifi-4.yaml")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds of bulk transfer per cell")
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--delay-backend", default=None)
    args = ap.parse_args(argv)
    link = "d1-ap1"
    rows = []
    started = time.monotonic()
    with Emulation(load_topology(args.topology), args.delay_backend) as emu:
        emu.set_link("ap1-verifier", LinkState(1000, 1000, queue_pkts=1000))
        print(f"delay backend: {emu.backend} ({emu.backend_reason}); link {link}, d1 -> verifier", flush=True)
        for i, rate in enumerate(RATES):
            for j, rtt in enumerate(RTTS):
                n = i * len(RTTS) + j + 1
                print(f"[{n}/{len(RATES) * len(RTTS)}] {rate} Mbit/s, RTT {rtt} ms ...", file=sys.stderr, flush=True)
                # Queue of about one bandwidth-delay product (at least 50 packets), as a tuned AP would hold.
                queue = max(50, int(rate * 1e6 / 8 * rtt / 1e3 / 1514))
                emu.set_link(link, LinkState(rate, rate, delay_ms=rtt / 2, queue_pkts=queue))
                row = cal.plan_row(emu.net_plan, emu.shaping.states, emu.net_plan.link(link), "up")
                cal.measure_rate(emu, row, args.duration)
                cal.measure_rtt(emu, row, args.probes)
                rows.append(row)
    head = (f"{'rate':>5} {'RTT':>4} | {'meas Mbit/s':>11} {'ratio':>6} {'goodput':>7} | "
            f"{'RTT cfg':>7} {'p50':>7} {'p50-cfg':>7} {'p99':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        rtt_cfg = r.rtt_ms
        print(f"{r.rate_mbps:>5g} {round(rtt_cfg):>4} | {r.measured_rate_mbps:>11.2f} {r.rate_ratio:>6.3f} "
              f"{r.goodput_mbps:>7.2f} | {rtt_cfg:>7.2f} {r.measured_rtt_p50_ms:>7.2f} "
              f"{r.measured_rtt_p50_ms - rtt_cfg:>+7.2f} {r.measured_rtt_p99_ms:>7.2f}")
    print(f"rate ratio median {sorted(r.rate_ratio for r in rows)[len(rows) // 2]:.3f}; "
          f"RTT error median {sorted(r.measured_rtt_p50_ms - r.rtt_ms for r in rows)[len(rows) // 2]:+.2f} ms; "
          f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
