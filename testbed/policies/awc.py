"""DSD's Adaptive Window Control (AWC): a small MLP (DSD's "WC-DNN") predicts the next speculation window γ from
per-round telemetry; the prediction is smoothed over rounds and quantised to an allowed set.

    policy = AWCPolicy()                       # the shipped weights (awc_weights.json)
    policy.observe(RoundResult(...)); gamma = policy.next_window(now, NetworkView(...))

Model: regression on γ (not classification over the allowed set): γ is ordinal, so predicting 5 when 6 is best
should cost less than predicting 1, which a class loss does not know; and the smoothing below needs a
continuous value to average. Trained with the Smooth-L1 (Huber) loss DSD's design planned
(experiments/train_awc.py). Inference is plain float64 numpy, no torch; the weights are JSON, read with json only.

Features (one vector per decision; `features()` is the single definition used by the policy and by training,
so there is no train/serve skew). Each is then standardised with the mean/std stored in the weights file:
  queue_util           EWMA of queue_s/(queue_s + verify_s) at the verifier, in [0, 1] (pending/max_batch,
                       capped at 1, when the round carries `pending` and the policy has max_batch); 0 if unknown.
  accept_rate          EWMA of accepted/γ, in [0, 1] (DSD's "recent acceptance").
  alpha_hat            hits/(hits + misses), hits = EWMA(accepted), misses = EWMA(1 if a token was rejected):
                       per-position acceptance. Added because accepted/γ falls as γ grows (truncation), so it
                       mixes acceptance with the previous window; this estimate is γ-free (NetworkAware's).
  log_rtt              log10(EWMA of the measured send → verdict time, s), floored at 0.1 ms.
  log_tpot             log10(EWMA of (rtt_s + draft_s)/(accepted + 1), s): time per output token.
  prev_gamma           the last drafted γ / gamma_scale (the largest γ of the training set).
  log_uplink           log10(1 + uplink Mbit/s) from the NetworkView; 0 when unknown.
  log_bytes_per_token  log10(bytes per drafted token, ≥ 1) from the NetworkView (ids ≈ 24 B, topk/full more).
  log_draft_per_token  log10(EWMA draft_s/γ, floored at 10 µs): drafting is the other per-token cost.
  log_cost_ratio       log10(b/a), clipped to [1e-6, 1e2]: the round cost line T(γ) = a + bγ, with b = upload
                       time of a token + draft and verify time per token, a = EWMA(rtt_s − γ·(per-token network
                       and verify cost)). Added because under the closed-form model the best γ depends on α and
                       b/a only, so this one number carries most of what the network features imply.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from testbed.policies.spec_checks import GAMMA_LIMIT, check_int, check_num
from testbed.policies.speculation import EWMA, NetworkView, RoundResult, clamp_window, round_time

DEFAULT_WEIGHTS = Path(__file__).with_name("awc_weights.json")
DEFAULT_ALLOWED = (1, 2, 3, 4, 5, 6, 8)
FORMAT = "specnet-awc/1"
FEATURES = ("queue_util", "accept_rate", "alpha_hat", "log_rtt", "log_tpot", "prev_gamma", "log_uplink",
            "log_bytes_per_token", "log_draft_per_token", "log_cost_ratio")
ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0), "linear": lambda x: x}
_T_MIN = 1e-4             # s: log floor for times (0.1 ms: below any emulated round trip)
_DRAFT_MIN = 1e-5         # s: log floor for drafting per token (10 µs ≈ free)
_RTT_PRIOR = 0.02         # s: before any round and without a view (only for priors; no decision uses it alone)


def features(*, queue_util: float, accept_rate: float, alpha_hat: float, rtt_s: float, tpot_s: float,
             prev_gamma: float, gamma_scale: float, uplink_mbps: float | None, bytes_per_token: float,
             draft_s_per_token: float, cost_ratio: float) -> np.ndarray:
    """The raw (unstandardised) feature vector, in FEATURES order; see the module docstring."""
    return np.array([
        min(1.0, max(0.0, queue_util)), min(1.0, max(0.0, accept_rate)), min(1.0, max(0.0, alpha_hat)),
        math.log10(max(rtt_s, _T_MIN)), math.log10(max(tpot_s, _T_MIN)), prev_gamma / gamma_scale,
        math.log10(1.0 + uplink_mbps) if uplink_mbps is not None else 0.0,
        math.log10(max(bytes_per_token, 1.0)), math.log10(max(draft_s_per_token, _DRAFT_MIN)),
        math.log10(min(max(cost_ratio, 1e-6), 1e2)),
    ], dtype=np.float64)


def _up_s_per_token(net: NetworkView) -> float:
    """Seconds to upload one drafted token; 0 when the uplink is unknown or out (it then folds into a)."""
    return 8.0 * net.bytes_per_token_up / (net.uplink_mbps * 1e6) if net.uplink_mbps else 0.0


@dataclass
class Telemetry:
    """The per-session estimators behind the features. Shared by AWCPolicy and the training script, which
    replays rounds (logged or simulated) through it, so training sees exactly what the runtime computes."""
    eta: float = 0.3
    prev_gamma: int = 4
    max_batch: int | None = None
    alpha0: float = 0.6
    rounds: int = 0
    _est: dict[str, EWMA] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._est = {k: EWMA(self.eta) for k in
                     ("queue", "acc", "hits", "misses", "rtt", "tpot", "draft", "fixed")}

    def observe(self, r: RoundResult, net: NetworkView | None = None) -> None:
        """One verified round; `net` is the view in force when it was drafted (for the serialisation term)."""
        net, est = net or NetworkView(), self._est
        if r.gamma > 0:
            est["acc"].update(r.accepted / r.gamma)
            est["hits"].update(r.accepted)
            est["misses"].update(1.0 if r.accepted < r.gamma else 0.0)
            if r.draft_s is not None:
                est["draft"].update(r.draft_s / r.gamma)
        pending = getattr(r, "pending", None)     # a future RoundResult field; used when it exists
        if pending is not None and self.max_batch:
            est["queue"].update(min(1.0, pending / self.max_batch))
        elif r.queue_s is not None and r.verify_s is not None and r.queue_s + r.verify_s > 0:
            est["queue"].update(r.queue_s / (r.queue_s + r.verify_s))
        if r.rtt_s is not None:
            est["rtt"].update(r.rtt_s)
            per_token = _up_s_per_token(net) + (net.verify_s_per_token or 0.0)
            est["fixed"].update(max(_T_MIN, r.rtt_s - r.gamma * per_token))
            est["tpot"].update((r.rtt_s + (r.draft_s or 0.0)) / (r.accepted + 1))
        self.prev_gamma = r.gamma
        self.rounds += 1

    def vector(self, net: NetworkView | None, gamma_scale: float) -> np.ndarray:
        net, est = net or NetworkView(), self._est
        hits, misses = est["hits"].value, est["misses"].value
        alpha = hits / (hits + misses) if hits is not None and hits + misses > 0 else self.alpha0
        prior = round_time(0, net) if net.rtt_s is not None else _RTT_PRIOR
        rtt = est["rtt"].value if est["rtt"].value is not None else prior
        draft = net.draft_s_per_token if net.draft_s_per_token is not None else (est["draft"].value or 0.0)
        a = est["fixed"].value if est["fixed"].value is not None else max(prior, _T_MIN)
        b = _up_s_per_token(net) + draft + (net.verify_s_per_token or 0.0)
        return features(queue_util=est["queue"].value or 0.0,
                        accept_rate=est["acc"].value if est["acc"].value is not None else self.alpha0,
                        alpha_hat=alpha, rtt_s=rtt,
                        tpot_s=est["tpot"].value if est["tpot"].value is not None else rtt,
                        prev_gamma=self.prev_gamma, gamma_scale=gamma_scale, uplink_mbps=net.uplink_mbps,
                        bytes_per_token=net.bytes_per_token_up, draft_s_per_token=draft, cost_ratio=b / a)


# --- weights ---------------------------------------------------------------------------------------------

class AWCWeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class AWCWeights:
    """A loaded, validated network: layers [(W (n_in × n_out), b, activation)], feature standardisation."""
    layers: tuple[tuple[np.ndarray, np.ndarray, str], ...]
    mean: np.ndarray
    std: np.ndarray
    allowed: tuple[int, ...]
    gamma_scale: float
    training: dict

    def predict(self, x: np.ndarray) -> float:
        """γ̂ (continuous) for one raw feature vector; float64 throughout, so the same input gives the same bits."""
        return float(self.predict_batch(np.asarray(x, dtype=np.float64)[None, :])[0])

    def predict_batch(self, xs: np.ndarray) -> np.ndarray:
        h = (np.asarray(xs, dtype=np.float64) - self.mean) / self.std
        for w, b, act in self.layers:
            h = ACTIVATIONS[act](h @ w + b)
        return h[:, 0]


def _clip(value, limit: int = 80) -> str:
    """repr() of a bad value, cut: a message names what it found without echoing a megabyte."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def _floats(where: str, name: str, value, n: int) -> np.ndarray:
    if not isinstance(value, list) or len(value) != n:
        got = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
        raise AWCWeightsError(f"{where}: {name}: expected a list of {n} numbers, got {got}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise AWCWeightsError(f"{where}: {name}[{i}]: expected a finite number, got {_clip(v)}")
    arr = np.array(value, dtype=np.float64)
    arr.setflags(write=False)
    return arr


def _need(where: str, doc: dict, key: str, prefix: str = ""):
    if key not in doc:
        raise AWCWeightsError(f"{where}: {prefix}{key}: missing field")
    return doc[key]


def weights_from_dict(doc, where: str = "awc weights") -> AWCWeights:
    """Validates a parsed weights document: every field present, shapes chained from len(FEATURES) to 1,
    every number finite, std > 0."""
    if not isinstance(doc, dict):
        raise AWCWeightsError(f"{where}: expected a JSON object at the top, got {type(doc).__name__}")
    if _need(where, doc, "format") != FORMAT:
        raise AWCWeightsError(f"{where}: format: expected {FORMAT!r}, got {_clip(doc['format'])}")
    if _need(where, doc, "features") != list(FEATURES):
        raise AWCWeightsError(f"{where}: features: expected {list(FEATURES)}, got {_clip(doc['features'])}")
    n = len(FEATURES)
    mean = _floats(where, "feature_mean", _need(where, doc, "feature_mean"), n)
    std = _floats(where, "feature_std", _need(where, doc, "feature_std"), n)
    if not (std > 0).all():
        raise AWCWeightsError(f"{where}: feature_std[{int(np.argmin(std > 0))}]: must be > 0")
    allowed = _need(where, doc, "allowed")
    if (not isinstance(allowed, list) or not allowed
            or any(isinstance(a, bool) or not isinstance(a, int) or not 1 <= a <= GAMMA_LIMIT for a in allowed)):
        raise AWCWeightsError(f"{where}: allowed: expected a non-empty list of integers in [1, {GAMMA_LIMIT}], "
                              f"got {_clip(allowed)}")
    scale = _need(where, doc, "gamma_scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise AWCWeightsError(f"{where}: gamma_scale: expected a finite number > 0, got {_clip(scale)}")
    raw_layers = _need(where, doc, "layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise AWCWeightsError(f"{where}: layers: expected a non-empty list")
    layers, n_in = [], n
    for i, layer in enumerate(raw_layers):
        p = f"layers[{i}]"
        if not isinstance(layer, dict):
            raise AWCWeightsError(f"{where}: {p}: expected an object")
        shape = _need(where, layer, "shape", p + ".")
        if (not isinstance(shape, list) or len(shape) != 2
                or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)):
            raise AWCWeightsError(f"{where}: {p}.shape: expected [n_in, n_out] positive integers, got {_clip(shape)}")
        if shape[0] != n_in:
            raise AWCWeightsError(f"{where}: {p}.shape: n_in must be {n_in} (the previous layer's output or "
                                  f"the feature count), got {shape}")
        w = _floats(where, f"{p}.weights", _need(where, layer, "weights", p + "."), shape[0] * shape[1])
        b = _floats(where, f"{p}.bias", _need(where, layer, "bias", p + "."), shape[1])
        act = _need(where, layer, "activation", p + ".")
        if not isinstance(act, str) or act not in ACTIVATIONS:
            raise AWCWeightsError(f"{where}: {p}.activation: expected one of {sorted(ACTIVATIONS)}, "
                                  f"got {_clip(act)}")
        w = w.reshape(shape)
        layers.append((w, b, act))
        n_in = shape[1]
    if n_in != 1:
        raise AWCWeightsError(f"{where}: layers[{len(layers) - 1}].shape: the last layer must have 1 output, "
                              f"got {n_in}")
    training = doc.get("training", {})
    return AWCWeights(tuple(layers), mean, std, tuple(sorted(set(allowed))), float(scale),
                      training if isinstance(training, dict) else {})


MAX_WEIGHTS_BYTES = 16 << 20   # the shipped file is a few KB; a model this policy could run is far under this


def load_weights(path: str | Path | None = None) -> AWCWeights:
    """Reads and validates a weights file (json only: nothing in it can run code). Bounded like every user file
    (policies import no helpers, so the read is here): size first, then text, then JSON nested any depth."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    where = f"awc weights {path}"
    try:
        if path.stat().st_size > MAX_WEIGHTS_BYTES:    # a sparse file claims its size without a read
            raise AWCWeightsError(f"{where}: file is over {MAX_WEIGHTS_BYTES >> 20} MiB: expected JSON weights")
        with open(path, "rb") as f:
            data = f.read(MAX_WEIGHTS_BYTES + 1)
    except OSError as e:
        raise AWCWeightsError(f"{where}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_WEIGHTS_BYTES:
        raise AWCWeightsError(f"{where}: file is over {MAX_WEIGHTS_BYTES >> 20} MiB: expected JSON weights")
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise AWCWeightsError(f"{where}: not JSON: byte {e.start} is not UTF-8 (a binary file?)") from None
    except ValueError as e:              # includes a number of over 4300 digits
        raise AWCWeightsError(f"{where}: not JSON: {str(e)[:200]}") from None
    except RecursionError:               # [[[[...]]]] 100,000 deep: json recurses per level
        raise AWCWeightsError(f"{where}: not JSON weights: arrays or objects nested too deeply") from None
    return weights_from_dict(doc, where)


def save_weights(path: str | Path, layers: Sequence[tuple[np.ndarray, np.ndarray, str]], mean: np.ndarray,
                 std: np.ndarray, allowed: Sequence[int], gamma_scale: float, training: dict | None = None,
                 digits: int = 7) -> Path:
    """Writes a weights file (validated first). Numbers keep `digits` significant digits: the file stays a
    few KB, and what is loaded back is exactly what inference used in any later comparison."""
    def r(a) -> list[float]:
        return [float(f"{v:.{digits}g}") for v in np.asarray(a, dtype=np.float64).ravel()]
    doc = {"format": FORMAT, "features": list(FEATURES), "feature_mean": r(mean), "feature_std": r(std),
           "allowed": [int(a) for a in allowed], "gamma_scale": gamma_scale,
           "layers": [{"shape": list(np.shape(w)), "activation": act, "weights": r(w), "bias": r(b)}
                      for w, b, act in layers],
           "training": training or {}}
    weights_from_dict(doc, f"awc weights {path}")
    path = Path(path)
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    return path


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int) -> AWCWeights:
    return load_weights(path)        # one parse per file version, however many sessions start


# --- the policy ------------------------------------------------------------------------------------------

@dataclass(eq=False)
class AWCPolicy:
    """AWC: γ̂ = MLP(features) clipped to the allowed range; smoothed g ← smoothing·g + (1 − smoothing)·γ̂ once
    per round (default 0.5 on the previous value, our choice; DSD's pre-paper code uses 0.6, γ ← 0.4 γ̂ +
    0.6 γ_prev, papers.md §3); the window is the allowed value nearest g (ties → smaller). Until the first
    round is observed the window is gamma0 (no telemetry: the model was never trained on priors alone).
    `next_window` does not change the smoothing state, so calling it twice gives the same answer; `observe`
    commits the value the last `next_window` used. γ = 1 is DSD's fused mode."""
    weights_path: str | None = None
    allowed: tuple[int, ...] = DEFAULT_ALLOWED
    smoothing: float = 0.5
    gamma0: int = 4
    eta: float = 0.3
    max_batch: int | None = None
    name = "awc"
    start_field: ClassVar[str] = "gamma0"
    _weights: AWCWeights = field(init=False, repr=False)
    _tel: Telemetry = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.allowed, (str, bytes)) or not isinstance(self.allowed, (list, tuple)) or not self.allowed:
            raise ValueError(f"speculation awc: allowed must be a non-empty list of integers, got {self.allowed!r}")
        for a in self.allowed:
            check_int(self.name, "allowed", a, 1)
        self.allowed = tuple(sorted(set(self.allowed)))
        check_num(self.name, "smoothing", self.smoothing, 0.0, 1.0, open_hi=True)
        check_int(self.name, "gamma0", self.gamma0, 1)
        check_num(self.name, "eta", self.eta, 0.0, 1.0, open_lo=True)
        if self.max_batch is not None:
            check_int(self.name, "max_batch", self.max_batch, 1, 1 << 20)
        path = Path(self.weights_path) if self.weights_path is not None else DEFAULT_WEIGHTS
        try:
            st = path.stat()
        except OSError as e:
            raise AWCWeightsError(f"awc weights {path}: cannot read: {e}") from e
        self._weights = _cached(str(path), st.st_mtime_ns, st.st_size)
        self._tel = Telemetry(self.eta, self.gamma0, self.max_batch)
        self._smooth, self._candidate = float(self.gamma0), None
        self._net = NetworkView()

    def predict(self, net: NetworkView | None = None) -> float:
        """The model's raw γ̂ for the current telemetry (before clipping and smoothing)."""
        return self._weights.predict(self._tel.vector(net, self._weights.gamma_scale))

    def _quantise(self, g: float) -> int:
        nearest = min(self.allowed, key=lambda a: (abs(a - g), a))
        return clamp_window(nearest, self.allowed[0], self.allowed[-1], self.allowed)

    def next_window(self, now: float, net: NetworkView | None = None) -> int:
        self._net = net or NetworkView()
        if self._tel.rounds == 0:
            self._candidate = float(self.gamma0)
        else:
            raw = min(max(self.predict(self._net), self.allowed[0]), self.allowed[-1])
            self._candidate = self.smoothing * self._smooth + (1.0 - self.smoothing) * raw
        return self._quantise(self._candidate)

    def observe(self, r: RoundResult) -> None:
        self._tel.observe(r, self._net)
        if self._candidate is not None:
            self._smooth, self._candidate = self._candidate, None


def register(registry: dict) -> None:
    """Adds AWC to a speculation registry (speculation.SPECULATION_POLICIES)."""
    registry[AWCPolicy.name] = AWCPolicy

