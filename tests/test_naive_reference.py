"""Tests of the naive reference implementation (tests/naive_reference.py) on small random models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import naive_reference
from factories import small_model
from naive_reference import (
    graph_names,
    head_input_names,
    naive_acdc,
    naive_kl,
    naive_patched_logits,
    split_edge,
)

D_VOCAB = 20
BATCH, POS = 4, 6
LAST = [POS - 1]


def small_cfg(attn_only: bool, seed: int = 0) -> SimpleNamespace:
    """The graph-relevant config fields of ``build_model``'s model."""
    return SimpleNamespace(n_layers=2, n_heads=3, attn_only=attn_only, parallel_attn_mlp=False)


def build_model(attn_only: bool, seed: int = 0):
    """A small float64 ModelSpec with random biases and norm weights (so that bugs around biases —
    unowned b_O, b_Q, LayerNorm offsets — cannot hide)."""
    return small_model(attn_only, seed=seed, d_vocab=D_VOCAB, d_mlp=None if attn_only else 64, act_fn=None if attn_only else "gelu")


@pytest.fixture(scope="module", params=[True, False], ids=["attn_only", "with_mlps"])
def setup(request):
    model = build_model(attn_only=request.param, seed=0)
    gen = torch.Generator().manual_seed(7)
    clean = torch.randint(0, D_VOCAB, (BATCH, POS), generator=gen)
    # corrupted differs from clean at every position, so every edge carries a difference
    corrupted = (clean + torch.randint(1, D_VOCAB, (BATCH, POS), generator=gen)) % D_VOCAB
    with torch.no_grad():
        clean_logits = model(clean)
        corrupted_logits = model(corrupted)
    return model, clean, corrupted, clean_logits, corrupted_logits


def kl_metric(clean_logits):
    return lambda logits: naive_kl(clean_logits, logits, LAST)


# ---------------------------------------------------------------------------------------------
# graph
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_layers, n_heads, attn_only, expected",
    [(12, 12, False, 32491), (4, 8, True, 1281), (2, 8, True, 257)],
    ids=["gpt2_small_shape", "attn_only_4x8", "attn_only_2x8"],
)
def test_edge_counts_match_design(n_layers, n_heads, attn_only, expected):
    cfg = SimpleNamespace(n_layers=n_layers, n_heads=n_heads, attn_only=attn_only, parallel_attn_mlp=False)
    senders, receivers, edges = graph_names(cfg)
    assert len(edges) == expected
    assert len(set(edges)) == len(edges)
    assert len(senders) == 1 + n_layers * n_heads + (0 if attn_only else n_layers)
    assert len(receivers) == 3 * n_layers * n_heads + (0 if attn_only else n_layers) + 1
    assert head_input_names(cfg) == [r for r in receivers if r.startswith("a")]


def test_sender_and_receiver_names_follow_forward_order():
    senders, receivers, edges = graph_names(small_cfg(attn_only=False))
    assert senders == ["input", "a0.h0", "a0.h1", "a0.h2", "m0", "a1.h0", "a1.h1", "a1.h2", "m1"]
    assert receivers[:4] == ["a0.h0<q>", "a0.h0<k>", "a0.h0<v>", "a0.h1<q>"]
    assert receivers[9] == "m0" and receivers[-2] == "m1" and receivers[-1] == "logits"
    assert "a0.h1->a1.h2<k>" in edges
    assert "a0.h1->m0" in edges  # the MLP reads the heads of its own layer
    assert "a0.h1->a0.h2<k>" not in edges  # heads of one layer do not feed each other
    assert "m0->a0.h0<q>" not in edges


@pytest.mark.parametrize("attn_only", [True, False])
def test_every_edge_runs_forward_and_every_forward_pair_is_an_edge(attn_only):
    senders, receivers, edges = graph_names(small_cfg(attn_only))
    # forward order of writes/reads: input < layer-0 heads < m0 < layer-1 heads < m1 < logits
    order = {"input": 0}
    for layer in range(2):
        for head in range(3):
            order[f"a{layer}.h{head}"] = 2 * layer + 1
            for x in "qkv":
                order[f"a{layer}.h{head}<{x}>"] = 2 * layer + 1
        order[f"m{layer}"] = 2 * layer + 2
    order["logits"] = 99
    for edge in edges:
        u, v = split_edge(edge)
        assert u in senders and v in receivers
        assert order[u] < order[v], edge
    expected = {f"{u}->{v}" for v in receivers for u in senders if order[u] < order[v]}
    assert set(edges) == expected


