"""`LinkState`: what one link looks like at one moment. Channel models produce these; shaping applies them."""
from __future__ import annotations

from dataclasses import dataclass, replace

MAX_RATE_MBPS = 10_000.0


@dataclass(frozen=True)
class LinkState:
    """Rates per direction ("up" is from the link's endpoint `a` to `b`); delay and jitter apply to each
    direction alike, and so does loss unless `loss_down_pct` gives the down direction its own (a wireless
    station and its AP transmit at different powers, so their links lose differently).
    Jitter is uniform in ±jitter_ms around delay_ms and never reorders packets."""

    rate_up_mbps: float
    rate_down_mbps: float
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    queue_pkts: int = 100
    loss_down_pct: float | None = None      # None: loss_pct in both directions

    def __post_init__(self):
        for name in ("rate_up_mbps", "rate_down_mbps"):
            v = getattr(self, name)
            if not 0 < v <= MAX_RATE_MBPS:
                raise ValueError(f"{name}: expected a rate in (0, {MAX_RATE_MBPS:g}] Mbit/s, got {v!r}")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"delay_ms and jitter_ms must be >= 0, got {self.delay_ms!r}, {self.jitter_ms!r}")
        if self.jitter_ms > self.delay_ms:
            raise ValueError(f"jitter_ms ({self.jitter_ms:g}) must not exceed delay_ms ({self.delay_ms:g}): "
                             "uniform jitter of ±jitter around delay would need negative delays")
        for name in ("loss_pct", "loss_down_pct"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < 100:
                raise ValueError(f"{name}: expected a percentage in [0, 100), got {v!r}")
        if not 1 <= self.queue_pkts <= 100_000:
            raise ValueError(f"queue_pkts: expected an integer in [1, 100000], got {self.queue_pkts!r}")

    def rate_mbps(self, direction: str) -> float:
        return self.rate_up_mbps if direction == "up" else self.rate_down_mbps

    def loss(self, direction: str) -> float:
        """Loss in percent in `direction` ("up" or "down")."""
        return self.loss_down_pct if direction == "down" and self.loss_down_pct is not None else self.loss_pct

    @property
    def losses(self) -> tuple[float, float]:
        return self.loss("up"), self.loss("down")

    @property
    def has_delay_element(self) -> bool:
        """Whether this state needs a delay/loss element (netem leaf or NFQUEUE daemon) at all."""
        return self.delay_ms > 0 or self.jitter_ms > 0 or max(self.losses) > 0

    def with_(self, **changes) -> "LinkState":
        return replace(self, **changes)
