"""The differentiable float-mask pass (``acdc_engine.patching.float_pass``): the boolean pass's patching
rule with masks in [0, 1],

    in_v = A_v + sum_u m_uv (out_u - out*_u),   q = h * q(in_v) + (1 - h) * q*,

checked against the boolean pass and the naive hook-based reference at 0/1 masks, on every model
family; differentiable in both masks; affine where the model is affine; shaped like the boolean pass.
"""

import pytest
import torch
from naive_reference import naive_patched_logits

from acdc_engine import AcdcError, TaskData, build_graph
from acdc_engine.core.mask import CircuitMask
from acdc_engine.patching import EdgePatcher
from acdc_engine.patching.float_pass import float_mask_logits
from factories import random_task, small_model
from families import FAMILIES

ABLATIONS = ("resample", "zero", "mean")
N_CIRCUITS = 3


def patcher_for(model, task, ablation="resample"):
    return EdgePatcher(model, task.clean, task.corrupted, task.positions, ablation)


def random_bool_masks(graph, generator, n_circuits=N_CIRCUITS):
    """A batch of random circuits: about 60% of the edges and 80% of the head inputs kept."""
    edges = graph.edge_exists & (torch.rand(n_circuits, *graph.edge_exists.shape, generator=generator) < 0.6)
    heads = torch.rand(n_circuits, *graph.full_head_input_mask().shape, generator=generator) < 0.8
    return CircuitMask(edges, heads)


def removed_names(graph, edges, heads):
    """The naive reference's arguments for one circuit: the names of its removed edges and head inputs."""
    removed_edges = [f"{graph.senders[s]}->{graph.receivers[r]}" for s, r in (graph.edge_exists & ~edges).nonzero().tolist()]
    removed_heads = [f"a{layer}.h{head}<{'qkv'[x]}>" for layer, head, x in (~heads).nonzero().tolist()]
    return removed_edges, removed_heads


def assert_equals_boolean_pass_and_naive_reference(model, task, ablation, tolerance, naive_tolerance=None):
    """``tolerance`` against the boolean pass; ``naive_tolerance`` (default: the same) against the
    naive reference, whose different order of operations may round differently."""
    naive_tolerance = tolerance if naive_tolerance is None else naive_tolerance
    patcher = patcher_for(model, task, ablation)
    mask = random_bool_masks(patcher.graph, torch.Generator().manual_seed(1))
    logits = float_mask_logits(patcher, mask.as_float(model.cfg.dtype))
    torch.testing.assert_close(logits, patcher.logits(mask), atol=tolerance, rtol=0)
    for c in range(N_CIRCUITS):
        removed = removed_names(patcher.graph, mask.edges[c], mask.head_inputs[c])
        reference = naive_patched_logits(model, task.clean, task.corrupted, *removed, ablation=ablation)
        torch.testing.assert_close(logits[c], reference[:, task.positions], atol=naive_tolerance, rtol=0)


# ---- at 0/1 masks: the boolean pass and the naive reference ----------------------------------------


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_at_zero_one_masks_it_is_the_boolean_pass_on_the_toy_induction_model(toy_induction_model, ablation):
    # float32: the shipped model's own dtype
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, toy_induction_model.cfg.d_vocab, (4, 8), generator=g)
    corrupted = torch.randint(0, toy_induction_model.cfg.d_vocab, (4, 8), generator=g)
    task = TaskData("random", clean, corrupted, torch.tensor([3, 7]))
    assert_equals_boolean_pass_and_naive_reference(toy_induction_model, task, ablation, tolerance=1e-5)


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("attn_only", [True, False], ids=["attn_only", "with_mlps"])
def test_at_zero_one_masks_it_is_the_boolean_pass_on_small_float64_models(attn_only, ablation):
    model = small_model(attn_only, seed=5)
    assert_equals_boolean_pass_and_naive_reference(model, random_task(seed=1, positions=[2, 6]), ablation, tolerance=1e-10)


