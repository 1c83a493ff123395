"""The memory model of ``acdc_engine.patching.memory``: one estimate per kind of method, and the check
before a run uses the running method's."""

import pytest
import torch

from acdc_engine import AcdcError
from acdc_engine.methods import METHODS, arguments
from acdc_engine.patching.memory import MemoryProfile, method_bytes, n_receivers_of
from factories import random_task, small_model


def estimate(model, task, profile, **extra):
    n_prompts, n_tokens = task.clean.shape
    return method_bytes(profile, model.cfg, n_prompts=n_prompts, n_tokens=n_tokens, n_positions=task.n_positions,
                        split_input=False, **extra)


def test_the_memory_check_holds_a_task_to_the_running_methods_estimate(monkeypatch):
    model, task = small_model(attn_only=False), random_task(n_prompts=16)
    needs = {profile: estimate(model, task, profile, prompts_per_pass=1) for profile in MemoryProfile}  # the check's
    small, large = min(needs, key=needs.get), max(needs, key=needs.get)
    assert needs[large] > needs[small]
    monkeypatch.setattr(arguments, "available_memory", lambda device: (needs[small] + needs[large]) // 2)
    arguments.check_task_fits(model, task, memory=small)
    with pytest.raises(AcdcError, match=rf"16 prompts of \d+ tokens need about .* GiB for the {large.value}"):
        arguments.check_task_fits(model, task, memory=large)


def test_holding_every_receivers_gradient_adds_it_and_its_float32_sum():
    model, task = small_model(attn_only=False), random_task(n_prompts=4)
    extra = estimate(model, task, MemoryProfile.GRADIENTS_HELD) - estimate(model, task, MemoryProfile.GRADIENT_SCORES)
    tokens, element = task.clean.numel(), torch.empty((), dtype=model.cfg.dtype).element_size()
    assert extra == pytest.approx(tokens * n_receivers_of(model.cfg) * model.cfg.d_model * (element + 4), abs=1)


def test_a_gradient_pass_over_fewer_prompts_needs_less_on_top_of_the_same_tables():
    model, task = small_model(attn_only=False), random_task(n_prompts=8)
    whole, half, one = (estimate(model, task, MemoryProfile.GRADIENT_SCORES, prompts_per_pass=k) for k in (None, 4, 1))
    assert whole > half > one
    assert whole - half == pytest.approx(4 * (half - one) / 3, rel=1e-6)


def test_learned_masks_hold_one_float_pass_per_mask_sample():
    model, task = small_model(attn_only=False), random_task(n_prompts=4)
    one, twelve = (estimate(model, task, MemoryProfile.LEARNED_MASKS, mask_samples=k) for k in (1, 12))
    tables = estimate(model, task, MemoryProfile.LEARNED_MASKS, mask_samples=0)
    assert twelve - tables == pytest.approx(12 * (one - tables), rel=1e-9)


def test_node_and_neuron_attribution_hold_gradients_and_edge_attribution_contracts_them():
    profiles = {name: spec.memory for name, spec in METHODS.items()}
    assert {profiles[name] for name in ("eap-nodes", "eap-ig-nodes", "eap-ig-neurons")} == {MemoryProfile.GRADIENTS_HELD}
    assert {profiles[name] for name in ("eap", "eap-ig", "clean-corrupted")} == {MemoryProfile.GRADIENT_SCORES}
    assert {profiles[name] for name in ("edge-pruning", "ugs", "subnetwork-probing")} == {MemoryProfile.LEARNED_MASKS}
    assert profiles["acdc"] is MemoryProfile.PATCHED_PASS
