"""Information flow routes (EAP-IG's ``get_scores_information_flow_routes``) and MIB's greedy circuits,
against naive implementations: TransformerLens-style hooks on the model's own hooked forward, one
token, receiver and sender at a time; the greedy rule as a scan over every candidate edge per step.
On a GPT-2-style model, an attention-only one and a Llama (grouped-query attention, RMSNorm,
rotary) built offline, with prompts of one length and right-padded prompts of many."""

import heapq
import json
import os
import subprocess
import sys

import pytest
import torch
from factories import random_task, small_model
from naive_eap import _receiver_hook, naive_edges
from naive_reference import graph_names, split_edge
from omegaconf import OmegaConf
from test_variable_length import ragged_task

from acdc_engine import AcdcError, TaskData, build_graph, discover
from acdc_engine.commands.discover import CONF_DIR
from acdc_engine.formats.eap_ig import circuit_from_eap_ig, circuit_to_eap_ig
from acdc_engine.methods import METHODS, CircuitSelection
from acdc_engine.methods.eap import greedy_edges, select_edges
from acdc_engine.methods.information_flow_routes import InformationFlowRoutesConfig, InformationFlowRoutesParams

MODELS = ["gpt2-style", "attn-only", "llama"]  # attribution_models (conftest.py)
LENGTHS = [7, 5, 6, 4, 7, 5]
METHOD = "information-flow-routes"


# ----- the naive implementation -------------------------------------------------------------------


def naive_raw_head_results(model, cache, layer: int) -> torch.Tensor:
    """Each head's result z_h @ W_O[h] [n, pos, H, d_model] from its pattern and values (what
    TransformerLens' ``attn.hook_result`` holds, before any attention post-norm)."""
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [n, H, query, key]
    values = cache[f"blocks.{layer}.attn.hook_v"]  # [n, key, H, d_head]
    z = torch.einsum("nhqk,nkhd->nqhd", pattern, values)
    return torch.einsum("nqhd,hdm->nqhm", z, model.blocks[layer].attn.W_O)


def naive_sender_value(model, cache, name: str, outputs: str) -> torch.Tensor:
    """y_u [n, pos, d_model]: "eap-ig" reads EAP-IG's hooks (hook_embed alone for the input, heads'
    results before any post-norm), "residual" what the sender adds to the residual stream."""
    if name == "tok_embed" or (name == "input" and outputs == "eap-ig"):
        return cache["hook_embed"]
    if name == "pos_embed":
        return cache["hook_pos_embed"]
    if name == "input":
        return cache["hook_embed"] + (cache["hook_pos_embed"] if "hook_pos_embed" in cache.keys() else 0)
    if name.startswith("a"):
        layer, head = (int(part[1:]) for part in name.split("."))
        if outputs == "eap-ig" and model.cfg.post_norms:
            return naive_raw_head_results(model, cache, layer)[:, :, head]
        return cache[f"blocks.{layer}.attn.hook_result"][:, :, head]
    return cache[f"blocks.{int(name[1:])}.hook_mlp_out"]


def naive_ifr_scores(model, clean, lengths=None, outputs="eap-ig", split_input=False) -> dict[str, float]:
    """{edge: score}: at every real token of every prompt, each receiver's input x and each of its
    senders' outputs y; proximity max(0, |x|_1 - |x - y|_1), normalised over the receiver's senders
    (a token where all are 0 adds 0), averaged over the prompt's real tokens, then over prompts."""
    n_prompts, n_pos = clean.shape
    lengths = [n_pos] * n_prompts if lengths is None else [int(n) for n in lengths]
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
    edges = naive_edges(model.cfg, split_input)
    scores = {edge: 0.0 for edge in edges}
    for receiver in dict.fromkeys(split_edge(e)[1] for e in edges):
        hook, head = _receiver_hook(model.cfg, receiver)
        x_all = cache[hook] if head is None else cache[hook][:, :, head]
        into = [e for e in edges if split_edge(e)[1] == receiver]
        y_all = [naive_sender_value(model, cache, split_edge(e)[0], outputs) for e in into]
        for i in range(n_prompts):
            for p in range(lengths[i]):
                x = x_all[i, p]
                proximity = [max(0.0, float(x.abs().sum() - (x - y[i, p]).abs().sum())) for y in y_all]
                if sum(proximity) == 0:  # no sender is closer to x than 0 is: the token adds nothing
                    continue
                for edge, value in zip(into, proximity):
                    scores[edge] += value / sum(proximity) / lengths[i] / n_prompts
    return scores