def test_at_zero_one_masks_it_is_the_boolean_pass_on_a_small_float32_model_with_mlps():
    model = small_model(attn_only=False, seed=5, dtype=torch.float32)
    assert_equals_boolean_pass_and_naive_reference(model, random_task(seed=1), "resample", tolerance=1e-5)


@pytest.mark.parametrize("permuted", [False, True], ids=["split_input", "split_input_permuted_positions"])
def test_at_zero_one_masks_it_is_the_boolean_pass_with_split_input_senders(permuted):
    model = small_model(attn_only=False, seed=5)
    task = random_task(seed=1)
    graph = build_graph(model.cfg, split_input=True)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, permute_corrupted_positions=permuted, split_input=graph.shape.split_input)
    mask = random_bool_masks(graph, torch.Generator().manual_seed(0))
    logits = float_mask_logits(patcher, mask.as_float(torch.float64))
    torch.testing.assert_close(logits, patcher.logits(mask), atol=1e-10, rtol=0)


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    """Every supported family's tiny Hugging Face model in float64 (``tests/families.py``), built once."""
    pytest.importorskip("transformer_lens.model_bridge", reason="the families load through TransformerLens 4's TransformerBridge")
    from families import build_family

    from acdc_engine.models import load_model

    cache = {}

    def get(name):
        if name not in cache:
            folder = build_family(name, tmp_path_factory.mktemp(name))
            cache[name] = load_model("local", path=str(folder), dtype="float64")
        return cache[name]

    return get


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_at_zero_one_masks_it_is_the_boolean_pass_on_every_model_family(family_models, family, ablation):
    # GPT-2; parallel blocks with (partial) rotary (NeoX, GPT-J); GQA + RMSNorm + rotary (Llama, Mistral,
    # Qwen2, Phi-3); q/k norms per head (Qwen3, Gemma-3) and full width (OLMo-2); post-norms, soft-caps,
    # sliding windows (Gemma-2/3, OLMo-2)
    model = family_models(family)
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(3, model.cfg.d_vocab, (3, 10), generator=g)
    corrupted = torch.randint(3, model.cfg.d_vocab, (3, 10), generator=g)
    task = TaskData("random", clean, corrupted, torch.tensor([4, 9]))
    # Gemma-2/3 compute their RMSNorms in float32 even in a float64 model (``upcast="float32"``); under
    # zero ablation the boolean pass, too, differs from the naive reference there by up to 1e-6
    naive_tolerance = 1e-5 if family in ("gemma2", "gemma3") else 1e-10
    assert_equals_boolean_pass_and_naive_reference(model, task, ablation, tolerance=1e-10, naive_tolerance=naive_tolerance)


# ---- the ends: the full model and the empty circuit -------------------------------------------------


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_all_ones_gives_the_clean_models_logits_and_all_zeros_the_empty_circuits(ablation):
    model = small_model(attn_only=False, seed=2)
    task = random_task(seed=3, positions=[1, 6])
    patcher = patcher_for(model, task, ablation)
    graph = patcher.graph
    full = float_mask_logits(patcher, graph.full_mask().as_float(torch.float64))
    torch.testing.assert_close(full, model(task.clean)[:, task.positions], atol=1e-10, rtol=0)
    empty = graph.empty_mask()
    torch.testing.assert_close(
        float_mask_logits(patcher, empty.as_float(torch.float64)), patcher.logits(empty), atol=1e-10, rtol=0
    )
    if ablation == "resample":  # the empty circuit is the corrupted run
        empty_logits = float_mask_logits(patcher, empty.as_float(torch.float64))
        torch.testing.assert_close(empty_logits, model(task.corrupted)[:, task.positions], atol=1e-10, rtol=0)


# ---- interior masks ---------------------------------------------------------------------------------


def logits_with_entry(patcher, which, index, value):
    """Logits of the full circuit with one edge (``which="edges"``) or head-input entry set to ``value``."""
    mask = patcher.graph.full_mask().as_float(torch.float64)
    tensor = getattr(mask, which).clone()
    tensor[index] = value
    return float_mask_logits(patcher, CircuitMask(tensor, mask.head_inputs) if which == "edges" else CircuitMask(mask.edges, tensor))