# ---------------------------------------------------------------------------------------------
# patching
# ---------------------------------------------------------------------------------------------


def test_no_edge_removed_reproduces_clean_logits(setup):
    model, clean, corrupted, clean_logits, _ = setup
    for ablation in ("resample", "zero", "mean"):
        logits = naive_patched_logits(model, clean, corrupted, set(), set(), ablation)
        torch.testing.assert_close(logits, clean_logits, atol=1e-10, rtol=0)


def test_every_edge_removed_reproduces_corrupted_logits_under_resample(setup):
    model, clean, corrupted, clean_logits, corrupted_logits = setup
    _, _, edges = graph_names(model.cfg)
    logits = naive_patched_logits(model, clean, corrupted, set(edges), set(), "resample")
    torch.testing.assert_close(logits, corrupted_logits, atol=1e-10, rtol=0)
    assert not torch.allclose(clean_logits, corrupted_logits, atol=1e-3)  # the check is not vacuous
    # with every head input removed too, nothing changes
    logits = naive_patched_logits(
        model, clean, corrupted, set(edges), set(head_input_names(model.cfg)), "resample"
    )
    torch.testing.assert_close(logits, corrupted_logits, atol=1e-10, rtol=0)


def test_every_edge_removed_under_mean_ablation_of_identical_prompts_gives_that_prompts_logits(setup):
    model, clean, corrupted, _, _ = setup
    _, _, edges = graph_names(model.cfg)
    same = corrupted[:1].expand(BATCH, POS).clone()  # the batch mean of identical prompts is that prompt
    logits = naive_patched_logits(model, clean, same, set(edges), set(), "mean")
    with torch.no_grad():
        expected = model(same)
    torch.testing.assert_close(logits, expected, atol=1e-10, rtol=0)


def test_removing_only_logits_edges_leaves_upstream_clean_and_changes_output(setup):
    model, clean, corrupted, clean_logits, _ = setup
    # removing one edge into logits shifts the final residual by exactly (out_u - out_u*) of that sender
    logits = naive_patched_logits(model, clean, corrupted, {"input->logits"}, set(), "resample")
    _, clean_cache = model.run_with_cache(clean)
    _, corr_cache = model.run_with_cache(corrupted)
    last = model.cfg.n_layers - 1
    resid = clean_cache[f"blocks.{last}.hook_resid_post"]
    resid = resid - (clean_cache["hook_embed"] + clean_cache["hook_pos_embed"])
    resid = resid + (corr_cache["hook_embed"] + corr_cache["hook_pos_embed"])
    with torch.no_grad():
        expected = model.unembed(resid)
    torch.testing.assert_close(logits, expected, atol=1e-10, rtol=0)
    assert not torch.allclose(logits, clean_logits, atol=1e-3)


@pytest.mark.parametrize("layer", [0, 1])
def test_removing_every_head_input_of_a_layer_equals_removing_all_edges_into_them_under_resample(
    setup, layer
):
    model, clean, corrupted, clean_logits, _ = setup
    _, _, edges = graph_names(model.cfg)
    layer_head_inputs = {h for h in head_input_names(model.cfg) if h.startswith(f"a{layer}.")}
    into_them = {e for e in edges if split_edge(e)[1] in layer_head_inputs}
    by_head_inputs = naive_patched_logits(model, clean, corrupted, set(), layer_head_inputs)
    by_edges = naive_patched_logits(model, clean, corrupted, into_them, set())
    torch.testing.assert_close(by_head_inputs, by_edges, atol=1e-10, rtol=0)
    assert not torch.allclose(by_head_inputs, clean_logits, atol=1e-3)


