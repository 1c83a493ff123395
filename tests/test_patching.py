"""Masked patching: the fast forward pass against TransformerLens and the naive hook-based reference."""

import gc

import pytest
import torch
from naive_reference import naive_patched_logits

from acdc_engine.core.graph import GraphShape
from acdc_engine.core.mask import CircuitMask
from acdc_engine import AcdcError, build_graph
from acdc_engine.patching import EdgePatcher, pass_state
from factories import random_task, small_model, speculative_batch


def patcher_for(model, task, ablation="resample"):
    graph = build_graph(model.cfg)
    return graph, EdgePatcher(model, task.clean, task.corrupted, torch.arange(task.clean.shape[1]), ablation, split_input=graph.shape.split_input)


def empty_masks(graph):
    return torch.zeros_like(graph.edge_exists), torch.zeros_like(graph.full_head_input_mask())


@pytest.mark.parametrize("attn_only", [True, False], ids=["attn_only", "with_mlps"])
def test_all_edges_present_reproduces_clean_logits(attn_only):
    model = small_model(attn_only, dtype=torch.float32)
    task = random_task()
    graph, patcher = patcher_for(model, task)
    logits = patcher.logits(graph.full_mask())
    torch.testing.assert_close(logits, model(task.clean), atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn_only", [True, False], ids=["attn_only", "with_mlps"])
def test_all_edges_absent_reproduces_corrupted_logits(attn_only):
    model = small_model(attn_only, dtype=torch.float32)
    task = random_task()
    graph, patcher = patcher_for(model, task)
    torch.testing.assert_close(patcher.logits(CircuitMask(*empty_masks(graph))), model(task.corrupted), atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn_only", [True, False], ids=["attn_only", "with_mlps"])
def test_a_circuit_without_edges_skips_the_layers_and_gives_the_bits_of_a_batch_that_computes_them(attn_only):
    """A pass whose masks keep no edge computes no layer; the circuit's logits are the bits it has
    in a batch beside a circuit that keeps edges (whose pass computes every layer)."""
    model = small_model(attn_only, seed=4, dtype=torch.float32)
    graph, patcher = patcher_for(model, random_task(seed=4))
    edges, heads = empty_masks(graph)
    alone = patcher.logits(CircuitMask(edges, heads))
    batched = patcher.logits(CircuitMask(torch.stack([edges, graph.edge_exists]), torch.stack([heads, ~heads])))
    assert torch.equal(alone, batched[0])
    assert not torch.equal(batched[0], batched[1])  # the other circuit's pass computed its layers


def random_masks(graph, generator, keep=0.5):
    edges = (torch.rand(graph.edge_exists.shape, generator=generator) < keep) & graph.edge_exists
    heads = torch.rand(graph.full_head_input_mask().shape, generator=generator) < keep + 0.3
    return edges, heads


def removed_names(graph, edges, heads):
    removed_edges = {f"{s}->{r}" for s, r in graph.edges() if not edges[graph.sender_index[s], graph.receiver_index[r]]}
    removed_heads = {name for name in graph.head_input_names() if not heads[graph.parse_head_input(name)]}
    return removed_edges, removed_heads


@pytest.mark.parametrize("ablation", ["resample", "zero", "mean"])
@pytest.mark.parametrize("attn_only", [True, False], ids=["attn_only", "with_mlps"])
def test_random_edge_subsets_match_naive_reference(attn_only, ablation):
    model = small_model(attn_only, seed=5)
    task = random_task(seed=1)
    graph, patcher = patcher_for(model, task, ablation)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        edges, heads = random_masks(graph, generator)
        expected = naive_patched_logits(model, task.clean, task.corrupted, *removed_names(graph, edges, heads), ablation=ablation)
        torch.testing.assert_close(patcher.logits(CircuitMask(edges, heads)), expected, atol=1e-10, rtol=0)


@pytest.fixture(params=[False, True], ids=["queries_taken_at_positions", "queries_computed_at_positions"])
def split_queries(request, monkeypatch):
    """Both ways the top layer's queries reach the logits' positions (``PassState.split_queries``)."""
    monkeypatch.setattr(pass_state, "SPLIT_QUERIES_FROM", 0 if request.param else float("inf"))


@pytest.mark.parametrize("attn_only", [True, False], ids=["attn_only", "with_mlps"])
def test_random_edge_subsets_at_some_positions_match_naive_reference(attn_only, split_queries):
    # with logits at some positions only, the top layer is computed at those positions
    model = small_model(attn_only, seed=5)
    task = random_task(seed=1, positions=[2, 5])
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        edges, heads = random_masks(graph, generator)
        expected = naive_patched_logits(model, task.clean, task.corrupted, *removed_names(graph, edges, heads))
        torch.testing.assert_close(patcher.logits(CircuitMask(edges, heads)), expected[:, task.positions], atol=1e-10, rtol=0)


def test_circuits_stacked_on_the_batch_axis_match_one_at_a_time():
    model = small_model(attn_only=False, seed=2)
    task = random_task()
    graph, patcher = patcher_for(model, task)
    generator = torch.Generator().manual_seed(1)
    masks = [random_masks(graph, generator) for _ in range(3)]
    stacked = patcher.logits(CircuitMask(torch.stack([e for e, _ in masks]), torch.stack([h for _, h in masks])))
    for i, (edges, heads) in enumerate(masks):
        torch.testing.assert_close(stacked[i], patcher.logits(CircuitMask(edges, heads)), atol=1e-12, rtol=0)


def assert_batch_invariant(model, task, start_layers, sizes=(2, 3, 8)):
    graph, patcher = patcher_for(model, task)
    generator = torch.Generator().manual_seed(0)
    for start_layer in start_layers:
        for n_circuits in sizes:
            edges, heads = speculative_batch(graph, generator, n_circuits, start_layer)
            batched = patcher.logits(CircuitMask(edges, heads), start_layer)
            for c in range(n_circuits):
                assert torch.equal(batched[c], patcher.logits(CircuitMask(edges[c], heads[c]), start_layer)), (start_layer, n_circuits, c)


@pytest.mark.parametrize("attn_only", [True, False], ids=["attn_only", "with_mlps"])
def test_float32_logits_of_a_circuit_are_bit_identical_alone_and_in_any_batch(attn_only):
    model = small_model(attn_only=attn_only, seed=3, dtype=torch.float32)
    assert_batch_invariant(model, random_task(n_prompts=8, n_pos=9, seed=3), start_layers=(0, 1))


@pytest.mark.parametrize("attn_only", [True, False], ids=["attn_only", "with_mlps"])
def test_float32_logits_at_some_positions_are_bit_identical_alone_and_in_any_batch(attn_only, split_queries):
    model = small_model(attn_only=attn_only, seed=3, dtype=torch.float32)
    task = random_task(n_prompts=8, n_pos=9, seed=3, positions=[4, 8])
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
    generator = torch.Generator().manual_seed(0)
    for start_layer in (0, 1):
        for n_circuits in (2, 3, 8):
            edges, heads = speculative_batch(graph, generator, n_circuits, start_layer)
            batched = patcher.logits(CircuitMask(edges, heads), start_layer)
            for c in range(n_circuits):
                assert torch.equal(batched[c], patcher.logits(CircuitMask(edges[c], heads[c]), start_layer)), (start_layer, n_circuits, c)


def float32_patcher(positions: list[int] | None, **options) -> tuple:
    """(model, task, graph, patcher) of a small float32 model with MLPs, 8 prompts x 9 tokens,
    the logits read at ``positions`` (default: every position)."""
    model = small_model(attn_only=False, seed=3, dtype=torch.float32)
    task = random_task(n_prompts=8, n_pos=9, seed=3, positions=positions or list(range(9)))
    graph = build_graph(model.cfg)
    return model, task, graph, EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input, **options)


@pytest.mark.parametrize("positions", [None, [4, 8]], ids=["every_position", "some_positions"])
def test_a_pass_after_other_passes_gives_the_bits_of_a_fresh_patcher(positions):
    # outputs computed alike in every circuit of a pass are kept for later passes
    model, task, graph, used = float32_patcher(positions)
    generator = torch.Generator().manual_seed(1)
    for start_layer in (1, 0, 0, 1, 0):
        edges, heads = speculative_batch(graph, generator, 3, start_layer)
        used.logits(CircuitMask(edges, heads), start_layer)
        for c in range(3):
            fresh = float32_patcher(positions, self_check=False)[3]
            assert torch.equal(used.logits(CircuitMask(edges[c], heads[c]), start_layer), fresh.logits(CircuitMask(edges[c], heads[c]), start_layer))


@pytest.mark.parametrize("positions", [None, [4, 8]], ids=["every_position", "some_positions"])
def test_a_batched_pass_leaves_no_reference_cycle_holding_its_buffers(positions):
    # a pass's per-circuit rows are freed when it ends, not when the garbage collector next runs
    _, _, graph, patcher = float32_patcher(positions)
    generator = torch.Generator().manual_seed(1)
    gc.collect()
    gc.disable()
    try:
        for start_layer in (1, 0):
            edges, heads = speculative_batch(graph, generator, 4, start_layer)
            patcher.logits(CircuitMask(edges, heads), start_layer)
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_logits_come_back_as_a_tensor_a_metric_can_take_gradients_through():
    # the pass runs in inference mode; what it hands back is a normal tensor
    model, task, graph, patcher = float32_patcher(None)
    for mask in (graph.full_mask(), CircuitMask(*random_masks(graph, torch.Generator().manual_seed(2)))):
        logits = patcher.logits(mask)
        scale = torch.ones((), requires_grad=True)
        (logits * scale).sum().backward()  # an inference tensor cannot be saved for backward
        assert not logits.is_inference() and torch.equal(scale.grad, logits.sum().detach())


@pytest.fixture
def two_torch_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_float32_logits_of_a_four_layer_model_are_bit_identical_alone_and_in_any_batch_with_two_threads(two_torch_threads):
    # small matrices (6 prompts, logits at one position), where BLAS with 2 threads sums a batch
    # of one matrix unlike a larger batch
    model = small_model(attn_only=False, seed=4, n_layers=4, n_heads=4, dtype=torch.float32)
    task = random_task(seed=4)
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
    generator = torch.Generator().manual_seed(0)
    for start_layer in range(4):
        edges, heads = speculative_batch(graph, generator, 3, start_layer)
        batched = patcher.logits(CircuitMask(edges, heads), start_layer)
        for c in range(3):
            assert torch.equal(batched[c], patcher.logits(CircuitMask(edges[c], heads[c]), start_layer)), (start_layer, c)


def test_wide_mlp_logits_are_bit_identical_alone_and_in_a_batch():
    # at GPT-2's widths, a batched MLP product with 2 threads sums rows differently than a lone one
    model = small_model(attn_only=False, seed=5, n_layers=1, n_heads=12, d_model=768, d_head=64, d_mlp=3072,
                        d_vocab=500, n_ctx=16, dtype=torch.float32)
    assert_batch_invariant(model, random_task(d_vocab=500, n_prompts=8, n_pos=16, seed=5), start_layers=(0,), sizes=(8,))


def test_a_head_input_cut_in_the_first_circuit_of_a_batch_stays_in_the_others():
    model = small_model(attn_only=True, seed=1)
    graph, patcher = patcher_for(model, random_task())
    edges = graph.full_edge_mask()[None].repeat(2, 1, 1)
    heads = graph.full_head_input_mask()[None].repeat(2, 1, 1, 1)
    heads[0][graph.parse_head_input("a1.h0<q>")] = False
    batched = patcher.logits(CircuitMask(edges, heads), start_layer=1)
    torch.testing.assert_close(batched[1], patcher.logits(CircuitMask(edges[1], heads[1]), start_layer=1), atol=1e-12, rtol=0)
    assert not torch.allclose(batched[0], batched[1])


def test_logits_are_returned_only_at_the_requested_positions():
    model = small_model(attn_only=True)
    task = random_task()
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, torch.tensor([2, 5]), split_input=graph.shape.split_input)
    logits = patcher.logits(graph.full_mask())
    torch.testing.assert_close(logits, model(task.clean)[:, [2, 5]], atol=1e-10, rtol=0)


