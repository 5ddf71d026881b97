"""python -m nodes.acceptance [--gamma G]: the shipped acceptance traces and published figures."""
from __future__ import annotations

import argparse
import sys

from nodes.acceptance import published_entries, traces


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nodes.acceptance", description=__doc__.split(":")[1].strip())
    ap.add_argument("--gamma", type=int, default=4, help="window the traces are capped at [4]")
    g = ap.parse_args(argv).gamma
    print(f"Recorded traces (alpha: {{trace: NAME}}), replayed at gamma={g}:")
    print(f"  {'NAME':40} {'ROUNDS':>6} {'REC.G':>5} {'ACC@' + str(g):>7} {'TAU':>6} {'ALPHA':>6}  PER-POSITION")
    for t in traces():
        curve = " ".join(f"{a:.2f}" for a in t.curve())
        print(f"  {t.name:40} {len(t.records):6d} {t.header.get('gamma', '?'):>5} {t.mean_accepted(g):7.3f} "
              f"{1 + t.mean_accepted(g):6.3f} {t.implied_alpha(g):6.3f}  {curve}")
    print("\nPublished figures (alpha: {published: ID}; * = read in a secondary source):")
    for e in published_entries().values():
        try:
            alpha = f"{e.effective_alpha():.3f}"
        except ValueError:
            alpha = "-"
        print(f"  {e.id + ('*' if e.secondary else ''):44} {e.target} <- {e.draft} [{e.dataset}]: {e.figure()}; "
              f"alpha {alpha}  ({e.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
