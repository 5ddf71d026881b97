"""Small modules used to build draft models from a target."""
from __future__ import annotations

import torch
from torch import nn


class SubsetHead(nn.Module):
    """An LM head over a token subset that still returns full-vocabulary logits (-inf elsewhere), so the
    draft's token ids stay the target's."""

    def __init__(self, head: nn.Linear, idx: torch.Tensor):
        super().__init__()
        self.register_buffer("idx", idx)
        self.vocab = head.weight.shape[0]
        self.sub = nn.Linear(head.weight.shape[1], len(idx), bias=False)
        with torch.no_grad():
            self.sub.weight.copy_(head.weight[idx])

    def forward(self, x):
        y = self.sub(x)
        full = y.new_full(y.shape[:-1] + (self.vocab,), float("-inf"))
        full[..., self.idx] = y
        return full