def test_mismatched_clean_and_corrupted_shapes_are_rejected():
    model = small_model(attn_only=True)
    with pytest.raises(AcdcError, match=r"differ in shape: \(4, 6\) vs \(4, 5\)"):
        EdgePatcher(model, torch.zeros(4, 6, dtype=torch.long), torch.zeros(4, 5, dtype=torch.long))


def test_unknown_ablation_is_rejected():
    model = small_model(attn_only=True)
    tokens = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(AcdcError, match="unknown ablation 'shuffle'"):
        EdgePatcher(model, tokens, tokens, ablation="shuffle")


def test_split_input_on_a_model_without_absolute_positions_is_refused_naming_them():
    model = small_model(attn_only=True, positional_embedding_type="rotary", rotary_dim=8)
    tokens = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(AcdcError, match="split_input needs absolute positional embeddings"):
        EdgePatcher(model, tokens, tokens, split_input=True)


@pytest.mark.parametrize("split_input", [False, True])
def test_the_patcher_builds_the_graph_of_its_own_model(split_input):
    model = small_model(attn_only=False)
    tokens = torch.zeros(2, 3, dtype=torch.long)
    graph = EdgePatcher(model, tokens, tokens, split_input=split_input).graph
    assert graph.shape == GraphShape.from_model_config(model.cfg, split_input=split_input)
    assert graph.edge_names() == build_graph(model.cfg, split_input=split_input).edge_names()


