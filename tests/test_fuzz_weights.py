"""Fuzzing weight files (hypothesis, derandomized): random bytes, and valid safetensors / torch files
truncated or with bytes overwritten, go to ``load_weights``.

Contract: it returns a mapping of names to tensors or raises AcdcError, nothing else.
"""

import io

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from acdc_engine import AcdcError
from acdc_engine.formats.weights import load_weights

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
STATE = {"embed.W_E": torch.arange(12.0).reshape(3, 4), "blocks.0.attn.b_O": torch.tensor([1, 2, 3], dtype=torch.int32)}


def torch_bytes(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


VALID = {".safetensors": save(STATE), ".pt": torch_bytes(STATE)}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-weights")


def assert_loads_or_raises_acdc_error(path):
    try:
        state = load_weights(path)
    except AcdcError as error:
        event("rejected")
        assert str(path) in str(error)
        return
    event("loaded")
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


@st.composite
def damaged(draw, valid):
    """``valid`` truncated, or with one to four runs of bytes overwritten."""
    raw = bytearray(valid)
    if draw(st.booleans()):
        return bytes(raw[: draw(st.integers(0, len(raw) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        patch = draw(st.binary(min_size=1, max_size=8))
        raw[at : at + len(patch)] = patch
    return bytes(raw)


@pytest.mark.parametrize("suffix", sorted(VALID))
@FUZZ
@given(data=st.data())
def test_random_or_damaged_weight_file_loads_or_raises_acdc_error(scratch, suffix, data):
    raw = data.draw(st.binary(max_size=200) | damaged(VALID[suffix]), label="raw")
    path = scratch / f"weights{suffix}"
    path.write_bytes(raw)
    assert_loads_or_raises_acdc_error(path)
