"""tracr-compiled models: conversion, cache, structural ground truth, tasks, and zero-ablation ACDC.

The compiled weights ship with the package (acdc_engine/tracr/compiled/); one program
(tracr-proportion, the quickest) is also compiled afresh here, to check the conversion against tracr.
"""

import dataclasses
import importlib.util
import itertools
import json
import os
import subprocess
import sys

import pytest
import torch

from acdc_engine.commands.discover import CONF_DIR
from acdc_engine import discover
from acdc_engine.core.errors import AcdcError
from acdc_engine.measure.metrics import make_metric
from acdc_engine.models import load_model
from acdc_engine.patching import EdgePatcher
from acdc_engine.reference_circuits import reference_circuit
from acdc_engine.tasks import TASKS, TaskData, make_task
from acdc_engine.tracr import PROGRAMS, compiled_program, structural_circuit
from acdc_engine.tracr import cache
from acdc_engine.tracr.compiler import check_against_tracr, convert, tracr_compile

CONF = CONF_DIR
THRESHOLD = 1e-6  # "a small threshold": every removal here changes l2 by 0 (to ~1e-13) or by more than 1e-2
PAPER = ("tracr-reverse", "tracr-proportion")
BOS_MACHINERY = {"one", "tokens:BOS"}  # the dimensions of tracr's always-attend-to-BOS term
CASES = [(name, {}) for name in PROGRAMS] + [("tracr-proportion", {"reference_ids": False})]  # (task, task params)


@pytest.fixture(scope="module")
def models():
    return {name: compiled_program(name).model() for name in PROGRAMS}


@pytest.fixture(scope="module")
def truths(models):
    return {name: structural_circuit(model, compiled_program(name).residual_labels) for name, model in models.items()}


@pytest.fixture(scope="module")
def acdc_runs(models):
    """Zero-ablation ACDC (l2, the tasks' default) per (program, task parameters), computed once."""
    found = {}

    def run(name, dtype=torch.float32, **task_params):
        key = (name, dtype, tuple(sorted(task_params.items())))
        if key not in found:
            model = models[name] if dtype == torch.float32 else compiled_program(name).model(dtype=dtype)
            found[key] = discover(
                model, name, threshold=THRESHOLD, ablation="zero", split_input=True, task_params=task_params, progress=False
            )
        return found[key]

    return run


@pytest.fixture(scope="module")
def fresh_proportion():
    """tracr-proportion compiled now: (tracr's assembled model, the converted program)."""
    program = PROGRAMS["tracr-proportion"]
    sop, assembled = tracr_compile(program)
    return assembled, convert(program, sop, assembled)


def head_inputs_in(circuit):
    g = circuit.graph
    return {name for name in g.head_input_names() if circuit.in_graph.head_inputs[g.parse_head_input(name)]}


# ----- registry and configs ------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROGRAMS)
def test_each_program_is_a_model_and_a_task_with_config_files(name):
    assert name in TASKS
    assert (CONF / "model" / f"{name}.yaml").is_file()
    assert (CONF / "task" / f"{name}.yaml").is_file()
    assert "split_input: true" in (CONF / "model" / f"{name}.yaml").read_text()


# ----- conversion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROGRAMS)
def test_converted_model_computes_the_rasp_program_on_every_input(name, models):
    program, compiled = PROGRAMS[name], compiled_program(name)
    rasp_program = program.build()
    for length in range(1, program.max_seq_len + 1):
        inputs = list(program.inputs(length))
        with torch.no_grad():
            decoded = compiled.decode(models[name](compiled.encode(inputs)))
        for values, ours in zip(inputs, decoded):
            expected = rasp_program(list(values))
            if compiled.categorical:
                assert ours == expected, values
            else:
                assert ours == pytest.approx([float(v) for v in expected], abs=1e-6), values


def test_converted_model_reproduces_tracr_on_every_input(fresh_proportion):
    assembled, compiled = fresh_proportion
    report = check_against_tracr(PROGRAMS["tracr-proportion"], assembled, compiled)
    assert report["inputs"] == sum(4**n for n in range(1, 6))
    assert report["decoded_outputs_equal"] and report["largest_output_difference"] <= 1e-6