def test_without_norms_the_logits_are_affine_in_each_edge_into_the_logits():
    # no final norm: the logits are an affine function of the final residual, which is A + sum m (out - out*)
    model = small_model(attn_only=False, seed=4, normalization_type=None)
    patcher = patcher_for(model, random_task(seed=4))
    graph = patcher.graph
    logits = graph.receiver_index["logits"]
    for sender in ("input", "a0.h1", "m0", "a1.h2"):
        index = (graph.sender_index[sender], logits)
        at = {t: logits_with_entry(patcher, "edges", index, t) for t in (0.0, 0.3, 1.0)}
        torch.testing.assert_close(at[0.3], 0.7 * at[0.0] + 0.3 * at[1.0], atol=1e-10, rtol=0)
        assert not torch.allclose(at[0.0], at[1.0])


def test_a_head_input_mask_mixes_the_heads_q_k_v_with_their_ablated_values(monkeypatch):
    # what the heads read: at h the q (k, v) of a head is h * (its value from in_v) + (1 - h) * (its
    # ablated value), after the pre-norm and projection (a LayerNorm model, so mixing the inputs instead
    # would give other values)
    model = small_model(attn_only=False, seed=4)
    patcher = patcher_for(model, random_task(seed=4))
    layer, head = 1, 2
    seen = {}
    head_results = model.head_results

    def recording(at_layer, q, k, v, heads, *args, **kwargs):
        if at_layer == layer:
            seen["qkv"] = torch.stack([q[head], k[head], v[head]])  # one circuit: instance h is head h
        return head_results(at_layer, q, k, v, heads, *args, **kwargs)

    monkeypatch.setattr(model, "head_results", recording)
    for kind in range(3):
        at = {}
        for t in (0.0, 0.3, 1.0):
            logits_with_entry(patcher, "head_inputs", (layer, head, kind), t)
            at[t] = seen["qkv"][kind]
        torch.testing.assert_close(at[0.3], 0.7 * at[0.0] + 0.3 * at[1.0], atol=1e-12, rtol=0)
        ablated = patcher.baseline.ablated.qkv[layer][:, :, kind, head]
        torch.testing.assert_close(at[0.0], ablated, atol=0, rtol=0)
        torch.testing.assert_close(at[1.0], patcher.clean_run.qkv[layer][:, :, kind, head], atol=1e-12, rtol=0)  # every edge kept
        assert not torch.allclose(at[0.0], at[1.0])


# ---- gradients --------------------------------------------------------------------------------------