def naive_greedy(cfg, scores: dict[str, float], n: int) -> set[str]:
    """MIB's greedy circuit by plain scans: at each step, of the edges into nodes already in the
    circuit (logits first), the one of largest |score|; ties to the node that joined first, then
    to the earlier edge in forward order. A new sender joins the circuit with its edge."""
    edges = graph_names(cfg)[2]

    def node(receiver: str) -> str:
        return receiver.split("<")[0]

    joined, chosen = ["logits"], []
    for _ in range(n):
        candidates = [e for e in edges if node(split_edge(e)[1]) in joined and e not in chosen]
        best = min(candidates, key=lambda e: (-abs(scores[e]), joined.index(node(split_edge(e)[1])), edges.index(e)))
        chosen.append(best)
        if split_edge(best)[0] not in joined:
            joined.append(split_edge(best)[0])
    return set(chosen)


def merged_stream_greedy(cfg, scores: dict[str, float], n: int) -> set[str]:
    """The greedy rule drawn as EAP-IG's ``apply_greedy`` draws it: one lazy stream of candidates,
    the logits' edges sorted by |score| (stably), into which each new node's edges, sorted alike, are
    merged with ``heapq.merge`` (a new node's edges here in forward order; EAP-IG's come from a set)."""
    edges = graph_names(cfg)[2]

    def by_score(node: str) -> list[str]:
        into = [e for e in edges if split_edge(e)[1].split("<")[0] == node]
        return sorted(into, key=lambda e: abs(scores[e]), reverse=True)

    stream = iter(by_score("logits"))
    joined, chosen = {"logits"}, set()
    for _ in range(n):
        edge = next(stream)
        chosen.add(edge)
        sender = split_edge(edge)[0]
        if sender not in joined:
            joined.add(sender)
            stream = heapq.merge(stream, by_score(sender), key=lambda e: abs(scores[e]), reverse=True)
    return chosen


# ----- helpers --------------------------------------------------------------------------------------


def run(model, task, **kwargs):
    kwargs.setdefault("top_n", 5)
    return discover(model, task, method=METHOD, progress=False, **kwargs)


def assert_scores_match(graph, engine, naive):
    assert set(graph.edge_names()) == set(naive)
    assert max(naive.values()) > 0.1  # the comparison is not vacuous
    for name, value in naive.items():
        assert float(engine[graph.parse_edge(name)]) == pytest.approx(value, rel=1e-9, abs=1e-12), name


def ragged_for(model, seed=0):
    return ragged_task(LENGTHS, d_vocab=model.cfg.d_vocab, seed=seed)


# ----- scores ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_scores_equal_the_naive_implementation_on_prompts_of_one_length(attribution_models, name):
    model, task = attribution_models(name)
    circuit = run(model, task)
    assert_scores_match(build_graph(model.cfg), circuit.scores.edges, naive_ifr_scores(model, task.clean))


@pytest.mark.parametrize("name", MODELS)
def test_scores_on_right_padded_prompts_average_each_prompts_real_tokens_only(attribution_models, name):
    model, _ = attribution_models(name)
    task = ragged_for(model, seed=4)
    circuit = run(model, task)
    assert_scores_match(build_graph(model.cfg), circuit.scores.edges, naive_ifr_scores(model, task.clean, LENGTHS))


def test_the_padding_tokens_do_not_change_the_scores():
    model, task = small_model(False, seed=5), ragged_task(LENGTHS, seed=5)
    other = ragged_task(LENGTHS, seed=5)
    padding = torch.arange(other.clean.shape[1])[None] >= other.lengths[:, None]
    other.clean[padding] = 7
    assert torch.equal(run(model, task).scores.edges, run(model, other).scores.edges)


