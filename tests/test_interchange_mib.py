"""MIB circuit-track submissions: one folder per task and model, 9 circuits at MIB's edge fractions
(ACDC by a threshold search, EAP / EAP-IG by top-k) or one importance file, read as EAP-IG reads them."""

import json

import pytest
import torch

from acdc_engine import AcdcError, discover, load_circuit
from acdc_engine.core.shape import eap_ig_edge_count
from acdc_engine.evaluation.faithfulness import MIB_FRACTIONS
from acdc_engine.evaluation.mib import acdc_fraction_search, top_k_circuits
from acdc_engine.formats.mib import SUBMISSION_FRACTIONS, edge_budget, mib_folder, write_submission
from acdc_engine.commands.mib import main as acdc_mib
from acdc_engine.methods.eap import select_edges
from factories import random_task, small_model
from test_interchange import eap_ig_layout, read_like_eap_ig

TOY = ["--model", "toy-induction-2l", "--model-key", "toy", "--task", "induction", "--task-key", "induction"]
TOY_EDGES = 110  # EAP-IG's graph of 2 attention-only layers x 4 heads, MLP edges included (this engine's: 81)


@pytest.fixture(scope="module")
def toy_submission(tmp_path_factory):
    out = tmp_path_factory.mktemp("mib")
    assert acdc_mib([*TOY, "--method", "acdc", "--out", str(out), "--coarse", "3", "--refine", "1"]) == 0
    return out


def test_the_submission_has_the_task_model_folder_and_its_description_beside_it(toy_submission):
    assert sorted(p.name for p in toy_submission.iterdir()) == ["induction_toy", "induction_toy.md"]


def test_the_folder_holds_exactly_nine_eap_ig_circuits(toy_submission):
    folder = toy_submission / "induction_toy"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"circuit_{k:g}.json" for k in SUBMISSION_FRACTIONS)
    for k in SUBMISSION_FRACTIONS:
        read = read_like_eap_ig(json.loads((folder / f"circuit_{k:g}.json").read_text()))
        assert len(read) == len(eap_ig_layout(2, 4)[2]) == TOY_EDGES


def test_each_circuit_has_at_most_its_fraction_of_mibs_edge_count(toy_submission):
    folder = toy_submission / "induction_toy"
    for k in SUBMISSION_FRACTIONS:
        circuit = load_circuit(folder / f"circuit_{k:g}.json")
        assert circuit.n_edges <= edge_budget(k, TOY_EDGES)
        assert circuit.method["name"] == "acdc" and circuit.threshold is not None


def test_each_acdc_circuit_is_exactly_a_plain_run_at_its_threshold(toy_submission, toy_induction_model):
    circuit = load_circuit(toy_submission / "induction_toy" / "circuit_0.5.json")
    plain = discover(toy_induction_model, "induction", threshold=circuit.threshold, batch_size=circuit.run["batch_size"], progress=False)
    assert torch.equal(plain.in_graph.edges, circuit.in_graph.edges) and torch.equal(plain.kept.edges, circuit.kept.edges)
    assert plain.metric == circuit.metric


def test_the_description_says_how_each_fraction_was_reached(toy_submission):
    text = (toy_submission / "induction_toy.md").read_text()
    assert "| 0.5 | 55 |" in text and "threshold" in text and "MetricCache" in text
    assert "MIB counts 110 edges" in text


@pytest.fixture(scope="module")
def small_setting():
    return small_model(attn_only=False, seed=3), random_task()


def test_the_threshold_search_shares_evaluations_between_its_runs(small_setting):
    model, task = small_setting
    search = acdc_fraction_search(model, task, fractions=[0.05, 0.2, 0.5], coarse=3, refine=2, progress=False)
    assert len(search.tried) > 4
    assert search.cache["circuits_computed"] < search.cache["circuits_requested"]
    for chosen in search.chosen:  # the largest circuit tried that fits
        fits = [n for n in search.tried.values() if n <= chosen.budget]
        assert chosen.circuit.n_edges == max(fits)


def test_top_k_circuits_are_the_pruned_top_edges_by_score(small_setting):
    model, task = small_setting
    scored = discover(model, task, method="eap", metric="logit_diff", top_n=0, progress=False)
    for chosen in top_k_circuits(model, scored, task, fractions=[0.1, 0.5], progress=False):
        top = select_edges(scored.graph, scored.scores.edges, top_n=edge_budget(chosen.fraction, eap_ig_edge_count(scored.graph.shape)))
        assert torch.equal(chosen.circuit.kept.edges, top)
        assert bool((chosen.circuit.in_graph.edges <= top).all()) and chosen.circuit.n_edges <= chosen.budget
        assert chosen.circuit.metric["circuit"] is not None


def test_importances_are_one_file_scoring_every_edge(tmp_path, small_setting):
    model, task = small_setting
    scored = discover(model, task, method="eap", metric="logit_diff", top_n=0, progress=False)
    submission = write_submission(tmp_path, "ioi", "gpt2", importances=scored, fmt="pt")
    assert [p.name for p in submission.files] == ["importances.pt"]
    data = torch.load(submission.files[0], weights_only=True)
    assert int((data["edges_scores"] != 0).sum()) == scored.n_edges_total


def test_acdc_cannot_write_importances(tmp_path, capsys):
    assert acdc_mib([*TOY, "--method", "acdc", "--layout", "importances", "--out", str(tmp_path)]) == 2
    assert "untested" in capsys.readouterr().err


def test_a_rewrite_leaves_no_circuit_file_of_an_earlier_run(tmp_path, small_circuit):
    folder = tmp_path / mib_folder("ioi", "gpt2")
    folder.mkdir()
    (folder / "circuit_0.3.json").write_text("{}")
    write_submission(tmp_path, "ioi", "gpt2", importances=small_circuit)
    assert sorted(p.name for p in folder.iterdir()) == ["importances.json"]


def test_the_submission_fractions_are_mibs_less_the_full_model():
    assert SUBMISSION_FRACTIONS == tuple(k for k in MIB_FRACTIONS if k < 1)


def test_folder_names_spell_task_keys_with_hyphens_as_mibs_scripts_do():
    assert mib_folder("arithmetic_addition", "llama3") == "arithmetic-addition_llama3"


def test_write_submission_takes_circuits_or_importances_not_both(tmp_path, small_circuit):
    with pytest.raises(AcdcError, match="either"):
        write_submission(tmp_path, "ioi", "gpt2")
