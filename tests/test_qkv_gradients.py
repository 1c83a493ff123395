"""The gradient pass's q/k/v step (``acdc_engine.patching.qkv_gradients``): a layer's projections as
one product, and each receiver's input gradient handed over in factors, equal to autograd through
the norm and that receiver's own projection; and the heads' results summed by one product."""

import pytest
import torch

from acdc_engine.architecture.attention import Attention
from acdc_engine.architecture.config import ArchitectureConfig
from acdc_engine.architecture.norm import Norm
from acdc_engine.patching.qkv_gradients import FactoredGradients, Scratch, watched_qkv

NORMS = [None, ("LN", 0.0), ("RMS", 0.0), ("RMS", 1.0)]


def layer(norm_kind, n_key_value_heads=2, seed=0):
    """A float64 attention layer of 4 query heads (grouped onto ``n_key_value_heads``) over d_model 12,
    random weights and biases, and its pre-norm (None: the model has none)."""
    cfg = ArchitectureConfig("t", 1, 4, 12, 3, 10, 8, n_key_value_heads=n_key_value_heads, attn_only=True, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    attn = Attention(cfg, 0).double()
    with torch.no_grad():
        for weight in attn.parameters():
            weight.copy_(torch.randn(weight.shape, generator=generator, dtype=torch.float64))
    norm = None
    if norm_kind is not None:
        norm = Norm(norm_kind[0], 12, 1e-5, norm_kind[1]).double()
        with torch.no_grad():
            for weight in norm.parameters():
                weight.copy_(torch.randn(weight.shape, generator=generator, dtype=torch.float64))
    return attn, norm


def autograd_input_gradients(attn, norm, resid, grad):
    """d (sum grad * projections) / d in_r for every receiver r, each reading its own copy of resid."""
    n_receivers = 3 * attn.cfg.n_heads
    copies = resid[None].expand(n_receivers, -1, -1, -1).clone().requires_grad_()
    normed = copies if norm is None else norm(copies)
    projections = attn.qkv_rows(normed.reshape(n_receivers, -1, normed.shape[-1]), torch.arange(n_receivers))
    (at_inputs,) = torch.autograd.grad(projections, copies, grad)
    return at_inputs.movedim(0, 2)  # [n_prompts, pos, R, d_model]


@pytest.mark.parametrize("norm_kind", NORMS, ids=["no-norm", "layernorm", "rmsnorm", "rmsnorm-offset"])
@pytest.mark.parametrize("n_key_value_heads", [4, 2])
def test_each_receivers_gradient_in_factors_equals_autograd_through_its_own_projection(norm_kind, n_key_value_heads):
    attn, norm = layer(norm_kind, n_key_value_heads)
    generator = torch.Generator().manual_seed(1)
    resid = torch.randn(2, 5, 12, generator=generator, dtype=torch.float64).requires_grad_()
    grad = torch.randn(12, 10, 3, generator=generator, dtype=torch.float64)  # [3H, tokens, d_head]
    handed = []
    projections = watched_qkv(attn, norm, resid, lambda factored: handed.append(factored.dense().clone()), Scratch())
    (residual_gradient,) = torch.autograd.grad(projections, resid, grad)
    expected = autograd_input_gradients(attn, norm, resid.detach(), grad)
    assert torch.allclose(handed[0], expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(residual_gradient, expected.sum(2), rtol=1e-10, atol=1e-12)


def test_factored_gradients_without_factors_are_the_dense_ones_themselves():
    dense = torch.randn(3, 2, 5, 7)  # [R, n_prompts, pos, d_model]
    factored = FactoredGradients.of_dense(dense)
    assert torch.equal(factored.dense(), dense.movedim(0, 2)) and torch.equal(factored.total(), dense.sum(0))


def test_every_heads_results_summed_in_one_product_equal_the_heads_results_summed():
    attn, _ = layer(None, n_key_value_heads=4)
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 5, 4, 3, generator=generator, dtype=torch.float64) for _ in range(3))
    per_head = attn.heads(q, k, v, torch.arange(4))  # [batch, pos, H, d_model]
    assert torch.allclose(attn.summed_results(q, k, v), per_head.sum(2), rtol=1e-12, atol=1e-12)
