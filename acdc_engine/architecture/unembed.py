"""The unembedding: ``W_U`` [d_model, d_vocab], ``b_U`` [d_vocab], then the logit soft-cap if any."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Unembed(nn.Module):
    def __init__(self, d_model: int, d_vocab: int, softcap: float | None = None) -> None:
        super().__init__()
        self.softcap = softcap
        self.W_U = nn.Parameter(torch.zeros(d_model, d_vocab), requires_grad=False)
        self.b_U = nn.Parameter(torch.zeros(d_vocab), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """Normed residual [..., d_model] -> logits [..., d_vocab] (``cap * tanh(l / cap)`` when capped)."""
        logits = x @ self.W_U + self.b_U
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits
