"""Small models and tasks for tests: random weights, built from configs, float64 by default."""

from types import SimpleNamespace

import torch


def small_fields(attn_only: bool, seed: int = 0, **overrides) -> dict:
    """HookedTransformerConfig-style fields of a small float64 model: 2 layers, 3 heads."""
    fields = dict(
        n_layers=2, n_heads=3, d_model=32, d_head=8, d_mlp=64, d_vocab=20, n_ctx=16,
        act_fn="gelu", normalization_type="LN", attn_only=attn_only, seed=seed, dtype=torch.float64,
    )
    fields.update(overrides)
    return fields


def small_config(attn_only: bool, seed: int = 0, **overrides) -> SimpleNamespace:
    """The config of ``small_model`` (what ``build_graph`` reads)."""
    return SimpleNamespace(parallel_attn_mlp=False, **small_fields(attn_only, seed, **overrides))


def small_model(attn_only: bool, seed: int = 0, **overrides):
    """A small random ``ModelSpec`` whose biases and norm weights are random too (0 and 1 would hide
    bugs in how unowned biases are handled)."""
    from acdc_engine.architecture import random_model

    return random_model(small_fields(attn_only, seed, **overrides), seed=seed).eval()


def random_task(d_vocab: int = 20, n_prompts: int = 6, n_pos: int = 7, seed: int = 0, positions=None):
    """Random clean and corrupted prompts with answers at the read positions."""
    from acdc_engine import TaskData

    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, d_vocab, (n_prompts, n_pos), generator=g)
    corrupted = torch.randint(0, d_vocab, (n_prompts, n_pos), generator=g)
    positions = torch.tensor([n_pos - 1] if positions is None else positions)
    answers = torch.randint(0, d_vocab, (n_prompts, len(positions)), generator=g)
    wrong = torch.randint(0, d_vocab, (n_prompts, len(positions)), generator=g)
    return TaskData("random", clean, corrupted, positions, answers, wrong)


def speculative_batch(graph, generator, n_circuits, start_layer):
    """Circuits as ACDC batches them: one shared circuit, each copy missing a few more edges and
    (in some copies) head inputs at or above ``start_layer``, everything below it intact."""
    above = torch.tensor(graph.receiver_layer) >= graph.shape.attention_reads(start_layer)
    shared = graph.full_edge_mask() & ~((torch.rand(graph.edge_exists.shape, generator=generator) < 0.3) & above)
    edges = shared[None].repeat(n_circuits, 1, 1)
    heads = graph.full_head_input_mask()[None].repeat(n_circuits, 1, 1, 1)
    for c in range(n_circuits):
        edges[c] &= ~((torch.rand(graph.edge_exists.shape, generator=generator) < 0.05) & above)
        if c % 3 == 0:
            heads[c, start_layer:] &= torch.rand(heads[c, start_layer:].shape, generator=generator) > 0.2
    return edges, heads


def hooked_small_model(attn_only: bool, seed: int = 0, **overrides):
    """``small_model``'s config as a TransformerLens 3.9 ``HookedTransformer`` (its biases and
    LayerNorm weights random too); for the tests of the HookedTransformer path."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(HookedTransformerConfig(**small_fields(attn_only, seed, **overrides)))
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith((".b", ".w")) or ".b_" in name or name.endswith("b_U"):
                param.add_(0.3 * torch.randn(param.shape, generator=g, dtype=param.dtype))
    return model.eval()


LEARNED_MASK_STEPS = 10
"""Training steps a test gives a learned-mask method (edge-pruning, UGS, subnetwork probing)."""


def quick_params(method: str) -> dict:
    """Keyword arguments that keep ``method``'s run short in a test: few training steps (and two
    mask samples) for a method that learns masks; nothing for the others."""
    import dataclasses

    from acdc_engine.methods import METHODS

    fields = {f.name: f for f in dataclasses.fields(METHODS[method].params)}
    params = {}
    if "steps" in fields and isinstance(fields["steps"].default, int) and fields["steps"].default >= 100:
        params["steps"] = LEARNED_MASK_STEPS
        if "samples" in fields:
            params["samples"] = 2
    return params
