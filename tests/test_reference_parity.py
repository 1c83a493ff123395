"""The original ACDC's resample ablation with split embeddings: its corrupted run sees the positional
embedding at permuted positions (torch.randperm under seed 49), an option here (off by default)."""

import pytest
import torch
from factories import random_task, small_model

from acdc_engine import AcdcError, discover
from acdc_engine.patching import EdgePatcher


def patcher(**options):
    model = small_model(attn_only=True)
    task = random_task()
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=True, **options)
    return model, patcher.graph, patcher


def test_with_the_option_the_corrupted_positional_embedding_is_at_the_seeded_permutation():
    model, graph, permuted = patcher(permute_corrupted_positions=True)
    n_pos = permuted.corrupted.shape[1]
    order = torch.randperm(n_pos, generator=torch.Generator().manual_seed(49))
    sent = permuted.ablated.sender_out[:, :, graph.sender_index["pos_embed"]]
    assert torch.equal(sent, model.pos_embedding.W_pos[order].expand_as(sent))
    assert not torch.equal(order, torch.arange(n_pos))


def test_without_the_option_the_corrupted_positional_embedding_is_in_order():
    model, graph, plain = patcher()
    sent = plain.ablated.sender_out[:, :, graph.sender_index["pos_embed"]]
    assert torch.equal(sent, model.pos_embedding.W_pos[: sent.shape[1]].expand_as(sent))


@pytest.mark.parametrize("options", [dict(split_input=False), dict(ablation="zero")], ids=["unsplit", "zero"])
def test_the_option_is_refused_outside_resample_ablation_with_split_input(options):
    model, task = small_model(attn_only=True), random_task()
    with pytest.raises(AcdcError, match="permute_corrupted_positions is for resample ablation with split_input"):
        discover(model, task, threshold=0.01, progress=False, permute_corrupted_positions=True, **options)


def test_tracr_reverse_keeps_the_positional_key_of_the_papers_circuit_only_with_the_option():
    pytest.importorskip("tracr")
    run = dict(threshold=1e-6, ablation="resample", split_input=True, progress=False)
    plain = discover("tracr-reverse", "tracr-reverse", **run)
    permuted = discover("tracr-reverse", "tracr-reverse", **run, permute_corrupted_positions=True)
    assert "pos_embed->a3.h0<k>" not in plain.edges()
    assert "pos_embed->a3.h0<k>" in permuted.edges()
    assert permuted.method["permute_corrupted_positions"] is True and "permute_corrupted_positions" not in plain.method
