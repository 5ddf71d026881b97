"""Speculation length: how many tokens a session drafts next (static for now; adaptive ones follow)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StaticGamma:
    """A fixed window: `gamma` if given, else whatever the session asked for at START."""
    gamma: int | None = None
    name = "static"

    def next_window(self, requested: int, accepted_history: list[int]) -> int:
        return requested if self.gamma is None else self.gamma