def test_single_head_input_equals_all_its_incoming_edges_under_resample_but_not_zero(setup):
    model, clean, corrupted, _, _ = setup
    _, _, edges = graph_names(model.cfg)
    # <v>, not <q>/<k>: zero-ablating every edge into a k (or q) gives a k that is the same at every
    # position, hence uniform attention, exactly what k = 0 gives, so those would coincide
    receiver = "a1.h2<v>"
    into = {e for e in edges if split_edge(e)[1] == receiver}
    for ablation, should_match in (("resample", True), ("zero", False)):
        a = naive_patched_logits(model, clean, corrupted, set(), {receiver}, ablation)
        b = naive_patched_logits(model, clean, corrupted, into, set(), ablation)
        assert torch.allclose(a, b, atol=1e-10, rtol=0) == should_match, ablation


def test_zero_ablating_all_logits_edges_leaves_only_unowned_attention_biases(setup):
    model, clean, corrupted, _, _ = setup
    _, _, edges = graph_names(model.cfg)
    into_logits = {e for e in edges if split_edge(e)[1] == "logits"}
    logits = naive_patched_logits(model, clean, corrupted, into_logits, set(), "zero")
    # final residual = embeddings + sum of head results + b_O per layer + MLP outputs (b_out included);
    # subtracting every sender's output leaves the attention output biases b_O, which no node owns
    bias_resid = sum(model.blocks[layer].attn.b_O for layer in range(model.cfg.n_layers))
    with torch.no_grad():
        expected = model.unembed(bias_resid.expand(BATCH, POS, -1))
    torch.testing.assert_close(logits, expected, atol=1e-10, rtol=0)
    assert bias_resid.abs().max() > 0.1  # biases were perturbed: the check is not trivially 0


def test_naive_kl_matches_torch_kl_div_and_is_zero_on_identical_logits(setup):
    _, _, _, clean_logits, corrupted_logits = setup
    assert naive_kl(clean_logits, clean_logits, LAST) == 0.0
    positions = [1, POS - 1]
    expected = F.kl_div(
        F.log_softmax(corrupted_logits[:, positions], -1),
        F.log_softmax(clean_logits[:, positions], -1),
        log_target=True,
        reduction="none",
    ).sum(-1).mean()
    assert naive_kl(clean_logits, corrupted_logits, positions) == pytest.approx(float(expected), abs=1e-12)
    assert naive_kl(clean_logits, corrupted_logits, positions) > 0


# ---------------------------------------------------------------------------------------------
# ACDC
# ---------------------------------------------------------------------------------------------


def test_acdc_at_threshold_zero_keeps_every_edge_whose_removal_changes_the_metric(setup):
    model, clean, corrupted, clean_logits, _ = setup
    metric = kl_metric(clean_logits)
    _, _, edges = graph_names(model.cfg)
    head_inputs = head_input_names(model.cfg)
    full = metric(naive_patched_logits(model, clean, corrupted, set(), set()))
    assert full == 0.0

    result = naive_acdc(model, clean, corrupted, metric, threshold=0.0)
    assert set(result["edges"]) == set(edges) and set(result["head_inputs"]) == set(head_inputs)

    # every edge / head input whose single removal from the full model moves the metric is kept
    matters = []
    for e in edges:
        m = metric(naive_patched_logits(model, clean, corrupted, {e}, set()))
        if abs(m - full) > 1e-12:
            matters.append(e)
            assert result["edges"][e], e
    for h in head_inputs:
        m = metric(naive_patched_logits(model, clean, corrupted, set(), {h}))
        if abs(m - full) > 1e-12:
            matters.append(h)
            assert result["head_inputs"][h], h
    assert len(matters) > len(edges) // 2  # not vacuous
    # and a tested candidate was removed only if it strictly lowered the metric
    for name, score in result["scores"].items():
        kept = result["edges"][name] if name in result["edges"] else result["head_inputs"][name]
        if score is not None:
            assert kept == (score >= 0.0), name


def test_acdc_at_huge_threshold_removes_everything(setup):
    model, clean, corrupted, clean_logits, _ = setup
    result = naive_acdc(model, clean, corrupted, kl_metric(clean_logits), threshold=1e9)
    assert not any(result["edges"].values())
    assert not any(result["head_inputs"].values())
    # only the edges into logits are tested: after them every sender is dead, so everything
    # upstream is removed untested
    tested = {name for name, s in result["scores"].items() if s is not None}
    assert tested == {e for e in result["edges"] if e.endswith("->logits")}


@pytest.mark.parametrize("ablation", ["resample", "zero", "mean"])
def test_acdc_untested_removals_do_not_move_the_metric(setup, ablation):
    """Final metric = full metric + sum of the scores of the tested removals (untested ones add 0)."""
    model, clean, corrupted, clean_logits, _ = setup
    _, _, edges = graph_names(model.cfg)
    metric = kl_metric(clean_logits)
    empty = metric(naive_patched_logits(model, clean, corrupted, set(edges), set(), ablation))
    result = naive_acdc(model, clean, corrupted, metric, threshold=empty / 30, ablation=ablation)
    removed_e = {e for e, kept in result["edges"].items() if not kept}
    removed_h = {h for h, kept in result["head_inputs"].items() if not kept}
    assert removed_e and len(removed_e) < len(edges)  # an intermediate circuit
    assert any(result["scores"][e] is None for e in removed_e)  # dead-sender removals happened
    final = metric(naive_patched_logits(model, clean, corrupted, removed_e, removed_h, ablation))
    accepted = sum(
        s for name, s in result["scores"].items() if s is not None and name in removed_e | removed_h
    )
    full = metric(naive_patched_logits(model, clean, corrupted, set(), set(), ablation))
    assert final == pytest.approx(full + accepted, abs=1e-9)
    # every tested removal that was accepted stayed under the threshold; every rejected one did not
    for name, s in result["scores"].items():
        if s is not None:
            assert (s < empty / 30) == (name in removed_e | removed_h), name


def test_acdc_is_deterministic(setup):
    model, clean, corrupted, clean_logits, corrupted_logits = setup
    metric = kl_metric(clean_logits)
    threshold = naive_kl(clean_logits, corrupted_logits, LAST) / 30
    first = naive_acdc(model, clean, corrupted, metric, threshold)
    second = naive_acdc(model, clean, corrupted, metric, threshold)
    assert first == second  # exact equality, scores included
    assert any(first["edges"].values()) and not all(first["edges"].values())


def test_acdc_visits_candidates_in_the_documented_order(setup, monkeypatch):
    """With a threshold nothing can pass, every candidate is tested once, in docs/design.md's order."""
    model, clean, corrupted, clean_logits, _ = setup
    calls = []
    real = naive_reference.naive_patched_logits

    def recording(model_, clean_, corrupted_, removed_edges, removed_head_inputs, ablation, corrupted_lengths=None):
        calls.append(set(removed_edges) | set(removed_head_inputs))
        return real(model_, clean_, corrupted_, removed_edges, removed_head_inputs, ablation, corrupted_lengths)

    monkeypatch.setattr(naive_reference, "naive_patched_logits", recording)
    # KL differences from the full model are >= 0 > -1: every removal is rejected
    result = naive_acdc(model, clean, corrupted, kl_metric(clean_logits), threshold=-1.0)
    assert calls[0] == set()  # the full model first
    visited = []
    for removed in calls[1:]:
        assert len(removed) == 1  # one candidate at a time, all others restored
        visited.append(removed.pop())

    mlps = not model.cfg.attn_only
    heads = ["a1.h2", "a1.h1", "a1.h0", "a0.h2", "a0.h1", "a0.h0"]
    latest_first_1 = (["m0"] if mlps else []) + heads[3:] + ["input"]  # what layer-1 heads read
    expected = [f"{u}->logits" for u in (["m1"] if mlps else []) + heads[:3] + latest_first_1]
    for layer, reads in ((1, latest_first_1), (0, ["input"])):
        layer_heads = [h for h in heads if h.startswith(f"a{layer}.")]
        if mlps:
            expected += [f"{u}->m{layer}" for u in layer_heads + reads]
        expected += [f"{h}<{x}>" for x in "vkq" for h in layer_heads]  # whole-receiver tests
        expected += [f"{u}->{h}<{x}>" for x in "vkq" for h in layer_heads for u in reads]
    if mlps:
        assert expected[:3] == ["m1->logits", "a1.h2->logits", "a1.h1->logits"]
        assert expected[9:12] == ["a1.h2->m1", "a1.h1->m1", "a1.h0->m1"]
    assert visited == expected
    assert all(result["edges"].values()) and all(result["head_inputs"].values())