def test_non_transformer_lens_model_is_rejected():
    with pytest.raises(AcdcError, match="HookedTransformer"):
        EdgePatcher(torch.nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.parametrize("start_layer", [1, 2])
def test_resuming_at_a_layer_matches_the_full_pass_when_lower_receivers_are_intact(start_layer):
    model = small_model(attn_only=False, seed=6)
    task = random_task()
    graph, patcher = patcher_for(model, task)
    edges, heads = random_masks(graph, torch.Generator().manual_seed(2))
    below = torch.tensor(graph.receiver_layer) < graph.shape.attention_reads(start_layer)
    edges[:, below] = graph.edge_exists[:, below]
    heads[:start_layer] = True
    full = patcher.logits(CircuitMask(edges, heads))
    torch.testing.assert_close(patcher.logits(CircuitMask(edges, heads), start_layer=start_layer), full, atol=1e-12, rtol=0)


def test_resuming_above_a_patched_receiver_is_refused():
    model = small_model(attn_only=True)
    graph, patcher = patcher_for(model, random_task())
    edges = graph.full_edge_mask()
    edges[graph.parse_edge("input->a0.h1<k>")] = False
    with pytest.raises(ValueError, match="cannot resume at layer 1"):
        patcher.logits(CircuitMask(edges, graph.full_head_input_mask()), start_layer=1)
