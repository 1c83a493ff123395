"""Fuzzing datasets (hypothesis, derandomized): random and malformed inputs to ``TaskData``.

Contract: TaskData(...) either builds a dataset that keeps its documented invariants or raises
AcdcError, nothing else; ``check_vocabulary`` raises AcdcError exactly when a token id lies outside
the vocabulary.
"""

import numpy as np
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from acdc_engine import AcdcError, TaskData

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])

INTEGER_DTYPES = [torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8]
OTHER_DTYPES = [torch.float32, torch.float64, torch.bool, torch.complex64]


@st.composite
def token_tensors(draw, shape):
    """Integer token ids of ``shape``: mostly small, now and then negative or int64-sized."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    tensor = torch.randint(-2, 30, shape, generator=g)
    if tensor.numel() and draw(st.integers(0, 5)) == 0:
        tensor.view(-1)[0] = draw(st.integers(-(2**63), 2**63 - 1))
    small = tensor.numel() == 0 or (tensor.min() >= -128 and tensor.max() < 128)
    return tensor.to(draw(st.sampled_from(INTEGER_DTYPES))) if small else tensor


@st.composite
def wild(draw, shape):
    """Anything a user might pass instead: other dtypes (NaN included), other shapes, numpy arrays,
    nested lists (maybe ragged), scalars, strings, None."""
    kind = draw(st.sampled_from(["dtype", "shape", "numpy", "nested"]))
    if kind == "dtype":
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        values = torch.randint(0, 30, shape, generator=g).to(draw(st.sampled_from(OTHER_DTYPES)))
        return values.masked_fill(torch.rand(shape, generator=g) < 0.3, float("nan")) if values.is_floating_point() else values
    if kind == "shape":
        return draw(token_tensors(tuple(draw(st.lists(st.integers(0, 4), max_size=3)))))
    if kind == "numpy":
        return draw(hnp.arrays(
            dtype=st.sampled_from([np.int64, np.int32, np.uint64, np.float32, np.bool_, np.object_]),
            shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        ))
    scalars = st.integers() | st.floats() | st.booleans() | st.text(max_size=3) | st.none()
    return draw(st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=12))


def field(shape):
    """Mostly well-formed token ids (sometimes as nested lists), a quarter of the time anything."""
    good = token_tensors(shape)
    return st.one_of(good, good, good.map(torch.Tensor.tolist), wild(shape))


@st.composite
def task_arguments(draw):
    n_prompts, n_pos = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    n_read = draw(st.integers(1, n_pos))
    arguments = {"name": draw(st.one_of(st.just("t"), st.just("t"), st.just("t"), st.text(max_size=3) | st.integers() | st.none()))}
    arguments["clean"] = draw(field((n_prompts, n_pos)))
    arguments["corrupted"] = arguments["clean"] if draw(st.booleans()) else draw(field((n_prompts, n_pos)))
    if draw(st.booleans()):
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        positions = torch.randperm(2 * n_pos, generator=g)[:n_read] - n_pos  # in range, counted from either end
        arguments["positions"] = draw(st.one_of(st.just(positions), st.just(positions), wild((n_read,))))
    n_answers = n_read if "positions" in arguments else 1
    for key in ("answers", "wrong_answers"):
        if draw(st.booleans()):
            arguments[key] = draw(field((n_prompts, n_answers)))
    for key in ("answer_sets", "wrong_answer_sets"):
        if draw(st.integers(0, 3)) == 0:
            arguments[key] = draw(field((n_prompts, n_answers, draw(st.integers(1, 3)))))
    return arguments


def assert_invariants(task):
    n_prompts, n_pos = task.clean.shape
    assert task.clean.dtype == task.corrupted.dtype == torch.long and task.corrupted.shape == (n_prompts, n_pos)
    assert n_prompts >= 1 and n_pos >= 1
    assert task.positions.dtype == torch.long and task.positions.dim() == 1 and len(task.positions) >= 1
    assert 0 <= int(task.positions.min()) and int(task.positions.max()) < n_pos
    for answers in (task.answers, task.wrong_answers):
        assert answers is None or (answers.dtype == torch.long and answers.shape == (n_prompts, len(task.positions)))
    for sets in (task.answer_sets, task.wrong_answer_sets):
        assert sets is None or (sets.dtype == torch.long and sets.shape[:2] == (n_prompts, len(task.positions)))
        assert sets is None or (int(sets.min()) >= -1 and bool((sets >= 0).any(-1).all()))  # -1 pads, no empty set


@FUZZ
@given(arguments=task_arguments(), d_vocab=st.integers(1, 40))
def test_random_dataset_builds_with_its_invariants_or_raises_acdc_error(arguments, d_vocab):
    try:
        task = TaskData(**arguments)
    except AcdcError as error:
        event("rejected")
        assert str(error)
        return
    event("built")
    assert_invariants(task)
    ids = [t for t in (task.clean, task.corrupted, task.answers, task.wrong_answers) if t is not None]
    ids += [t[t >= 0] for t in (task.answer_sets, task.wrong_answer_sets) if t is not None]  # without the padding
    inside = all(0 <= int(t.min()) and int(t.max()) < d_vocab for t in ids)
    try:
        task.check_vocabulary(d_vocab)
        assert inside
    except AcdcError:
        assert not inside