def test_converted_model_reproduces_tracr_on_the_reference_prompts(fresh_proportion):
    """The reference's tracr-proportion prompts are no valid program inputs (BOS mid-sequence, no
    BOS first), so the check over every input does not cover them: compare tracr's network on them."""
    import jax
    import jax.numpy as jnp

    assembled, compiled = fresh_proportion
    model = compiled.model()
    task = make_task("tracr-proportion", model, reference_ids=True)
    tokens = torch.cat([task.clean, task.corrupted])
    tracr_forward = jax.jit(lambda ids: assembled.forward(assembled.params, ids).unembedded_output)
    expected = torch.tensor(tracr_forward(jnp.asarray(tokens.numpy())).tolist())
    with torch.no_grad():
        ours = model(tokens)[..., 0]
    torch.testing.assert_close(ours[:, task.positions], expected[:, task.positions], rtol=0, atol=1e-6)


def test_a_conversion_that_differs_from_tracr_is_rejected(fresh_proportion):
    assembled, compiled = fresh_proportion
    broken = dataclasses.replace(compiled, weights={**compiled.weights, "unembed.W_U": 2 * compiled.weights["unembed.W_U"]})
    with pytest.raises(AcdcError, match="differs from tracr's model on input"):
        check_against_tracr(PROGRAMS["tracr-proportion"], assembled, broken)


def test_shipped_weights_compute_what_a_fresh_compile_computes(fresh_proportion, models):
    _, fresh = fresh_proportion
    program = PROGRAMS["tracr-proportion"]
    tokens = fresh.encode(list(program.inputs(program.max_seq_len)))
    with torch.no_grad():
        torch.testing.assert_close(models["tracr-proportion"](tokens), fresh.model()(tokens), rtol=0, atol=1e-7)


# ----- cache ---------------------------------------------------------------------------------------


def test_compiled_program_round_trips_through_a_cache_file(tmp_path):
    compiled = compiled_program("tracr-reverse")
    path = cache.write_compiled(compiled, "some-key", tmp_path / "reverse.safetensors")
    again = cache.read_compiled(path, "some-key")
    assert (again.config, again.residual_labels, again.input_encoding, again.output_values) == (
        compiled.config, compiled.residual_labels, compiled.input_encoding, compiled.output_values
    )
    assert all(torch.equal(again.weights[k], compiled.weights[k]) for k in compiled.weights)


def test_a_cache_file_written_under_another_key_is_not_used(tmp_path):
    path = cache.write_compiled(compiled_program("tracr-hist"), "old-key", tmp_path / "hist.safetensors")
    assert cache.read_compiled(path, "new-key") is None


def test_a_damaged_cache_file_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable"):
        assert cache.read_compiled(path, "key") is None


@pytest.mark.parametrize("name", PROGRAMS)
def test_shipped_compiled_programs_are_current(name):
    """Fails when a program's definition, the tracr version or the conversion changed: rerun
    experiments/tracr_ground_truth.py (else every process compiles into the user cache)."""
    assert cache.read_compiled(cache.SHIPPED_DIR / f"{name}.safetensors", cache.cache_key(PROGRAMS[name])) is not None


def test_cache_key_changes_with_tracr_version_vocabulary_and_length(monkeypatch):
    program = PROGRAMS["tracr-hist"]
    key = cache.cache_key(program)
    assert cache.cache_key(dataclasses.replace(program, vocab=("a", "b"))) != key
    assert cache.cache_key(dataclasses.replace(program, max_seq_len=4)) != key
    monkeypatch.setattr(cache, "tracr_version", lambda: "0.0.1")
    assert cache.cache_key(program) != key


