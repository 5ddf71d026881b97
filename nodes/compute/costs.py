"""Cost models: how long one forward pass of a batch takes.

`RooflineCost` derives it from a device and a model: time = max(FLOPs / achievable FLOP/s,
bytes / achievable bandwidth) + fixed overheads. `LinearCost` is the older synthetic profile
(base + per token + per sequence). `TableCost` (table.py) interpolates measured times.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

from nodes.compute.profiles import Device, ModelArch

Seqs = Sequence[tuple[int, int]]     # [(context tokens already cached, new tokens fed), ...]


@runtime_checkable
class CostModel(Protocol):
    def pass_s(self, seqs: Seqs) -> float:
        """Seconds for one forward pass over a batch; seqs = [(context, new_tokens), ...]."""

    def draft_s(self, context: int, k: int) -> float:
        """Seconds for k autoregressive decode passes at batch 1, context growing from `context`."""

    def describe(self) -> str:
        """One line naming what the model is, e.g. "roofline llama-3.1-70b-awq on h100-sxm (int4)"."""


def check_seqs(seqs: Seqs) -> list[tuple[int, int]]:
    out = []
    for item in seqs:
        context, tokens = item
        if int(context) != context or context < 0 or int(tokens) != tokens or tokens < 0:
            raise ValueError(f"expected (context >= 0, new_tokens >= 0) whole numbers, got {item!r}")
        out.append((int(context), int(tokens)))
    return out


def _check_draft(context: int, k: int) -> None:
    if context < 0 or k < 0:
        raise ValueError(f"expected context >= 0 and k >= 0, got context={context}, k={k}")


@dataclass(frozen=True)
class PassCost:
    """The parts of one pass, for inspection and tests."""
    flops: float
    bytes: float
    compute_s: float
    memory_s: float
    overhead_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.memory_s) + self.overhead_s

    @property
    def memory_bound(self) -> bool:
        return self.memory_s >= self.compute_s


@dataclass(frozen=True)
class RooflineCost:
    device: Device
    model: ModelArch
    dtype: str | None = None
    _resolved: str = field(init=False, repr=False, default="")

    def __post_init__(self):
        object.__setattr__(self, "_resolved", self.dtype or self.model.default_dtype)
        self.model.dtype(self._resolved)          # raises ProfileError for a dtype the checkpoint lacks

    def flops(self, seqs: Seqs) -> float:
        m = self.model
        total = sum(t for _, t in seqs)
        # Q·K^T and P·V: 2 matmuls x 2 FLOP per multiply-add, each new token attends to c + its position.
        attention = sum(4 * m.layers * m.heads * m.head_dim * t * (c + t / 2) for c, t in seqs)
        return 2 * m.nonembedding_params * total + attention + 2 * m.hidden * m.vocab * total

    def bytes(self, seqs: Seqs) -> float:
        m, d = self.model, self.model.dtype(self._resolved)
        kv_token = m.kv_bytes_per_token(self._resolved)
        total = sum(t for _, t in seqs)
        kv = sum(kv_token * (c + t) for c, t in seqs)       # read the cached c, write the t new entries
        # Activations between kernels (hidden states in and out of attention and the MLP, at the KV width):
        # small beside the weights at decode, a few percent of a long prefill.
        activations = total * m.layers * (4 * m.hidden + 2 * m.ffn) * d.kv_bytes
        return m.weight_bytes(self._resolved) + kv + activations

    def breakdown(self, seqs: Seqs) -> PassCost:
        seqs = [s for s in check_seqs(seqs) if s[1] > 0]
        dev = self.device
        if not seqs:
            return PassCost(0.0, 0.0, 0.0, 0.0, 0.0)
        flops, nbytes = self.flops(seqs), self.bytes(seqs)
        peak = dev.peak(self.model.dtype(self._resolved).compute)
        return PassCost(flops=flops, bytes=nbytes,
                        compute_s=flops / (peak * dev.compute_efficiency),
                        memory_s=nbytes / (dev.memory_bandwidth * dev.bandwidth_efficiency),
                        overhead_s=dev.pass_overhead_s + self.model.layers * dev.layer_overhead_s)

    def pass_s(self, seqs: Seqs) -> float:
        return self.breakdown(seqs).seconds

    def draft_s(self, context: int, k: int) -> float:
        _check_draft(context, k)
        return sum(self.pass_s([(context + j, 1)]) for j in range(k))

    def describe(self) -> str:
        return f"roofline {self.model.name} on {self.device.name} ({self._resolved})"


@dataclass(frozen=True)
class LinearCost:
    """base + per_token x tokens fed + per_seq x batch size; an empty batch costs nothing."""
    base_s: float = 0.0
    per_token_s: float = 0.0
    per_seq_s: float = 0.0

    def __post_init__(self):
        for name in ("base_s", "per_token_s", "per_seq_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"LinearCost.{name} must be >= 0, got {getattr(self, name)}")

    def pass_s(self, seqs: Seqs) -> float:
        seqs = check_seqs(seqs)
        if not seqs:
            return 0.0
        return self.base_s + self.per_token_s * sum(t for _, t in seqs) + self.per_seq_s * len(seqs)

    def draft_s(self, context: int, k: int) -> float:
        _check_draft(context, k)
        return k * self.pass_s([(context, 1)])

    def describe(self) -> str:
        return f"linear {self.base_s:g} s + {self.per_token_s:g} s/token + {self.per_seq_s:g} s/seq"
