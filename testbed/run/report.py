"""Compare runs side by side: a table of key metrics (one column per run) and overlay plots.

    print(compare([run_a, run_b]))
    overlay_plots([run_a, run_b], out_dir) -> [goodput_overlay.png, e2e_cdf_overlay.png]

A run's column is headed by its manifest `label` (the directory name when there is none). Metrics come from
its metrics.json, or are computed from its event logs when that file is missing.
"""
from __future__ import annotations

import json
from pathlib import Path

from nodes.events import Verdict, load_run, of_type
from testbed.run import metrics as M
from testbed.run import plots as P

ROWS = [  # (row label, total key, scale, format)
    ("total goodput (tokens/s)", "goodput_tps", 1, ".4g"),
    ("tokens", "tokens", 1, "d"),
    ("requests completed", "requests_completed", 1, "d"),
    ("acceptance rate", "acceptance_rate", 1, ".3f"),
    ("per-position acceptance alpha-hat", "alpha_hat", 1, ".3f"),
    ("mean accepted length", "mean_accepted_len", 1, ".3f"),
    ("mean γ", "mean_gamma", 1, ".3g"),
    ("TTFT p50 (ms)", "ttft_p50_s", 1e3, ".4g"),
    ("TTFT p95 (ms)", "ttft_p95_s", 1e3, ".4g"),
    ("TPOT p50 (ms)", "tpot_p50_s", 1e3, ".4g"),
    ("e2e latency p95 (s)", "e2e_p95_s", 1, ".4g"),
    ("Jain's index", "jain", 1, ".3f"),
    ("Σ log goodput", "sum_log_goodput", 1, ".3f"),
    ("bytes per token", "bytes_per_token", 1, ".4g"),
    ("verifier mean batch", "verifier_mean_batch", 1, ".3g"),
    ("verifier busy fraction", "verifier_busy_fraction", 1, ".3f"),
    ("rounds drafted at the verifier (fused)", "verifier_fused_rounds", 1, ".4g"),
    ("measured / bound", "measured_over_bound", 1, ".3f"),
    ("users' requests answered", "client_requests", 1, "d"),
    ("total latency Σ completion (s)", "client_total_latency_s", 1, ".4g"),
    ("upload mean (ms)", "upload_mean_s", 1e3, ".3g"),
    ("complete", "complete", 1, "b"),
]
# rows shown only where some run has a value other than none or 0 (fused rounds in distributed runs, clients' rows
# without clients): a column of zeros says nothing about those runs
OPTIONAL = {"verifier_fused_rounds", "client_requests", "client_total_latency_s", "upload_mean_s"}


def _load(run_dir: Path) -> tuple[str, dict]:
    try:
        man = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        man = {}
    try:
        m = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        m = M.compute(run_dir)
    return str(man.get("label") or run_dir.name), m


def _labels(run_dirs: list[Path]) -> tuple[list[str], list[dict]]:
    loaded = [_load(d) for d in run_dirs]
    raw = [lab for lab, _ in loaded]
    labels = [f"{lab} ({d.name})" if raw.count(lab) > 1 else lab   # a label twice (a repeat): say which run
              for lab, d in zip(raw, run_dirs)]
    return labels, [m for _, m in loaded]


def _cell(v, scale, fmt) -> str:
    if v is None:
        return "–"
    if fmt == "b":
        return "yes" if v else "no"
    if fmt == "d":
        return str(int(v))
    return format(v * scale, fmt)


def _cluster_rows(run_dirs: list[Path]) -> list[list[str]]:
    """Where each run ran, if some ran on a Ray cluster (RUN/cluster.json, testbed/cluster/sweep.py): a run that
    ran here says "this machine"; one retried after its worker was lost says which try it was."""
    records = []
    for d in run_dirs:
        try:
            records.append(json.loads((d / "cluster.json").read_text()))
        except (OSError, ValueError):
            records.append(None)
    if not any(records):
        return []
    return [["ran on", *(_ran_on(r) for r in records)]]


def _ran_on(record: dict | None) -> str:
    if record is None:
        return "this machine"
    tries = record.get("tries") or []
    return str(record.get("ran_on", "?")) + (f", try {len(tries)}" if len(tries) > 1 else "")


def _fault_rows(ms: list[dict]) -> list[list[str]]:
    """Link faults (testbed/channels/faults.py), where some run had them: the mean dip and the slowest recovery
    over each run's faults ("never" if one did not recover within the run)."""
    occ = [((m.get("faults") or {}).get("occurrences") or []) for m in ms]
    if not any(occ):
        return []
    dips = [[o["dip"] for o in os_ if o["dip"] is not None] for os_ in occ]
    rec = [("never" if any(o["recovery_s"] is None for o in os_) else format(max(o["recovery_s"] for o in os_), ".3g"))
           if os_ else "–" for os_ in occ]
    return [["faults", *(str(len(os_)) for os_ in occ)],
            ["fault goodput dip (mean)", *(format(sum(d) / len(d), ".3f") if d else "–" for d in dips)],
            ["fault recovery, slowest (s)", *rec]]


def compare(run_dirs) -> str:
    """A Markdown table: a row per key metric (of the `total` row), a column per run."""
    run_dirs = [Path(d) for d in run_dirs]
    labels, ms = _labels(run_dirs)
    head = ["metric", *labels]
    body = [[name, *(_cell(m["total"].get(key), scale, fmt) for m in ms)] for name, key, scale, fmt in ROWS
            if key not in OPTIONAL or any(m["total"].get(key) for m in ms)]
    body += _fault_rows(ms)
    body += _cluster_rows(run_dirs)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in body)])


def overlay_plots(run_dirs, out_dir) -> list[Path]:
    """Total goodput over time (1 s bins) and the end-to-end latency CDF, one line per run."""
    from testbed.common.figures import Figure, finish_axis, save
    run_dirs = [Path(d) for d in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, _ = _labels(run_dirs)
    runs = [load_run(d) for d in run_dirs]

    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    for label, run in zip(labels, runs):
        verdicts = [v for evs in run.drafters.values() for v in of_type(evs, Verdict)]
        ax.step(*P.step_edges(*P.goodput_bins(verdicts, P.t0_of(run))), where="post", label=label)
    ax.set(xlabel="time since the run's first request (s)", ylabel="total goodput (tokens/s, 1 s bins)",
           title="Total goodput over time")
    finish_axis(ax, bool(runs))
    goodput = save(fig, out_dir / "goodput_overlay.png")

    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    for label, run in zip(labels, runs):
        e2e = [x for name, evs in run.drafters.items() for x in M._Drafter(name, evs).latencies()[2]]
        if e2e:
            xs, ys = P.cdf(e2e)
            ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")
        else:
            ax.plot([], [], label=f"{label} (no completed requests)")
    ax.set(xlabel="end-to-end request latency (s)", ylabel="fraction of requests ≤ x", ylim=(0, 1.02),
           title="End-to-end latency CDF")
    finish_axis(ax, bool(runs), loc="lower right")
    e2e_path = save(fig, out_dir / "e2e_cdf_overlay.png")
    return [goodput, e2e_path]