def test_a_cache_miss_compiles_once_and_writes_the_user_cache(monkeypatch, tmp_path):
    shipped = compiled_program("tracr-sort")
    compiles = []
    monkeypatch.setattr(cache, "SHIPPED_DIR", tmp_path / "empty")
    monkeypatch.setenv("ACDC_ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "compile_program", lambda program: compiles.append(program.name) or shipped)
    first, second = compiled_program("tracr-sort"), compiled_program("tracr-sort")
    assert compiles == ["tracr-sort"]
    assert (tmp_path / "cache" / "tracr" / f"tracr-sort-{cache.cache_key(PROGRAMS['tracr-sort'])}.safetensors").is_file()
    assert torch.equal(first.weights["unembed.W_U"], second.weights["unembed.W_U"])


# ----- loading -------------------------------------------------------------------------------------


def test_loading_a_tracr_model_without_tracr_says_how_to_install_it(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tracr" else real_find_spec(name, *a))
    with pytest.raises(AcdcError, match=r"pip install 'acdc-engine\[tracr\]'"):
        load_model("tracr-reverse")


def test_an_unknown_tracr_model_names_the_programs():
    with pytest.raises(AcdcError, match="tracr-reverse, tracr-proportion"):
        load_model("tracr-nonsense")


def test_loaded_model_is_named_after_its_program_and_takes_float64():
    model = load_model("tracr-hist", dtype="float64")
    assert model.cfg.model_name == "tracr-hist" and model.cfg.dtype == torch.float64


# ----- structural ground truth ---------------------------------------------------------------------


@pytest.mark.parametrize("name", PROGRAMS)
def test_shipped_ground_truth_is_the_one_derived_from_the_weights(name, truths):
    shipped = reference_circuit(name)
    assert shipped.edges() == truths[name].edges()
    assert head_inputs_in(shipped) == head_inputs_in(truths[name])


@pytest.mark.parametrize("ablation", ["zero", "resample", "mean"])
@pytest.mark.parametrize("name", PROGRAMS)
def test_structural_ground_truth_computes_the_full_model_exactly(name, ablation, models, truths):
    model, truth = models[name], truths[name]
    task = make_task(name, model)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, ablation, split_input=truth.graph.shape.split_input)
    full = patcher.logits(truth.graph.full_mask())
    assert torch.equal(patcher.logits(truth.in_graph), full)


def test_an_edge_exists_only_where_the_sender_writes_what_the_receiver_reads():
    model = compiled_program("tracr-reverse").model()
    with torch.no_grad():
        model.blocks[3].attn.W_V[0, compiled_program("tracr-reverse").residual_labels.index("tokens:2")] = 0
    edges = structural_circuit(model, compiled_program("tracr-reverse").residual_labels).extra["subspaces"]
    assert edges["tok_embed->a3.h0<v>"] == ["tokens:1", "tokens:3"]


def test_ground_truth_records_the_subspace_each_edge_carries(truths):
    subspaces = truths["tracr-proportion"].extra["subspaces"]
    assert subspaces["m0->a1.h0<v>"] == ["map"]
    assert subspaces["tok_embed->a1.h0<k>"] == ["tokens:BOS"]
    assert subspaces["a1.h0->logits"] == ["frac_prevs"]


# ----- tasks and metric ----------------------------------------------------------------------------


def test_reverse_task_is_every_permutation_after_bos_patched_from_another(models):
    task = make_task("tracr-reverse", models["tracr-reverse"])
    compiled = compiled_program("tracr-reverse")
    assert compiled.encode([(1, 2, 3), (3, 2, 1)]).tolist() == [[3, 0, 1, 2], [3, 2, 1, 0]]
    assert task.clean.tolist() == compiled.encode(list(itertools.permutations((1, 2, 3)))).tolist()
    assert sorted(task.corrupted.tolist()) == sorted(task.clean.tolist())
    assert not (task.corrupted == task.clean).all(1).any()
    assert task.positions.tolist() == [1, 2, 3] and task.default_metric == "l2"


def test_proportion_task_uses_the_reference_token_ids_by_default(models):
    task = make_task("tracr-proportion", models["tracr-proportion"])
    assert task.clean.shape == (50, 4) and task.positions.tolist() == [1, 2, 3]
    assert set(task.clean.unique().tolist()) == {0, 1, 2, 3}
    assert len(set(map(tuple, task.clean.tolist()))) == 50


def test_proportion_task_without_reference_ids_is_bos_then_strings_over_wxyz(models):
    task = make_task("tracr-proportion", models["tracr-proportion"], reference_ids=False)
    encoding = compiled_program("tracr-proportion").input_encoding
    assert task.clean.shape == (50, 5) and (task.clean[:, 0] == encoding["BOS"]).all()
    assert set(task.clean[:, 1:].unique().tolist()) == {encoding[c] for c in "wxyz"}


def test_a_task_asking_for_more_prompts_than_distinct_inputs_is_rejected(models):
    with pytest.raises(AcdcError, match="task.n_prompts must be between 2 and 9"):
        make_task("tracr-hist", models["tracr-hist"], n_prompts=10, length=2)


def test_a_tracr_task_on_another_model_is_rejected(models):
    with pytest.raises(AcdcError, match="set model=tracr-reverse"):
        make_task("tracr-reverse", models["tracr-sort"])


def test_l2_is_the_mean_squared_difference_from_the_full_model():
    task = TaskData("t", clean=torch.zeros(2, 3, dtype=torch.long), corrupted=torch.ones(2, 3, dtype=torch.long))
    clean_outputs = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])  # [n_prompts, P, outputs]
    circuits = torch.stack([clean_outputs, clean_outputs + torch.tensor([[[1.0, 3.0]], [[0.0, 2.0]]])])
    assert make_metric("l2", task, clean_outputs)(circuits).tolist() == [0.0, (1 + 9 + 0 + 4) / 4]


