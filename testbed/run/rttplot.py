"""Goodput against the round-trip time, one line per speculation setting: what `make demo` answers.

    rtt_table(run_dirs) -> (rows, text)     # text: a markdown table, settings as rows, RTTs as columns
    goodput_vs_rtt(run_dirs, out_dir) -> Path | None   # goodput_vs_rtt.png; None unless >= 2 distinct RTTs

A run's RTT is its drafters' mean configured path RTT (manifest `paths`, from the topology with its link
overrides: one-way delays both ways); its setting is named from `speculation`: "AD (γ=0)" for γ 0 with the static
policy, "SD γ=N" for the static policy, else the policy's name. Goodput is metrics.json's total goodput_tps.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


def setting(config: dict) -> str:
    spec = config.get("speculation", {})
    policy = spec.get("policy", "static")
    name = policy if isinstance(policy, str) else policy.get("policy", "?")
    if name == "static":
        return "AD (γ=0)" if spec.get("gamma") == 0 else f"SD γ={spec.get('gamma')}"
    return f"SD {name}"


def _point(run_dir: Path) -> tuple[str, float, float, dict] | None:
    try:
        man = json.loads((run_dir / "manifest.json").read_text())
        m = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    paths = man.get("paths") or {}
    if not paths or m["total"].get("goodput_tps") is None:
        return None
    rtt = sum(p["rtt_ms"] for p in paths.values()) / len(paths)
    return setting(man.get("config", {})), rtt, m["total"]["goodput_tps"], m


def rtt_table(run_dirs) -> tuple[dict, str]:
    """{setting: {rtt_ms: goodput}} and a markdown table with each SD setting's speed-up over AD."""
    rows: dict[str, dict[float, float]] = defaultdict(dict)
    for d in run_dirs:
        p = _point(Path(d))
        if p:
            rows[p[0]][round(p[1], 3)] = p[2]
    rtts = sorted({r for series in rows.values() for r in series})
    ad = rows.get("AD (γ=0)", {})
    head = "| setting | " + " | ".join(f"RTT {r:g} ms" for r in rtts) + " |"
    lines = [head, "|---" * (len(rtts) + 1) + "|"]
    for name in sorted(rows, key=lambda n: (not n.startswith("AD"), n)):
        cells = []
        for r in rtts:
            g = rows[name].get(r)
            if g is None:
                cells.append("–")
            elif name.startswith("AD") or not ad.get(r):
                cells.append(f"{g:.1f} tok/s")
            else:
                cells.append(f"{g:.1f} tok/s ({g / ad[r]:.2f}× AD)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return dict(rows), "\n".join(lines)


def compute_note(run_dirs) -> str:
    """What the runs' compute was, for the figure: the profiles of a synthetic run, or "real models"."""
    for d in run_dirs:
        try:
            config = json.loads((Path(d) / "manifest.json").read_text())["config"]
        except (OSError, ValueError, KeyError):
            continue
        v, ds = config.get("verifier", {}), list(config.get("drafters", {}).values())
        if "backend" not in v:
            continue
        if v["backend"] != "synthetic":
            return "compute: real models on this machine"

        def name(p):
            return "linear profile" if not p else p.get("table") and Path(p["table"]).name or \
                f"{p.get('model')} on {p.get('device')}"
        drafts = sorted({name(x.get("profile")) for x in ds})
        return f"compute profiled: verifier {name(v.get('profile'))}; drafters {', '.join(drafts)}"
    return ""


def goodput_vs_rtt(run_dirs, out_dir) -> Path | None:
    rows, _ = rtt_table(run_dirs)
    rtts = {r for series in rows.values() for r in series}
    if len(rtts) < 2:
        return None
    from testbed.common.figures import Figure, finish_axis, save
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    for name in sorted(rows, key=lambda n: (not n.startswith("AD"), n)):
        xs = sorted(rows[name])
        style = dict(color="black", linestyle="--", marker="s") if name.startswith("AD") else dict(marker="o")
        ax.plot(xs, [rows[name][x] for x in xs], label=name, **style)
    note = compute_note(run_dirs)
    ax.set(xlabel="round-trip time drafter ↔ verifier (ms, configured)", ylabel="total goodput (tokens/s)",
           title="Goodput vs RTT per speculation setting" + (f"\n{note}" if note else ""))
    ax.set_ylim(bottom=0)
    finish_axis(ax, True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return save(fig, out / "goodput_vs_rtt.png")
