"""``Norm.input_gradients``: many gradients at a norm's output taken back to its input at once, equal to
autograd through the norm applied to each copy of the input."""

import pytest
import torch

from acdc_engine.architecture.norm import Norm

NORMS = [("LN", 0.0, "promote"), ("RMS", 0.0, "promote"), ("RMS", 1.0, "promote"), ("RMS", 0.0, "float32")]
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 2e-2}


def norm_of(kind, offset, upcast, dtype, width=16):
    generator = torch.Generator().manual_seed(0)
    norm = Norm(kind, width, 1e-5, offset, upcast)
    with torch.no_grad():
        norm.w.copy_(1 - offset + 0.3 * torch.randn(width, generator=generator))
        if kind == "LN":
            norm.b.copy_(torch.randn(width, generator=generator))
    return norm.to(dtype)


@pytest.mark.parametrize("kind, offset, upcast", NORMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_input_gradients_equal_autograd_through_each_copy(kind, offset, upcast, dtype):
    norm = norm_of(kind, offset, upcast, dtype)
    generator = torch.Generator().manual_seed(1)
    x = (2 * torch.randn(3, 5, 16, generator=generator)).to(dtype)
    grads = torch.randn(4, 3, 5, 16, generator=generator).to(dtype)
    copies = x[None].expand(4, -1, -1, -1).clone().requires_grad_()
    (expected,) = torch.autograd.grad(norm(copies), copies, grads)
    got = norm.input_gradients(x, grads)
    assert got.dtype == dtype and got.shape == grads.shape
    # float64 inputs of a float32-upcast RMSNorm are computed in float32, as the norm itself does
    tolerance = TOLERANCE[torch.float32 if upcast == "float32" and dtype == torch.float64 else dtype]
    assert torch.allclose(got.double(), expected.double(), rtol=tolerance, atol=tolerance * float(expected.abs().max()))


def test_a_layernorm_in_its_own_dtype_takes_torchs_fused_backward_bit_for_bit():
    norm = norm_of("LN", 0.0, "promote", torch.float32)
    x, grads = torch.randn(6, 16), torch.randn(5, 6, 16)
    copies = x[None].expand(5, -1, -1).clone().requires_grad_()
    (expected,) = torch.autograd.grad(norm(copies), copies, grads)
    assert torch.equal(norm.input_gradients(x, grads), expected)
