"""The graph: names, edge counts and forward order as docs/design.md fixes them."""

from types import SimpleNamespace

import pytest

from acdc_engine import AcdcError, build_graph


def shape(n_layers, n_heads, attn_only):
    return SimpleNamespace(n_layers=n_layers, n_heads=n_heads, attn_only=attn_only)


@pytest.mark.parametrize(
    "n_layers, n_heads, attn_only, expected",
    [(12, 12, False, 32_491), (4, 8, True, 1_281), (2, 8, True, 257)],
)
def test_edge_count_matches_design(n_layers, n_heads, attn_only, expected):
    assert build_graph(shape(n_layers, n_heads, attn_only)).n_edges == expected


def test_every_edge_runs_forward_in_residual_order():
    graph = build_graph(shape(3, 2, False))
    for sender, receiver in graph.edges():
        assert graph.sender_layer[graph.sender_index[sender]] < graph.receiver_layer[graph.receiver_index[receiver]]


def test_heads_of_one_layer_do_not_feed_each_other_but_feed_their_mlp():
    names = set(build_graph(shape(2, 2, False)).edge_names())
    assert "a0.h0->a0.h1<q>" not in names
    assert "a0.h0->m0" in names
    assert "m0->a1.h1<k>" in names
    assert "m1->m1" not in names


def test_split_input_replaces_input_by_token_and_position_senders():
    plain = build_graph(shape(2, 2, True))
    split = build_graph(shape(2, 2, True), split_input=True)
    assert "input" in plain.senders and "input" not in split.senders
    assert split.senders[:2] == ["tok_embed", "pos_embed"]
    receivers_of_input = int(plain.edge_exists[plain.sender_index["input"]].sum())
    assert split.n_edges == plain.n_edges + receivers_of_input


def test_networkx_view_has_one_edge_per_graph_edge_plus_internal_links():
    graph = build_graph(shape(2, 3, False))
    g = graph.to_networkx()
    head_inputs = 2 * 3 * 3
    # receiver m{L} and sender m{L} share a name, so the MLP's internal link is implicit
    assert g.number_of_edges() == graph.n_edges + head_inputs


@pytest.mark.parametrize(
    "name, complaint",
    [("a0.h9->logits", "unknown sender"), ("a0.h1->a0.h0<q>", "not an edge"), ("input->zz", "unknown receiver"), ("input", "not an edge name")],
)
def test_bad_edge_names_are_rejected_with_the_problem_named(name, complaint):
    with pytest.raises(AcdcError, match=complaint):
        build_graph(shape(2, 2, True)).parse_edge(name)


def test_config_without_layer_count_is_rejected():
    with pytest.raises(AcdcError, match="n_layers"):
        build_graph(SimpleNamespace(n_heads=2, attn_only=True))