def test_kl_on_a_single_numerical_output_is_rejected(models):
    with pytest.raises(AcdcError, match="metric 'kl' needs at least two outputs"):
        discover(models["tracr-proportion"], "tracr-proportion", metric="kl", split_input=True, progress=False)


# ----- zero-ablation ACDC against the ground truths -------------------------------------------------


@pytest.mark.parametrize("name, task_params", CASES)
def test_zero_ablation_acdc_keeps_nothing_outside_the_structural_ground_truth(name, task_params, acdc_runs, truths):
    found = acdc_runs(name, **task_params)
    assert set(found.edges()) <= set(truths[name].edges())
    assert head_inputs_in(found) <= head_inputs_in(truths[name])


@pytest.mark.parametrize("name", PAPER)
def test_zero_ablation_acdc_finds_exactly_the_acdc_paper_circuit(name, acdc_runs):
    found, paper = acdc_runs(name), reference_circuit(f"{name}-acdc-paper")
    assert found.edges() == paper.edges()
    assert head_inputs_in(found) == head_inputs_in(paper)


@pytest.mark.parametrize("name, task_params", CASES)
def test_each_structural_edge_acdc_drops_carries_only_bos_machinery_or_feeds_a_dropped_head_input(
    name, task_params, acdc_runs, truths
):
    found, truth = acdc_runs(name, **task_params), truths[name]
    dropped_head_inputs = head_inputs_in(truth) - head_inputs_in(found)
    for edge in set(truth.edges()) - set(found.edges()):
        receiver = edge.split("->")[1]
        assert receiver in dropped_head_inputs or set(truth.extra["subspaces"][edge]) <= BOS_MACHINERY, edge


@pytest.mark.parametrize("name", PROGRAMS)
def test_float64_gives_the_same_circuit_as_float32(name, acdc_runs):
    assert acdc_runs(name, torch.float64).edges() == acdc_runs(name).edges()


def test_acdc_discover_with_zero_ablation_finds_the_paper_circuit_of_tracr_reverse(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""}
    overrides = ["model=tracr-reverse", "task=tracr-reverse", "method.ablation=zero", "progress=false"]
    command = [sys.executable, "-m", "acdc_engine.commands.discover", *overrides]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (path,) = (tmp_path / "outputs").rglob("circuit.json")
    edges = json.loads(path.read_text())["edges"]
    assert sorted(e for e, d in edges.items() if d["in_graph"]) == sorted(reference_circuit("tracr-reverse-acdc-paper").edges())
