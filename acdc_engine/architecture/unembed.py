"""The unembedding: ``W_U`` [d_model, d_vocab], ``b_U`` [d_vocab], then the logit soft-cap if any."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from acdc_engine.architecture.attention import batch_matmul

VOCAB_CHUNK = 1024
"""Columns of ``W_U`` per product in ``Unembed.each``."""


class Unembed(nn.Module):
    def __init__(self, d_model: int, d_vocab: int, softcap: float | None = None) -> None:
        super().__init__()
        self.softcap = softcap
        self.W_U = nn.Parameter(torch.zeros(d_model, d_vocab), requires_grad=False)
        self.b_U = nn.Parameter(torch.zeros(d_vocab), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """Normed residual [..., d_model] -> logits [..., d_vocab] (``cap * tanh(l / cap)`` when capped)."""
        return self.capped(x @ self.W_U + self.b_U)

    def each(self, x: Tensor) -> Tensor:
        """``forward`` of each block x[u] of x [U, M, d_model] -> [U, M, d_vocab]: one matrix product
        per block and chunk of ``VOCAB_CHUNK`` columns of W_U, batched over the blocks (``batch_matmul``), so a block's
        products have the same shapes whatever U is, and each chunk of W_U is read from memory once
        for all blocks (it stays in cache)."""
        d_vocab = self.W_U.shape[1]
        if d_vocab <= VOCAB_CHUNK:
            logits = batch_matmul(x, self.W_U.expand(len(x), *self.W_U.shape))
        else:
            logits = x.new_empty(*x.shape[:-1], d_vocab)
            for start in range(0, d_vocab, VOCAB_CHUNK):
                chunk = self.W_U[:, start : start + VOCAB_CHUNK]
                logits[..., start : start + VOCAB_CHUNK] = batch_matmul(x, chunk.expand(len(x), *chunk.shape))
        return self.capped(logits.add_(self.b_U))

    def capped(self, logits: Tensor) -> Tensor:
        """``cap * tanh(logits / cap)`` with a soft-cap, else the logits."""
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits
