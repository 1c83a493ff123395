"""``acdc-mib`` end to end: every registered method writes a task/model folder MIB reads, named with
MIB's keys, holding exactly its files (9 circuits within MIB's budgets, or one importance file),
described beside it; empty circuits and folders MIB skips are each one warning line."""

import pytest
import torch

from acdc_engine import load_circuit
from acdc_engine.commands.mib import _load_name
from acdc_engine.commands.mib import main as acdc_mib
from acdc_engine.core.shape import eap_ig_edge_count
from acdc_engine.evaluation.mib import acdc_fraction_search, top_k_circuits
from acdc_engine.formats.mib import MIB_MODELS, SUBMISSION_FRACTIONS, model_key, task_key
from acdc_engine.methods import METHODS, CircuitSelection
from acdc_engine.methods.eap import select_edges
from factories import random_task, small_model
from test_progress_bars import as_terminal

TOY = ["--model", "toy-induction-2l", "--model-key", "toy", "--task", "induction", "--task-key", "induction",
       "--task-param", "n_prompts=4", "--no-progress"]
TOY_EDGES = 110  # MIB's count for 2 attention-only layers x 4 heads (EAP-IG's graph has MLP edges; this engine's: 81)
CIRCUIT_FILES = sorted(f"circuit_{k:g}.json" for k in SUBMISSION_FRACTIONS)
METHOD_ARGS = {  # each method as fast as it runs on the toy model
    "acdc": ["--coarse", "2", "--refine", "0"],
    "acdc-eap": ["--coarse", "2", "--refine", "0", "--steps", "2"],
    "acdc-nodes": ["--coarse", "2", "--refine", "0"],
    "eap": [],
    "eap-ig": ["--steps", "2"],
    "eap-ig-activations": ["--steps", "2"],
    "clean-corrupted": [],
    "exact": [],
    "eap-nodes": [],
    "eap-ig-nodes": ["--steps", "2"],
    "eap-ig-activations-nodes": ["--steps", "2"],
    "exact-nodes": [],
    "eap-neurons": [],
    "eap-ig-neurons": ["--steps", "2"],
    "eap-ig-activations-neurons": ["--steps", "2"],
    "edge-pruning": ["--steps", "5"],
    "information-flow-routes": [],
    "ugs": ["--steps", "5", "--method-param", "samples=2"],
    "subnetwork-probing": ["--steps", "5"],
}
SCORE_METHODS = [name for name, spec in METHODS.items() if spec.circuits is CircuitSelection.SCORES]


def submit(out, *args):
    return acdc_mib([*TOY, "--out", str(out), *args])


def test_every_registered_method_is_run_below():
    assert set(METHOD_ARGS) == set(METHODS)


@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_every_method_writes_nine_circuits_within_mibs_budgets(tmp_path, method):
    assert submit(tmp_path, "--method", method, *METHOD_ARGS[method]) == 0
    folder = tmp_path / "induction_toy"
    assert sorted(p.name for p in folder.iterdir()) == CIRCUIT_FILES
    for k in SUBMISSION_FRACTIONS:
        circuit = load_circuit(folder / f"circuit_{k:g}.json")
        assert circuit.method["name"] == method and circuit.n_edges <= int(k * TOY_EDGES)


@pytest.mark.parametrize("method", SCORE_METHODS)
def test_every_score_method_writes_one_importance_file_scoring_every_edge(tmp_path, method):
    assert submit(tmp_path, "--method", method, "--layout", "importances", "--format", "pt", *METHOD_ARGS[method]) == 0
    folder = tmp_path / "induction_toy"
    assert [p.name for p in folder.iterdir()] == ["importances.pt"]
    scored = load_circuit(folder / "importances.pt")
    assert bool(torch.isfinite(scored.scores.edges[scored.graph.edge_exists]).all())


def test_edge_pruning_circuits_are_the_top_edges_of_one_training_runs_mask_scores(tmp_path):
    assert submit(tmp_path, "--method", "edge-pruning", *METHOD_ARGS["edge-pruning"]) == 0
    circuits = [load_circuit(tmp_path / "induction_toy" / name) for name in CIRCUIT_FILES]
    scores = circuits[0].scores.edges
    for circuit in circuits:
        torch.testing.assert_close(circuit.scores.edges, scores, rtol=0, atol=0, equal_nan=True)  # one run's sigmoid(log_alpha)
        top = select_edges(circuit.graph, scores, top_n=min(circuit.method["top_n"], circuit.n_edges_total))
        assert torch.equal(circuit.kept.edges, top)


def test_the_description_lies_beside_the_folder(tmp_path):
    assert submit(tmp_path, "--method", "eap") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["induction_toy", "induction_toy.md"]
    assert "| 0.5 | 55 |" in (tmp_path / "induction_toy.md").read_text()


def test_each_empty_budgeted_circuit_is_one_warning_line_and_listed_in_the_description(tmp_path, capsys):
    assert submit(tmp_path, "--method", "eap") == 0
    empty = [name for name in CIRCUIT_FILES if load_circuit(tmp_path / "induction_toy" / name).n_edges == 0]
    warnings = [line for line in capsys.readouterr().err.splitlines() if " is empty " in line]
    assert len(warnings) == len(empty) >= 3  # budgets of 0 edges at 0.1%, 0.2%, 0.5% of 110
    assert "acdc-mib: warning: circuit_0.001 is empty (fraction 0.001: at most 0 of 110 edges)" in warnings
    description = (tmp_path / "induction_toy.md").read_text()
    assert f"Empty circuits ({len(empty)} of 9)" in description and all(w.split("warning: ")[1] in description for w in warnings)


def test_a_folder_mib_does_not_score_is_written_with_one_warning_line(tmp_path, capsys):
    assert submit(tmp_path, "--method", "eap") == 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "skips" in line]
    assert line.startswith("acdc-mib: warning: MIB's evaluator skips a folder named induction_toy")


def test_a_folder_mib_scores_gets_no_such_warning(tmp_path, capsys):
    args = ["--model", "toy-induction-2l", "--model-key", "gpt2", "--task", "induction", "--task-key", "ioi", "--no-progress"]
    assert acdc_mib([*args, "--method", "eap", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "ioi_gpt2").is_dir() and "skips" not in capsys.readouterr().err


def test_a_task_key_in_mibs_underscore_spelling_names_the_folder_with_hyphens(tmp_path):
    assert submit(tmp_path, "--method", "eap", "--task-key", "arc_easy") == 0
    assert (tmp_path / "arc-easy_toy").is_dir()


def refused(capsys, code):
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_a_model_without_a_mib_key_is_refused_naming_model_key(tmp_path, capsys):
    args = ["--model", "toy-induction-2l", "--task", "induction", "--task-key", "induction", "--method", "eap"]
    err = refused(capsys, acdc_mib([*args, "--out", str(tmp_path)]))
    assert "model 'toy-induction-2l' has no MIB model key" in err and "--model-key" in err
    assert list(tmp_path.iterdir()) == []


def test_a_task_without_a_mib_name_is_refused_naming_task_key(tmp_path, capsys):
    args = ["--model", "toy-induction-2l", "--model-key", "toy", "--task", "induction", "--method", "eap"]
    err = refused(capsys, acdc_mib([*args, "--out", str(tmp_path)]))
    assert "task 'induction' has no MIB task name" in err and "--task-key" in err


def test_a_model_key_with_an_underscore_is_refused(tmp_path, capsys):
    err = refused(capsys, submit(tmp_path, "--method", "eap", "--model-key", "my_model"))
    assert "model key 'my_model': a key holds only letters, digits, '.' and '-'" in err


def test_a_folder_holding_other_files_is_refused_and_kept(tmp_path, capsys):
    (tmp_path / "induction_toy").mkdir()
    (tmp_path / "induction_toy" / "README.md").write_text("mine")
    err = refused(capsys, submit(tmp_path, "--method", "eap"))
    assert "holds README.md, which MIB does not read" in err
    assert (tmp_path / "induction_toy" / "README.md").read_text() == "mine"


def test_a_method_param_reaches_the_method(tmp_path):
    assert submit(tmp_path, "--method", "edge-pruning", "--steps", "2", "--method-param", "target_sparsity=0.5") == 0
    assert load_circuit(tmp_path / "induction_toy" / "circuit_0.5.json").method["target_sparsity"] == 0.5


def test_a_method_param_acdc_mib_sets_itself_is_refused(tmp_path, capsys):
    err = refused(capsys, submit(tmp_path, "--method", "acdc", "--method-param", "threshold=0.1"))
    assert "--method-param threshold: acdc-mib's threshold search sets it" in err


def test_steps_for_a_method_without_steps_is_refused(tmp_path, capsys):
    err = refused(capsys, submit(tmp_path, "--method", "eap", "--steps", "3"))
    assert "--steps: method 'eap' takes no steps" in err


@pytest.mark.parametrize("name, key", [
    ("gpt2", "gpt2"), ("gpt2-small", "gpt2"), ("Qwen2.5-0.5B", "qwen2.5"), ("Qwen/Qwen2.5-0.5B", "qwen2.5"),
    ("gemma-2-2b", "gemma2"), ("google/gemma-2-2b", "gemma2"), ("Llama-3.1-8B", "llama3"),
    ("meta-llama/Llama-3.1-8B", "llama3"), ("interpbench", "interpbench"),
    ("toy-induction-2l", None), ("meta-llama/Llama-3.2-1B", None), ("/models/Qwen2.5-0.5B", None),
])
def test_model_names_map_to_mibs_model_keys(name, key):
    assert model_key(name) == key


@pytest.mark.parametrize("name, key", [
    ("ioi", "ioi"), ("mcqa", "mcqa"), ("arithmetic_addition", "arithmetic-addition"),
    ("arithmetic-subtraction", "arithmetic-subtraction"), ("arc_easy", "arc-easy"), ("arc_challenge", "arc-challenge"),
    ("induction", None), ("greater-than", None),
])
def test_task_names_map_to_mibs_folder_task_names(name, key):
    assert task_key(name) == key


def test_every_mib_model_on_the_hub_is_a_model_choice_that_gives_its_key():
    for key, repository in MIB_MODELS.items():
        if repository is not None:
            (choice,) = [c for c in ("gpt2", "Qwen2.5-0.5B", "gemma-2-2b", "Llama-3.1-8B") if _load_name(c) == repository]
            assert model_key(choice) == key


def test_the_llama_3_1_8b_config_composes_with_the_model_schema_and_names_a_model_transformer_lens_knows():
    from hydra import compose, initialize_config_dir

    from acdc_engine.commands.config_schema import register_configs
    from acdc_engine.commands.discover import CONF_DIR
    from acdc_engine.models.hub import official_name

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=Llama-3.1-8B"])
    assert cfg.model.name == "meta-llama/Llama-3.1-8B" and official_name(cfg.model.name) == "meta-llama/Llama-3.1-8B"


def test_top_k_budgets_are_fractions_of_mibs_edge_count():
    model, task = small_model(attn_only=True), random_task()
    from acdc_engine import discover

    scored = discover(model, task, method="eap", metric="logit_diff", top_n=0, progress=False)
    chosen = top_k_circuits(model, scored, task, progress=False)
    n_edges = eap_ig_edge_count(scored.graph.shape)
    assert n_edges > scored.n_edges_total  # attention-only: EAP-IG's MLP edges counted
    assert [c.budget for c in chosen] == [int(k * n_edges) for k in SUBMISSION_FRACTIONS]


def test_top_k_circuits_draw_a_bar_over_the_budgets_in_a_terminal(monkeypatch):
    from acdc_engine import discover

    model, task = small_model(attn_only=True), random_task()
    scored = discover(model, task, method="eap", metric="logit_diff", top_n=0, progress=False)
    terminal = as_terminal(monkeypatch)
    top_k_circuits(model, scored, task, fractions=[0.1, 0.5])
    assert "MIB budgets" in terminal.getvalue()


def test_the_threshold_search_draws_a_bar_over_its_runs_in_a_terminal(monkeypatch):
    terminal = as_terminal(monkeypatch)
    acdc_fraction_search(small_model(attn_only=True), random_task(), fractions=[0.5], coarse=1, refine=0)
    assert "MIB acdc thresholds" in terminal.getvalue()
