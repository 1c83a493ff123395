"""The trained testbeds' ground-truth circuits, read off their attention patterns
(``acdc_engine.evaluation.testbed_truth``) and shipped in ``acdc_engine/reference_circuits``."""

import pytest
import torch

from acdc_engine import AcdcError
from acdc_engine.evaluation.faithfulness import normalised_faithfulness
from acdc_engine.evaluation.testbed_truth import MECHANISMS, role_scores, truth_edges
from acdc_engine.evaluation.testbed_truth import testbed_truth as derive_truth  # not collected as a test
from acdc_engine.models import load_model
from acdc_engine.reference_circuits import reference_circuit
from acdc_engine.tasks import make_task

TESTBEDS = tuple(MECHANISMS)


@pytest.fixture(scope="module")
def derived():
    """name -> (model, task, truth derived now)."""
    out = {}
    for name, mechanism in MECHANISMS.items():
        model = load_model(name)
        task = make_task(mechanism.task, model)
        out[name] = model, task, derive_truth(model, name, task)
    return out


@pytest.mark.parametrize("name", TESTBEDS)
def test_shipped_truth_is_what_the_rule_derives_from_the_model_now(derived, name):
    truth, shipped = derived[name][2], reference_circuit(name)
    assert shipped.edges() == truth.edges()
    assert torch.equal(shipped.in_graph.head_inputs, truth.in_graph.head_inputs)
    assert shipped.method == truth.method and shipped.method["name"] == "attention-roles"
    numbers = ("full", "circuit", "empty")
    assert {k: v for k, v in shipped.metric.items() if k not in numbers} == {k: v for k, v in truth.metric.items() if k not in numbers}
    assert [shipped.metric[k] for k in numbers] == pytest.approx([truth.metric[k] for k in numbers], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", TESTBEDS)
def test_head_inputs_are_exactly_the_receivers_of_the_truths_edges(derived, name):
    truth = derived[name][2]
    receivers = {edge.split("->")[1] for edge in truth.edges()}
    graph = truth.graph
    assert {name for name in graph.head_input_names() if truth.in_graph.head_inputs[graph.parse_head_input(name)]} == {
        r for r in receivers if r.endswith(">")
    }


@pytest.mark.parametrize("name", TESTBEDS)
def test_a_role_holds_exactly_the_heads_scoring_above_one_half(derived, name):
    model, task, truth = derived[name]
    for role, scores in role_scores(model, name, task).items():
        layer = MECHANISMS[name].roles[role].layer
        assert truth.method["roles"][role] == [f"a{layer}.h{h}" for h, s in enumerate(scores.tolist()) if s > 0.5]
        assert truth.method["roles"][role]


def test_roles_of_the_shipped_weights_are_the_ones_read_off_their_patterns_by_hand(derived):
    # A regression guard: retraining a testbed must be followed by regenerating its truth file.
    assert {name: derived[name][2].method["roles"] for name in TESTBEDS} == {
        "toy-induction-2l": {"prev_token": ["a0.h3"], "current_token": ["a0.h1", "a0.h2"], "induction": ["a1.h0", "a1.h2", "a1.h3"]},
        "toy-induction-mlp-2l": {"duplicate_token": ["a0.h0"], "look_back": ["a0.h1", "a0.h2"], "lookup": ["a1.h0", "a1.h2", "a1.h3"]},
        "toy-predecessor-2l": {"prev_token": ["a0.h2"], "two_back": ["a0.h0"], "lookup": ["a1.h0", "a1.h1", "a1.h2", "a1.h3"]},
    }


def test_previous_token_head_puts_most_of_its_attention_one_back(derived):
    model, task, truth = derived["toy-induction-2l"]
    (prev,) = truth.method["roles"]["prev_token"]
    _, cache = model.run_with_cache(task.clean)
    pattern = cache["blocks.0.attn.hook_pattern"][:, int(prev.split(".h")[1])]  # [batch, query, key]
    assert (pattern.argmax(-1)[:, 1:] == torch.arange(task.clean.shape[1] - 1)).float().mean() > 0.9


def test_attention_only_truth_follows_the_templates_over_the_roles():
    roles = {"prev_token": ["a0.h3"], "current_token": ["a0.h1", "a0.h2"], "induction": ["a1.h0", "a1.h2"]}
    edges = truth_edges("toy-induction-2l", roles, has_mlp=False)
    # input->P,S <qkv>: 9; P->I<k>: 2; input->I<q,v>: 4; S->I<q,v>: 8; I->logits: 2
    assert len(edges) == len(set(edges)) == 25
    assert {"a0.h3->a1.h2<k>", "a0.h1->a1.h0<v>", "input->a1.h0<q>", "a1.h2->logits"} <= set(edges)
    assert not [e for e in edges if "m0" in e or "m1" in e]  # attention only: no MLP relay
    assert "input->a1.h0<k>" not in edges  # the induction key reads the previous-token head only


def test_mlp_relay_passes_the_mechanism_through_both_mlps():
    roles = {"prev_token": ["a0.h2"], "two_back": ["a0.h0"], "lookup": ["a1.h1"]}
    mlp_edges = {e for e in truth_edges("toy-predecessor-2l", roles, has_mlp=True) if "m0" in e or "m1" in e}
    assert mlp_edges == {
        "input->m0", "a0.h2->m0", "a0.h0->m0",
        "m0->a1.h1<q>", "m0->a1.h1<k>", "m0->a1.h1<v>",
        "a1.h1->m1", "m0->m1", "m1->logits",
    }


# toy-induction-mlp-2l is left out: its truth is the identified part of its mechanism only
# (normalised faithfulness about 0.3, see the testbed_truth module), and the AUC table says so.
@pytest.mark.parametrize("name", ["toy-induction-2l", "toy-predecessor-2l"])
def test_truth_keeps_most_of_the_models_behaviour(derived, name):
    metric = derived[name][2].metric
    assert metric["ablation"] == "resample" and metric["name"] == "kl"
    assert normalised_faithfulness(metric["circuit"], metric["full"], metric["empty"]) > 0.5


def test_unknown_model_name_is_refused_listing_the_known_testbeds(derived):
    model, task, _ = derived["toy-induction-2l"]
    with pytest.raises(AcdcError, match="no attention-role ground truth for model 'gpt2'; known: toy-induction-2l, "):
        derive_truth(model, "gpt2", task)


def test_model_without_the_mechanism_has_no_truth_naming_the_model_and_role():
    config = dict(n_layers=2, n_heads=4, d_model=64, d_head=16, d_vocab=64, n_ctx=32, attn_only=True, seed=0)
    untrained = load_model("random", config=config)
    with pytest.raises(AcdcError, match="model 'toy-induction-2l': no head plays role 'prev_token'"):
        derive_truth(untrained, "toy-induction-2l", make_task("induction", untrained))


def test_task_other_than_the_mechanisms_is_refused(derived):
    model, _, _ = derived["toy-predecessor-2l"]
    with pytest.raises(AcdcError, match="read on task 'predecessor', got task 'induction'"):
        derive_truth(model, "toy-predecessor-2l", make_task("induction", model))
