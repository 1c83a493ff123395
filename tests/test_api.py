"""The notebook API: discover() accepts what researchers have at hand and returns a Circuit."""

import pytest
import torch
from factories import random_task, small_model

import acdc_engine
from acdc_engine import AcdcError, Circuit, TaskData, discover
from acdc_engine.formats.circuit_file import circuit_to_dict, circuit_to_json


def test_discover_accepts_a_clean_corrupted_pair():
    task = random_task()
    circuit = discover(small_model(attn_only=True), (task.clean, task.corrupted), threshold=0.01, progress=False)
    assert isinstance(circuit, Circuit)
    assert circuit.task["positions"] == [task.clean.shape[1] - 1]  # the last position by default


def test_discover_accepts_a_dict_of_task_fields():
    task = random_task()
    fields = {"name": "mine", "clean": task.clean.tolist(), "corrupted": task.corrupted.tolist(), "positions": [3, 5]}
    circuit = discover(small_model(attn_only=True), fields, threshold=0.01, progress=False)
    assert circuit.task["name"] == "mine" and circuit.task["positions"] == [3, 5]


def test_discover_loads_a_model_by_name(tmp_path):
    circuit = discover("toy-induction-2l", "induction", threshold=0.05, progress=False)
    assert circuit.model["name"] == "toy-induction-2l"
    assert circuit.n_edges_total == 81


def test_summary_states_edges_and_metric_values(small_circuit):
    text = small_circuit.summary()
    assert f"{small_circuit.n_edges} / {small_circuit.n_edges_total} edges" in text
    assert "full model" in text and "empty circuit" in text


def test_circuit_json_parses_back_to_the_same_dict(small_circuit):
    import json

    assert json.loads(circuit_to_json(small_circuit)) == circuit_to_dict(small_circuit)


def test_unknown_task_name_is_rejected():
    with pytest.raises(AcdcError, match="unknown task 'ioi-typo'"):
        discover(small_model(attn_only=True), "ioi-typo", progress=False)


def test_unknown_method_is_rejected():
    with pytest.raises(AcdcError, match="unknown method 'magic'"):
        discover(small_model(attn_only=True), random_task(), method="magic", progress=False)


def test_prompts_longer_than_the_context_are_rejected():
    task = TaskData("long", torch.zeros(2, 40, dtype=torch.long), torch.zeros(2, 40, dtype=torch.long))
    with pytest.raises(AcdcError, match="the model's context is 16"):
        discover(small_model(attn_only=True), task, progress=False)


def test_float_token_ids_are_rejected():
    with pytest.raises(AcdcError, match="integer token ids"):
        TaskData("bad", torch.zeros(2, 4), torch.zeros(2, 4))


def test_package_exports_the_api():
    assert {"discover", "load_circuit", "Circuit", "TaskData", "AcdcError"} <= set(acdc_engine.__all__)