def test_gradcheck_in_float64_with_respect_to_edge_and_head_input_entries():
    model = small_model(attn_only=False, seed=6, n_heads=2, d_vocab=8)
    patcher = patcher_for(model, random_task(d_vocab=8, n_prompts=2, n_pos=4, seed=6))
    graph = patcher.graph
    g = torch.Generator().manual_seed(6)
    base = CircuitMask(
        torch.rand(graph.edge_exists.shape, generator=g, dtype=torch.float64) * graph.edge_exists,
        torch.rand(graph.full_head_input_mask().shape, generator=g, dtype=torch.float64),
    )
    edges = [graph.parse_edge(name) for name in ("input->a0.h1<q>", "a0.h0->m0", "m0->a1.h1<k>", "a0.h1->a1.h0<v>", "m1->logits")]
    heads = [graph.parse_head_input(name) for name in ("a0.h0<k>", "a1.h1<q>", "a1.h0<v>")]
    edge_rows, edge_cols = torch.tensor(edges).T
    head_index = tuple(torch.tensor(heads).T)

    def logits(edge_values, head_values):
        mask = CircuitMask(base.edges.index_put((edge_rows, edge_cols), edge_values), base.head_inputs.index_put(head_index, head_values))
        return float_mask_logits(patcher, mask)

    inputs = (base.edges[edge_rows, edge_cols].clone().requires_grad_(), base.head_inputs[head_index].clone().requires_grad_())
    assert torch.autograd.gradcheck(logits, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_edge_and_head_input_gets_a_gradient_and_non_edges_get_none(dtype):
    model = small_model(attn_only=False, seed=7, dtype=dtype)
    patcher = patcher_for(model, random_task(seed=7))
    graph = patcher.graph
    mask = CircuitMask(
        torch.full(graph.edge_exists.shape, 0.5, dtype=dtype, requires_grad=True),
        torch.full(graph.full_head_input_mask().shape, 0.5, dtype=dtype, requires_grad=True),
    )
    logits = float_mask_logits(patcher, mask)
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    (logits * weights).sum().backward()
    assert mask.edges.grad.dtype == dtype and mask.head_inputs.grad.dtype == dtype
    assert (mask.edges.grad[graph.edge_exists] != 0).all()
    assert (mask.edges.grad[~graph.edge_exists] == 0).all()
    assert (mask.head_inputs.grad != 0).all()


def test_a_float32_mask_on_a_float64_model_gets_float32_gradients():
    model = small_model(attn_only=True, seed=7)
    patcher = patcher_for(model, random_task(seed=7))
    mask = patcher.graph.full_mask().as_float(torch.float32)
    mask.edges.requires_grad_()
    logits = float_mask_logits(patcher, mask)
    assert logits.dtype == torch.float64
    logits.sum().backward()
    assert mask.edges.grad.dtype == torch.float32


def test_an_edge_that_does_not_reach_the_logits_gets_no_gradient():
    # a head whose every outgoing edge is removed does not matter: nor do the edges into it
    model = small_model(attn_only=True, seed=8)
    patcher = patcher_for(model, random_task(seed=8))
    graph = patcher.graph
    edges = graph.full_edge_mask().double()
    edges[graph.sender_index["a0.h1"]] = 0
    mask = CircuitMask(edges.requires_grad_(), graph.full_head_input_mask().double().requires_grad_())
    float_mask_logits(patcher, mask).sum().backward()
    into_dead_head = [graph.receiver_index[f"a0.h1<{x}>"] for x in "qkv"]
    assert (mask.edges.grad[:, into_dead_head] == 0).all()
    assert (mask.head_inputs.grad[0, 1] == 0).all()
    assert (mask.edges.grad[:, graph.receiver_index["a0.h0<q>"]] != 0).any()


# ---- shapes -----------------------------------------------------------------------------------------


def test_one_circuit_gives_logits_without_a_circuit_axis_and_a_batch_with_one():
    model = small_model(attn_only=False, seed=9)
    task = random_task(n_prompts=5, n_pos=6, seed=9, positions=[2, 4, 5])
    patcher = patcher_for(model, task)
    batch = random_bool_masks(patcher.graph, torch.Generator().manual_seed(9)).as_float(torch.float64)
    batch = batch.map(lambda t: t * 0.7 + 0.1)  # interior values
    logits = float_mask_logits(patcher, batch)
    assert logits.shape == (N_CIRCUITS, 5, 3, model.cfg.d_vocab)
    for c in range(N_CIRCUITS):
        alone = float_mask_logits(patcher, batch[c])
        assert alone.shape == (5, 3, model.cfg.d_vocab)
        torch.testing.assert_close(logits[c], alone, atol=1e-12, rtol=0)


def test_a_boolean_mask_is_taken_as_zero_and_one():
    model = small_model(attn_only=True, seed=9)
    patcher = patcher_for(model, random_task(seed=9))
    mask = random_bool_masks(patcher.graph, torch.Generator().manual_seed(9))
    assert torch.equal(float_mask_logits(patcher, mask), float_mask_logits(patcher, mask.as_float(torch.float64)))


def test_masks_that_do_not_fit_the_graph_are_refused():
    model = small_model(attn_only=True, seed=9)
    patcher = patcher_for(model, random_task(seed=9))
    full = patcher.graph.full_mask().as_float(torch.float64)
    with pytest.raises(AcdcError, match="do not fit"):
        float_mask_logits(patcher, CircuitMask(full.edges[:-1], full.head_inputs))
    with pytest.raises(AcdcError, match="one leading circuit axis"):
        float_mask_logits(patcher, full.map(lambda t: t[None, None]))
