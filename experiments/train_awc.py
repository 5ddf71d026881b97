"""Train AWC's window predictor (testbed/policies/awc.py) with numpy; writes a JSON weights file.

    python experiments/train_awc.py --generate 20000 --seed 0 --out testbed/policies/awc_weights.json
    python experiments/train_awc.py --runs results/gamma-sweep --out my_weights.json

Datasets (each row: the features AWC's Telemetry computes after one round → the best γ, on the allowed set):
  --generate N  synthetic, from the closed-form model in speculation.py. Per sample: random α, base RTT,
                verifier queueing, up/down rates (the uplink unknown to the policy 15 % of the time), payload
                (ids, top-K, full vocabulary), drafting and verification speeds; 3-15 rounds at a random
                previous γ are simulated (iid Bernoulli(α) acceptance, ±10 % timing noise) and replayed
                through Telemetry, exactly as the runtime would see them; label = best_gamma(α, true costs).
  --runs DIR... logged γ sweeps (a run dir, or any dir above run dirs). Runs are grouped by their resolved
                config with speculation.gamma, speculation.mode and the run's names (name, description, label,
                sweep) removed, so a group is "the same conditions at several γ" (γ = 1 run in fused mode is
                DSD's fused action: AWC's 1 switches a hybrid session to fused). For each group with ≥ 2 distinct γ and each
                drafter, label = the γ whose run gave that drafter the best goodput (metrics.compute; repeats
                of a γ are averaged; ties → smaller γ); every round of that drafter in every run of the group
                (replayed per session, as one policy per session would) → that label, except the rounds the
                verifier drafted (fused): AWC decides from a drafter's own rounds. The drafter's uplink
                comes from its access link (the topology link it ends), from events/links.jsonl at the round's
                time, else the topology's rate; bytes per drafted token = the draft event's bytes_out / γ.
Training: Smooth-L1 (Huber, δ = 1 γ) regression on γ, tanh MLP, Adam, mini-batches, fixed seed, early stopping
on a held-out split (random rows: rows of one run are correlated, so with --runs the validation error is
optimistic). Reports mean |Δγ| and accuracy after quantisation, against the constant predictor (train mean).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nodes.events import Draft, Event, Link, Verdict, load_run, of_type          # noqa: E402
from testbed.run import metrics                                                   # noqa: E402
from testbed.policies.awc import DEFAULT_ALLOWED, FEATURES, Telemetry, load_weights, save_weights  # noqa: E402
from testbed.policies.speculation import NetworkView, RoundResult, best_gamma  # noqa: E402

VOCABS = (32000, 49152, 128256, 151936)


def quantise(g: np.ndarray, allowed: tuple[int, ...]) -> np.ndarray:
    """Nearest allowed window to each value (ties → the smaller), after clipping to the allowed range."""
    a = np.asarray(allowed, dtype=np.float64)
    g = np.clip(np.asarray(g, dtype=np.float64), a[0], a[-1])
    d = np.abs(g[:, None] - a[None, :]) - 1e-9 * np.arange(len(a))[None, ::-1]   # ties → smaller
    return a[np.argmin(d, axis=1)]


# --- synthetic data ----------------------------------------------------------------------------------------

def generate(n: int, seed: int, allowed: tuple[int, ...] = DEFAULT_ALLOWED, eta: float = 0.3
             ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logu = lambda lo, hi: float(math.exp(rng.uniform(math.log(lo), math.log(hi))))   # noqa: E731
    xs, ys = np.empty((n, len(FEATURES))), np.empty(n)
    for i in range(n):
        alpha = rng.uniform(0.2, 0.97)
        rtt, up, down = logu(1e-3, 0.2), logu(0.5, 300.0), logu(1.0, 1000.0)
        kind = rng.random()
        bpt = 24.0 if kind < 0.4 else 8.0 * int(rng.choice((4, 8, 16, 32, 64, 128, 256))) + 25 if kind < 0.85 \
            else 4.0 * int(rng.choice(VOCABS)) + 25
        draft_pt, verify_base, verify_pt = logu(3e-4, 3e-2), logu(3e-3, 8e-2), rng.uniform(0.0, 2e-3)
        queue = 0.0 if rng.random() < 0.4 else verify_base * logu(0.05, 4.0)
        truth = NetworkView(rtt_s=rtt + queue, uplink_mbps=up, downlink_mbps=down, bytes_per_token_up=bpt,
                            draft_s_per_token=draft_pt, verify_s_base=verify_base, verify_s_per_token=verify_pt)
        ys[i] = best_gamma(alpha, truth, allowed[-1], allowed, allowed[0])
        known = rng.random() < 0.85
        view = NetworkView(uplink_mbps=up if known else None, downlink_mbps=down if known else None,
                           bytes_per_token_up=bpt)
        g = int(rng.choice(allowed))
        tel = Telemetry(eta=eta, prev_gamma=g)
        for k in range(int(rng.integers(3, 16))):
            accepted = 0
            while accepted < g and rng.random() < alpha:
                accepted += 1
            q = float(rng.exponential(queue)) if queue > 0 else 0.0
            v = (verify_base + g * verify_pt) * rng.uniform(0.9, 1.1)
            serial = 8.0 * (truth.bytes_fixed_up + g * bpt) / (up * 1e6) + 8.0 * truth.bytes_down / (down * 1e6)
            tel.observe(RoundResult(g, accepted, 0.1 * k, rtt_s=rtt * rng.uniform(0.9, 1.1) + serial + q + v,
                                    verify_s=v, queue_s=q, draft_s=g * draft_pt * rng.uniform(0.9, 1.1)), view)
        xs[i] = tel.vector(view, gamma_scale=allowed[-1])
    return xs, ys


# --- logged sweeps -------------------------------------------------------------------------------------

def find_runs(dirs: list[Path]) -> list[Path]:
    out: list[Path] = []
    for d in dirs:
        if (d / "manifest.json").is_file():
            out.append(d)
        elif d.is_dir():
            out += find_runs(sorted(p for p in d.iterdir() if p.is_dir()))
    return out


def group_key(config: dict) -> str:
    """The config hash with γ and the run's names left out: runs with equal keys differ only in γ."""
    c = json.loads(json.dumps(config))
    c.get("speculation", {}).pop("gamma", None)
    c.get("speculation", {}).pop("mode", None)      # fused at gamma 1 is one of the oracle's actions
    for k in ("name", "description", "label", "sweep"):
        c.pop(k, None)
    return hashlib.sha256(json.dumps(c, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def _uplink(config: dict, drafter: str, links: list[Link]):
    """(link name, the drafter→AP direction's rate field, the topology's rate) of the drafter's access link."""
    for link in config.get("topology", {}).get("links", []):
        if drafter in (link.get("a"), link.get("b")):
            direction = "up" if link.get("a") == drafter else "down"
            name = link.get("name") or f"{link.get('a')}-{link.get('b')}"
            states = sorted((e.t, e.rate_mbps(direction)) for e in links if e.link == name)
            return states, link.get(f"rate_{direction}_mbps")
    return [], None


def _rate_at(states: list[tuple[float, float]], static, t: float):
    rate = static
    for ts, r in states:
        if ts > t:
            break
        rate = r
    return rate


def drafter_rows(run_dir: Path, config: dict, drafter: str, events: list[Event], links: list[Link],
                 gamma_scale: float, eta: float) -> list[np.ndarray]:
    states, static = _uplink(config, drafter, links)
    drafts = {(e.session, e.round): e for e in of_type(events, Draft)}
    sessions: dict[str, list[Verdict]] = {}
    for v in of_type(events, Verdict):
        if v.round >= 1 and not v.fused:
            sessions.setdefault(v.session, []).append(v)
    rows = []
    for vs in sessions.values():
        tel = Telemetry(eta=eta, prev_gamma=vs[0].gamma)
        for v in sorted(vs, key=lambda e: e.t):
            g, d = v.gamma, drafts.get((v.session, v.round))
            bpt = d.bytes_out / g if g > 0 and d is not None else 24.0
            view = NetworkView(uplink_mbps=_rate_at(states, static, v.t), bytes_per_token_up=bpt)
            tel.observe(RoundResult(g, min(v.accepted, g), v.t, rtt_s=v.rtt_s, verify_s=v.verify_s,
                                    queue_s=v.queue_s, draft_s=d.draft_s if d is not None else None), view)
            rows.append(tel.vector(view, gamma_scale))
    return rows


def runs_dataset(dirs: list[Path], allowed: tuple[int, ...] = DEFAULT_ALLOWED, eta: float = 0.3,
                 log=print) -> tuple[np.ndarray, np.ndarray, dict]:
    """(X, y, {group: {drafter: {"label", "goodput": {γ: tokens/s}}}})."""
    groups: dict[str, list[tuple[Path, dict]]] = {}
    for run in find_runs(dirs):
        man = json.loads((run / "manifest.json").read_text())
        groups.setdefault(group_key(man["config"]), []).append((run, man["config"]))
    xs, ys, labels = [], [], {}
    for key, runs in sorted(groups.items()):
        gammas = sorted({int(c["speculation"]["gamma"]) for _, c in runs})
        if len(gammas) < 2:
            log(f"group {key}: only gamma {gammas} ({len(runs)} run(s)); skipped, nothing to compare")
            continue
        loaded = [(run, c, load_run(run), metrics.compute(run)) for run, c in runs]
        drafters = sorted({d for *_, m in loaded for d in m["drafters"]})
        labels[key] = {}
        for d in drafters:
            per: dict[int, list[float]] = {}
            for _, c, _, m in loaded:
                if d in m["drafters"]:
                    per.setdefault(int(c["speculation"]["gamma"]), []).append(m["drafters"][d]["goodput_tps"] or 0.0)
            goodput = {g: sum(v) / len(v) for g, v in sorted(per.items())}
            best = max(goodput, key=lambda g: (goodput[g], -g))
            label = int(quantise(np.array([best]), allowed)[0])
            labels[key][d] = {"label": label, "best_gamma": best, "goodput": goodput}
            for run, c, data, _ in loaded:
                rows = drafter_rows(run, c, d, data.drafters.get(d, []), data.links, allowed[-1], eta)
                xs += rows
                ys += [label] * len(rows)
            log(f"group {key} drafter {d}: goodput by gamma {goodput} -> label {label}")
    if not xs:
        return np.empty((0, len(FEATURES))), np.empty(0), labels
    return np.array(xs), np.array(ys, dtype=np.float64), labels


# --- the network --------------------------------------------------------------------------------------

def train(x: np.ndarray, y: np.ndarray, hidden: tuple[int, ...], seed: int, epochs: int, lr: float,
          batch: int, patience: int, val_frac: float, allowed: tuple[int, ...], log=print) -> tuple[list, dict]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = max(1, int(round(val_frac * len(y))))
    val, tr = order[:n_val], order[n_val:]
    mean = x[tr].mean(axis=0)
    std = x[tr].std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)              # a constant feature: leave it unscaled
    ym, ys = float(y[tr].mean()), float(y[tr].std()) or 1.0
    xn, yn = (x - mean) / std, (y - ym) / ys
    sizes = (x.shape[1], *hidden, 1)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):    # Glorot-uniform: tanh units start in their linear range
        lim = math.sqrt(6.0 / (n_in + n_out))
        params += [rng.uniform(-lim, lim, (n_in, n_out)), np.zeros(n_out)]
    m1, m2 = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]

    def forward(ps, h):
        acts = [h]
        for i in range(0, len(ps), 2):
            h = h @ ps[i] + ps[i + 1]
            if i + 2 < len(ps):
                h = np.tanh(h)
            acts.append(h)
        return acts

    def loss(ps, idx):        # Smooth-L1 in γ units
        r = np.abs((forward(ps, xn[idx])[-1][:, 0] - yn[idx]) * ys)
        return float(np.mean(np.where(r < 1.0, 0.5 * r * r, r - 0.5)))

    best, best_params, best_epoch, step = math.inf, [p.copy() for p in params], 0, 0
    for epoch in range(1, epochs + 1):
        perm = rng.permutation(tr)
        for s in range(0, len(perm), batch):
            idx = perm[s:s + batch]
            acts = forward(params, xn[idx])
            r = (acts[-1][:, 0] - yn[idx]) * ys
            delta = (np.clip(r, -1.0, 1.0) * ys / len(idx))[:, None]
            grads = [None] * len(params)
            for i in range(len(params) - 2, -1, -2):
                grads[i], grads[i + 1] = acts[i // 2].T @ delta, delta.sum(axis=0)
                if i > 0:
                    delta = (delta @ params[i].T) * (1.0 - acts[i // 2] ** 2)
            step += 1
            for j, g in enumerate(grads):          # Adam
                m1[j] = 0.9 * m1[j] + 0.1 * g
                m2[j] = 0.999 * m2[j] + 0.001 * g * g
                params[j] -= lr * (m1[j] / (1 - 0.9 ** step)) / (np.sqrt(m2[j] / (1 - 0.999 ** step)) + 1e-8)
        v = loss(params, val)
        if v < best - 1e-6:
            best, best_params, best_epoch = v, [p.copy() for p in params], epoch
        elif epoch - best_epoch >= patience:
            break
        if epoch % 50 == 0:
            log(f"epoch {epoch}: train loss {loss(params, tr):.4f}, val loss {v:.4f}")
    # Fold the target scaling into the last layer, so the stored network outputs γ directly.
    best_params[-2], best_params[-1] = best_params[-2] * ys, best_params[-1] * ys + ym
    layers = [(best_params[i], best_params[i + 1], "tanh" if i + 2 < len(best_params) else "linear")
              for i in range(0, len(best_params), 2)]
    info = {"mean": mean, "std": std, "train_idx": tr, "val_idx": val, "epochs_run": epoch,
            "best_epoch": best_epoch, "train_mean_gamma": ym}
    return layers, info


def evaluate(pred: np.ndarray, y: np.ndarray, baseline: float, allowed: tuple[int, ...]) -> dict:
    q, qb = quantise(pred, allowed), quantise(np.full(len(y), baseline), allowed)
    return {"n": int(len(y)), "mae_raw": float(np.mean(np.abs(pred - y))),
            "mae": float(np.mean(np.abs(q - y))), "accuracy": float(np.mean(q == y)),
            "baseline_mae_raw": float(np.mean(np.abs(baseline - y))), "baseline_mae": float(np.mean(np.abs(qb - y))),
            "baseline_accuracy": float(np.mean(qb == y))}


def confusion(pred: np.ndarray, y: np.ndarray, allowed: tuple[int, ...]) -> str:
    q = quantise(pred, allowed)
    lines = ["true\\pred " + " ".join(f"{a:>5}" for a in allowed)]
    for t in allowed:
        lines.append(f"{t:>9} " + " ".join(f"{int(np.sum((y == t) & (q == p))):>5}" for p in allowed))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", type=Path, default=[], help="run dirs (or dirs above them) of γ sweeps")
    ap.add_argument("--generate", type=int, default=0, metavar="N", help="N synthetic samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("awc_weights.json"))
    ap.add_argument("--allowed", default=",".join(map(str, DEFAULT_ALLOWED)))
    ap.add_argument("--hidden", default="16,16")
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--patience", type=int, default=40)
    ap.add_argument("--val-frac", type=float, default=0.2)
    ap.add_argument("--eta", type=float, default=0.3, help="Telemetry EWMA weight (use the policy's eta)")
    a = ap.parse_args(argv)
    allowed = tuple(sorted({int(v) for v in a.allowed.split(",")}))
    hidden = tuple(int(v) for v in a.hidden.split(","))
    if not a.runs and a.generate <= 0:
        ap.error("give --runs DIR... and/or --generate N")
    xs, ys, source = [], [], []
    if a.generate > 0:
        x, y = generate(a.generate, a.seed, allowed, a.eta)
        xs.append(x), ys.append(y), source.append(f"generate {a.generate} seed {a.seed}")
    if a.runs:
        x, y, _ = runs_dataset(a.runs, allowed, a.eta)
        xs.append(x), ys.append(y), source.append(f"runs {' '.join(map(str, a.runs))}")
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(y) < 10:
        print(f"only {len(y)} samples; need at least 10", file=sys.stderr)
        return 2
    print(f"{len(y)} samples; label counts " +
          ", ".join(f"{g}: {int(np.sum(y == g))}" for g in allowed))
    layers, info = train(x, y, hidden, a.seed, a.epochs, a.lr, a.batch, a.patience, a.val_frac, allowed)
    training = {"source": "; ".join(source), "seed": a.seed, "samples": int(len(y)), "hidden": list(hidden),
                "activation": "tanh", "loss": "smooth_l1 (delta 1 gamma)", "optimiser": "adam",
                "lr": a.lr, "batch": a.batch, "epochs_run": info["epochs_run"], "best_epoch": info["best_epoch"],
                "val_frac": a.val_frac, "eta": a.eta, "script": "experiments/train_awc.py"}
    save_weights(a.out, layers, info["mean"], info["std"], allowed, float(allowed[-1]), training)
    w = load_weights(a.out)                 # evaluate what was written (rounded), not the in-memory copy
    pred = w.predict_batch(x)
    for part in ("train", "val"):
        idx = info[f"{part}_idx"]
        training[part] = evaluate(pred[idx], y[idx], info["train_mean_gamma"], allowed)
        r = training[part]
        print(f"{part}: n={r['n']} mean|dγ| {r['mae']:.3f} (constant {r['baseline_mae']:.3f}), accuracy "
              f"{r['accuracy']:.3f} (constant {r['baseline_accuracy']:.3f}), raw mean|dγ| {r['mae_raw']:.3f} "
              f"(mean predictor {r['baseline_mae_raw']:.3f})")
    print("validation confusion (rows: best γ, columns: predicted):\n" + confusion(pred[info["val_idx"]],
                                                                                 y[info["val_idx"]], allowed))
    save_weights(a.out, layers, info["mean"], info["std"], allowed, float(allowed[-1]), training)
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes); best epoch {info['best_epoch']} of {info['epochs_run']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
