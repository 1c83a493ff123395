"""The MLP sublayer without its norms: plain ``act(x W_in + b_in) W_out + b_out`` or gated
``(act(x W_gate + b_gate) * (x W_in + b_in)) W_out + b_out``. ``W_in``, ``W_gate`` [d_model, d_mlp],
``W_out`` [d_mlp, d_model]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acdc_engine.architecture.config import ArchitectureConfig


def activate(x: Tensor, activation: str) -> Tensor:
    """The activation named by ``ArchitectureConfig.activation`` ("gelu" is exact erf GELU,
    "gelu_tanh" its tanh approximation, "gelu_fast" the same approximation as Hugging Face writes it)."""
    if activation == "gelu":
        return F.gelu(x)
    if activation == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if activation == "gelu_fast":
        return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))
    if activation == "silu":
        return F.silu(x)
    if activation == "relu":
        return F.relu(x)
    raise ValueError(f"unknown activation {activation!r}")


class MLP(nn.Module):
    """An MLP's weights; ``forward`` maps normed input [..., d_model] to [..., d_model]."""

    def __init__(self, cfg: ArchitectureConfig) -> None:
        super().__init__()
        self.activation = cfg.activation
        self.gated = cfg.gated_mlp
        self.W_in = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_mlp), requires_grad=False)
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp), requires_grad=False)
        if cfg.gated_mlp:
            self.W_gate = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_mlp), requires_grad=False)
            self.b_gate = nn.Parameter(torch.zeros(cfg.d_mlp), requires_grad=False)
        self.W_out = nn.Parameter(torch.zeros(cfg.d_mlp, cfg.d_model), requires_grad=False)
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = x @ self.W_in + self.b_in
        if self.gated:
            hidden = activate(x @ self.W_gate + self.b_gate, self.activation) * pre
        else:
            hidden = activate(pre, self.activation)
        return hidden @ self.W_out + self.b_out