def test_residual_sender_outputs_count_the_positional_embedding_in_the_input(attribution_models):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, sender_outputs="residual")
    assert circuit.method["sender_outputs"] == "residual"
    naive = naive_ifr_scores(model, task.clean, outputs="residual")
    assert_scores_match(build_graph(model.cfg), circuit.scores.edges, naive)
    assert not torch.allclose(circuit.scores.edges, run(model, task).scores.edges)


def test_both_sender_outputs_agree_on_a_rotary_model_without_post_norms(attribution_models):
    model, task = attribution_models("llama")
    residual = run(model, task, sender_outputs="residual").scores.edges
    torch.testing.assert_close(residual, run(model, task).scores.edges, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("outputs", ["eap-ig", "residual"])
def test_on_a_post_norm_model_eap_ig_outputs_are_head_results_before_the_norm(outputs):
    model = small_model(False, seed=6, normalization_type="RMS", use_normalization_before_and_after=True)
    task = random_task(seed=6)
    circuit = run(model, task, sender_outputs=outputs)
    assert_scores_match(build_graph(model.cfg), circuit.scores.edges, naive_ifr_scores(model, task.clean, outputs=outputs))


def test_split_input_scores_the_token_and_positional_embeddings_as_two_senders():
    model, task = small_model(False, seed=7), random_task(seed=7)
    circuit = run(model, task, split_input=True)
    naive = naive_ifr_scores(model, task.clean, split_input=True)
    assert_scores_match(build_graph(model.cfg, split_input=True), circuit.scores.edges, naive)


def test_a_token_where_no_sender_is_closer_to_the_input_than_zero_adds_nothing():
    model, task = small_model(False, seed=8), random_task(seed=8)
    with torch.no_grad():
        model.embedding.W_E.zero_()  # layer 0 reads the positional embedding; its only sender, ...
    graph = build_graph(model.cfg)
    scores = run(model, task).scores.edges  # ... the token embedding (0), has proximity 0 at every token
    layer0 = [graph.receiver_index[f"a0.h{h}<{x}>"] for h in range(model.cfg.n_heads) for x in "qkv"]
    assert bool((scores[graph.sender_index["input"], layer0] == 0).all())  # EAP-IG: 0 / 0 = NaN
    assert_scores_match(graph, scores, naive_ifr_scores(model, task.clean))


def test_each_receivers_scores_sum_to_one_over_its_senders(attribution_models):
    model, task = attribution_models("gpt2-style")
    scores = run(model, task).scores.edges
    torch.testing.assert_close(scores.sum(0), torch.ones(scores.shape[1], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert bool((scores >= 0).all())


def test_the_q_k_v_receivers_of_one_layer_get_the_same_scores(attribution_models):
    model, task = attribution_models("llama")
    graph = build_graph(model.cfg)
    scores = run(model, task).scores.edges
    layer1 = [r for r, name in enumerate(graph.receivers) if name.startswith("a1.")]
    assert len(layer1) == 3 * model.cfg.n_heads
    assert all(torch.equal(scores[:, r], scores[:, layer1[0]]) for r in layer1)


def test_the_scores_do_not_depend_on_the_corrupted_prompts_the_metric_or_the_ablation(attribution_models):
    model, task = attribution_models("gpt2-style")
    corrupted = random_task(seed=11).corrupted
    other = TaskData("other", task.clean, corrupted, task.positions, task.wrong_answers, task.answers)
    plain = run(model, task, metric="kl").scores.edges
    assert torch.equal(plain, run(model, other, metric="logit_diff", ablation="zero").scores.edges)


# ----- greedy circuits ------------------------------------------------------------------------------


def integer_scores(graph, seed):
    """Scores with many ties (a few integer values), so that the tie rule matters."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, graph.edge_exists.shape, generator=g).double() * graph.edge_exists


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("attn_only", [False, True])
def test_greedy_edges_equal_the_naive_greedy_scan_ties_included(seed, attn_only):
    cfg = small_model(attn_only, seed=seed).cfg
    graph = build_graph(cfg)
    scores = integer_scores(graph, seed)
    by_name = {name: float(scores[graph.parse_edge(name)]) for name in graph.edge_names()}
    for n in (0, 1, 7, 30, graph.n_edges):
        mask = greedy_edges(graph, scores, n)
        chosen = {name for name in graph.edge_names() if mask[graph.parse_edge(name)]}
        assert chosen == naive_greedy(cfg, by_name, n), n


@pytest.mark.parametrize("seed", range(4))
def test_greedy_edges_equal_the_merged_candidate_streams_eap_ig_draws_from_ties_included(seed):
    cfg = small_model(False, seed=seed).cfg
    graph = build_graph(cfg)
    scores = integer_scores(graph, seed + 10)
    by_name = {name: float(scores[graph.parse_edge(name)]) for name in graph.edge_names()}
    for n in (1, 7, 30, graph.n_edges):
        mask = greedy_edges(graph, scores, n)
        chosen = {name for name in graph.edge_names() if mask[graph.parse_edge(name)]}
        assert chosen == merged_stream_greedy(cfg, by_name, n), n


def test_greedy_circuits_grow_from_the_logits_where_top_n_does_not():
    graph = build_graph(small_model(False).cfg)
    scores = torch.where(graph.edge_exists, 0.1, 0.0).double()
    scores[graph.parse_edge("a0.h1->a1.h0<q>")] = 5.0  # the best edge, into a head nothing reads yet
    top = select_edges(graph, scores, top_n=1)
    greedy = greedy_edges(graph, scores, 1)
    assert top[graph.parse_edge("a0.h1->a1.h0<q>")]
    assert not greedy[graph.parse_edge("a0.h1->a1.h0<q>")] and int(greedy.sum()) == 1


def test_discover_keeps_the_greedy_edges_and_prunes_them_to_input_to_logits_paths(attribution_models):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, top_n=12)
    graph = build_graph(model.cfg)
    assert torch.equal(circuit.kept.edges, greedy_edges(graph, circuit.scores.edges, 12))
    assert bool(circuit.kept.head_inputs.all())
    assert bool((circuit.in_graph.edges <= circuit.kept.edges).all()) and 0 < int(circuit.in_graph.edges.sum()) <= 12
    assert circuit.method["selection"] == "greedy"


def test_selection_top_keeps_the_highest_scores_or_those_above_a_threshold(attribution_models):
    model, task = attribution_models("gpt2-style")
    graph = build_graph(model.cfg)
    top = run(model, task, top_n=12, selection="top")
    assert torch.equal(top.kept.edges, select_edges(graph, top.scores.edges, top_n=12))
    cut = run(model, task, top_n=None, score_threshold=0.2, selection="top")
    assert torch.equal(cut.kept.edges, graph.edge_exists & (cut.scores.edges >= 0.2))
    assert cut.threshold == 0.2


# ----- parameters, registry, command line, files ------------------------------------------------------


@pytest.mark.parametrize(
    "params, complaint",
    [
        ({"top_n": 3, "selection": "best"}, "unknown selection 'best'; choose one of greedy, top"),
        ({"top_n": 3, "sender_outputs": "hooks"}, "unknown sender_outputs 'hooks'; choose one of eap-ig, residual"),
        ({"score_threshold": 0.1}, "selection greedy grows a circuit of top_n edges"),
    ],
)
def test_bad_parameters_are_refused_before_the_model_loads(params, complaint):
    with pytest.raises(AcdcError, match=complaint):
        discover("no-such-model", random_task(), method=METHOD, progress=False, **params)


def test_the_method_is_a_scores_method_with_greedy_eap_ig_defaults_in_the_api_schema_and_config_file():
    assert METHODS[METHOD].circuits is CircuitSelection.SCORES
    loaded = OmegaConf.load(CONF_DIR / "method" / f"{METHOD}.yaml")
    for source in (InformationFlowRoutesParams(top_n=3), InformationFlowRoutesConfig(), loaded):
        assert (source.selection, source.sender_outputs) == ("greedy", "eap-ig")
    assert (InformationFlowRoutesConfig().top_n, loaded.top_n) == (20, 20)


def test_the_command_line_writes_the_greedy_circuit_and_its_scores(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""}
    command = [sys.executable, "-m", "acdc_engine.commands.discover", f"method={METHOD}", "method.top_n=6", "progress=false"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (path,) = (tmp_path / "outputs").rglob("circuit.json")
    data = json.loads(path.read_text())
    assert (data["method"]["name"], data["method"]["selection"], data["method"]["top_n"]) == (METHOD, "greedy", 6)
    assert sum(e["kept"] for e in data["edges"].values()) == 6
    assert all(0 <= e["score"] <= 1 for e in data["edges"].values())


def test_the_eap_ig_export_carries_every_score_and_reads_back(attribution_models):
    model, task = attribution_models("gpt2-style")
    circuit = run(model, task, top_n=10)
    exported = circuit_to_eap_ig(circuit)
    graph = circuit.graph
    for name in graph.edge_names():
        assert exported["edges"][name]["score"] == float(circuit.scores.edges[graph.parse_edge(name)])
    assert sum(e["in_graph"] for e in exported["edges"].values()) == int(circuit.in_graph.edges.sum())
    back = circuit_from_eap_ig(json.loads(json.dumps(exported)))
    exists = graph.edge_exists
    assert torch.equal(back.scores.edges[exists], circuit.scores.edges[exists])
    assert torch.equal(back.in_graph.edges, circuit.in_graph.edges)


def test_the_greedy_order_begins_with_every_greedy_circuit():
    from acdc_engine.methods.eap import greedy_edges, greedy_order

    model, task = small_model(False, seed=4), random_task(seed=4)
    scores = discover(model, task, method="information-flow-routes", top_n=0, progress=False).scores.edges
    graph = build_graph(model.cfg)
    order = greedy_order(graph, scores)
    assert len(order) == graph.n_edges and len({tuple(e) for e in order.tolist()}) == graph.n_edges
    for n in (1, 5, 17, graph.n_edges):
        first = torch.zeros_like(graph.edge_exists)
        first[order[:n, 0], order[:n, 1]] = True
        assert torch.equal(first, greedy_edges(graph, scores, n))


def test_mib_faithfulness_ranks_a_greedy_run_in_greedy_order():
    from acdc_engine.evaluation.faithfulness import Ranking, mib_edge_count, mib_ranked_edges
    from acdc_engine.methods.eap import greedy_order

    model, task = small_model(True, seed=4), random_task(seed=4)
    scores = discover(model, task, method="information-flow-routes", top_n=0, progress=False).scores.edges
    graph = build_graph(model.cfg)
    ranked = mib_ranked_edges(graph, scores, Ranking.greedy)
    assert torch.equal(ranked[: graph.n_edges], greedy_order(graph, scores))
    assert len(ranked) == mib_edge_count(graph.shape) > graph.n_edges  # EAP-IG's MLP edges of an attention-only model
    assert (ranked[graph.n_edges :] == -1).all()


def test_mib_budgeted_circuits_of_a_greedy_run_are_its_greedy_circuits():
    from acdc_engine.core.mask import CircuitMask
    from acdc_engine.core.pruning import on_input_to_logits_paths
    from acdc_engine.evaluation.mib import top_k_circuits

    model, task = small_model(False, seed=4), random_task(seed=4)
    scored = discover(model, task, method="information-flow-routes", top_n=0, metric="logit_diff", progress=False)
    graph = scored.graph
    for chosen in top_k_circuits(model, scored, task, fractions=(0.05, 0.2), progress=False):
        expected = on_input_to_logits_paths(graph, CircuitMask(greedy_edges(graph, scored.scores.edges, chosen.top_n), graph.full_head_input_mask()))
        assert torch.equal(chosen.circuit.in_graph.edges, expected.edges)
