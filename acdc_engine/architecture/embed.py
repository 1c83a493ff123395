"""Token and absolute position embeddings: ``W_E`` [d_vocab, d_model], ``W_pos`` [n_ctx, d_model]."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Embed(nn.Module):
    """Token embedding times ``scale`` (1.0, or Gemma's sqrt(d_model) rounded to the model dtype)."""

    def __init__(self, d_vocab: int, d_model: int, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.W_E = nn.Parameter(torch.zeros(d_vocab, d_model), requires_grad=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [..., pos] -> [..., pos, d_model]."""
        embedded = self.W_E[tokens]
        if self.scale != 1.0:
            embedded = embedded * torch.tensor(self.scale, dtype=embedded.dtype, device=embedded.device)
        return embedded


class PosEmbed(nn.Module):
    """Learned absolute position embedding."""

    def __init__(self, n_ctx: int, d_model: int) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.zeros(n_ctx, d_model), requires_grad=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [..., pos] -> [..., pos, d_model]: row p of W_pos at position p."""
        n_pos = tokens.shape[-1]
        return self.W_pos[:n_pos].expand(*tokens.shape, self.W_pos.shape[-1])
