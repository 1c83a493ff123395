"""Validation with clear errors: run configs, circuit files and datasets fail with an AcdcError that
names the key, the field, or the file and line."""

import os
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from acdc_engine import AcdcError, TaskData, load_circuit
from acdc_engine.commands.discover import CONF_DIR
from acdc_engine.commands.config_schema import register_configs
from acdc_engine.core.graph import GraphShape, build_graph
from acdc_engine.core.shape import edge_count
from acdc_engine.formats.circuit_file import circuit_from_dict
from acdc_engine.commands.validation import validate_config
from acdc_engine.core.values import bounds
from acdc_engine.formats.circuit_file import circuit_to_dict, circuit_to_json


@pytest.fixture(scope="module")
def composed():
    """composed(*overrides) -> the run config, as acdc-discover composes it."""
    register_configs()

    def compose_with(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return compose_with


# --- run configs -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["toy-induction-2l", "random"])
@pytest.mark.parametrize("method", ["acdc", "eap", "eap-ig"])
def test_shipped_config_groups_pass_validation(composed, model, method):
    validate_config(composed(f"model={model}", f"method={method}"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method.batch_size=0"], "method.batch_size must be >= 1, got 0"),
        (["method.threshold=-0.1"], "method.threshold must be a finite number >= 0, got -0.1"),
        (["method.threshold=nan"], "method.threshold must be a finite number, got nan"),
        (["method.threshold=-inf"], "method.threshold must be a finite number, got -inf"),
        (["task.n_prompts=0"], "task.n_prompts must be >= 1, got 0"),
        (["task.half_length=-3"], "task.half_length must be >= 1, got -3"),
        (["task.bos_token=-1"], "task.bos_token must be >= 0, got -1"),
        (["seed=-1"], "seed must be >= 0, got -1"),
        ([f"task.seed={2**64}"], "task.seed must fit in a 64-bit integer"),
        (["method=eap-ig", "method.steps=0"], "method.steps must be >= 1, got 0"),
        (["method=eap", "method.top_n=0"], "method.top_n must be >= 1, got 0"),
        (["method=eap", "method.top_n=null", "method.score_threshold=-1"], "method.score_threshold must be a finite number >= 0"),
        (["model=random", "model.config.d_model=nan"], "model.config.d_model must be a finite number, got nan"),
    ],
)
def test_out_of_range_value_is_rejected_naming_the_key(composed, overrides, message):
    with pytest.raises(AcdcError, match=f"^{message.replace('.', '[.]').replace('(', '[(]')}"):
        validate_config(composed(*overrides))


def test_rule_across_fields_comes_from_the_schema_post_init(composed):
    cfg = composed("method=eap", "method.score_threshold=0.1")  # top_n is still 20
    with pytest.raises(AcdcError, match="^method: give exactly one of top_n and score_threshold"):
        validate_config(cfg)


def test_key_added_with_plus_is_rejected_as_unknown(composed):
    with pytest.raises(AcdcError, match="unknown key model.colour; ModelConfig has name"):
        validate_config(composed("+model.colour=blue"))


def test_name_that_disagrees_with_the_chosen_group_is_rejected(composed):
    with pytest.raises(AcdcError, match="method.name is 'eap', but the method chosen is 'acdc'; pick another with method=eap"):
        validate_config(composed("method.name=eap"))


def test_interpolation_that_fails_is_reported_by_its_key(composed):
    cfg = composed("method.threshold=${oc.env:ACDC_TEST_NO_SUCH_VARIABLE}")
    with pytest.raises(AcdcError, match="^method.threshold: .*ACDC_TEST_NO_SUCH_VARIABLE"):
        validate_config(cfg)


@pytest.fixture(scope="module")
def composed_evaluate():
    """composed_evaluate(*overrides) -> the run config, as acdc-evaluate composes it."""
    from acdc_engine.commands.evaluate import register_evaluate_configs

    register_evaluate_configs()

    def compose_with(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("evaluate", overrides=list(overrides))

    return compose_with


def test_shipped_evaluate_config_passes_validation(composed_evaluate):
    validate_config(composed_evaluate("thresholds=[0,0.01]", "model=tracr-reverse", "task=tracr-reverse"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["thresholds=[0.1,-1]"], "thresholds[1] must be a finite number >= 0, got -1.0"),
        (["thresholds=[inf]"], "thresholds[0] must be a finite number, got inf"),
        (["fractions=[0.5,2]"], "fractions[1] must be a finite number > 0 and <= 1, got 2.0"),
        (["steps=0"], "steps must be >= 1, got 0"),
        (["batch_size=0"], "batch_size must be >= 1, got 0"),
        (["task.n_prompts=0"], "task.n_prompts must be >= 1, got 0"),
        (["+task.colour=blue"], "unknown key task.colour; InductionTaskConfig has name"),
        (["fractions=[0.5,0.1]"], "config: fractions must be increasing numbers in (0, 1]"),
        (["methods=[acdc,eep]"], "config: unknown or no methods ['eep']; choose from acdc, acdc-eap, eap, eap-ig"),
        (["thresholds=[]"], "config: give at least one threshold"),
    ],
)
def test_evaluate_config_out_of_range_value_is_rejected_naming_the_key(composed_evaluate, overrides, message):
    with pytest.raises(AcdcError) as error:
        validate_config(composed_evaluate(*overrides))
    assert str(error.value).startswith(message)


@dataclass
class NewTaskConfig:
    """A task schema as another module would declare it: no registration with the validator."""

    name: str = "new-task"
    n_examples: int = 4
    corrupt_seed: int = 0
    min_gap: int = field(default=3, metadata=bounds(ge=2, le=10))
    n_tries: int = field(default=1, metadata=bounds(ge=0))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("n_examples", 0, "n_examples must be >= 1, got 0"),
        ("corrupt_seed", -5, "corrupt_seed must be >= 0, got -5"),
        ("min_gap", 11, "min_gap must be >= 2 and <= 10, got 11"),
    ],
)
def test_a_new_schema_is_checked_by_naming_convention_and_field_metadata(key, value, message):
    cfg = OmegaConf.structured(NewTaskConfig)
    cfg[key] = value
    with pytest.raises(AcdcError, match=message):
        validate_config(cfg)


def test_field_metadata_replaces_the_naming_convention():
    cfg = OmegaConf.structured(NewTaskConfig)
    cfg.n_tries = 0  # n_* would need >= 1; the field's metadata allows 0
    validate_config(cfg)


# --- the command line ------------------------------------------------------------------------


def acdc_discover(tmp_path, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""}
    command = [sys.executable, "-m", "acdc_engine.commands.discover", *args, "progress=false"]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_cli_rejects_an_out_of_range_value_before_loading_the_model(tmp_path):
    result = acdc_discover(tmp_path, "model.name=no-such-model", "method.batch_size=0")
    assert result.returncode == 2
    assert result.stderr.strip() == "acdc-discover: error: method.batch_size must be >= 1, got 0"


def test_cli_reports_an_override_hydra_cannot_apply_in_one_line(tmp_path):
    result = acdc_discover(tmp_path, "model.config.d_model=8")  # model.config is null for a shipped model
    assert result.returncode == 2
    assert result.stderr.startswith("acdc-discover: error: cannot compose the config from the command line")
    assert "Traceback" not in result.stderr


def run_main_in_process(monkeypatch, tmp_path, *args):
    from acdc_engine.commands import discover as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # main() sets it to 1 for itself; restored afterwards
    monkeypatch.setattr(sys, "argv", ["acdc-discover", *args])
    cli.main()


def test_cli_keeps_the_traceback_of_an_error_raised_inside_a_run(monkeypatch, tmp_path):
    from acdc_engine.commands import discover as cli

    def broken_run(cfg):
        raise RuntimeError("a bug in the run")

    monkeypatch.setattr(cli, "run", broken_run)
    with pytest.raises(RuntimeError, match="a bug in the run"):
        run_main_in_process(monkeypatch, tmp_path, "progress=false")


def test_cli_turns_an_error_inside_hydra_into_one_line_and_exit_status_2(monkeypatch, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main_in_process(monkeypatch, tmp_path, "task=null")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("acdc-discover: error: cannot compose the config from the command line (ValueError")


def test_acdc_evaluate_rejects_an_out_of_range_value_in_one_line_before_loading_anything(monkeypatch, tmp_path, capsys):
    from acdc_engine.commands import evaluate as evaluate_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setattr(sys, "argv", ["acdc-evaluate", "model.name=no-such-model", "truth=no-such-file", "thresholds=[-1]"])
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "acdc-evaluate: error: thresholds[0] must be a finite number >= 0, got -1.0"


# --- circuit files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_circuit():
    """A circuit over a 2-layer, 3-head graph with MLPs, every third edge left out (no model needed)."""
    graph = build_graph(GraphShape(n_layers=2, n_heads=3, has_mlp=True))
    edges = {name: {"in_graph": i % 3 != 0} for i, name in enumerate(graph.edge_names())}
    model = {"name": "test", "n_layers": 2, "n_heads": 3, "attn_only": False}
    return circuit_from_dict({"model": model, "edges": edges, "metric": {"name": "kl", "full": 0.0}})


@pytest.fixture(scope="module")
def circuit_text(small_circuit):
    return circuit_to_json(small_circuit, indent=1)


def write(tmp_path, content):
    path = tmp_path / "c.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def line_of(text, fragment):
    return text[: text.index(fragment)].count("\n") + 1


def test_duplicate_key_is_rejected_with_its_line(tmp_path, circuit_text):
    fragment = '"in_graph": '
    text = circuit_text.replace(fragment, '"in_graph": true, ' + fragment, 1)
    with pytest.raises(AcdcError, match=f"c.json: line {line_of(text, fragment)}, .*duplicate key 'in_graph'"):
        load_circuit(write(tmp_path, text))


@pytest.mark.parametrize(
    "literal, complaint",
    [("NaN", "NaN is not a JSON number"), ("-Infinity", "-Infinity is not a JSON number"), ("1e999", "out of range")],
)
def test_non_finite_number_is_rejected_with_its_line(tmp_path, circuit_text, literal, complaint):
    text = circuit_text.replace('"score": null', f'"score": {literal}', 1)
    with pytest.raises(AcdcError, match=f"c.json: line {line_of(text, literal)}, .*{complaint}"):
        load_circuit(write(tmp_path, text))


def test_bytes_that_are_not_utf8_are_rejected_with_their_line(tmp_path, circuit_text):
    raw = circuit_text.encode().replace(b'"format"', b'"\xff\xfeformat"', 1)
    with pytest.raises(AcdcError, match=r"c.json: line 2, column 3: bytes that are not UTF-8"):
        load_circuit(write(tmp_path, raw))


def test_utf8_byte_order_mark_is_accepted(tmp_path, small_circuit, circuit_text):
    path = write(tmp_path, b"\xef\xbb\xbf" + circuit_text.encode())
    assert circuit_to_dict(load_circuit(path)) == circuit_to_dict(small_circuit)


def test_json_nested_beyond_the_parser_is_rejected(tmp_path):
    with pytest.raises(AcdcError, match="nested too deeply"):
        load_circuit(write(tmp_path, '{"notes": ' + "[" * 100_000 + "]" * 100_000 + "}"))


def test_integer_too_long_to_convert_is_rejected_with_its_line(tmp_path, circuit_text):
    text = circuit_text.replace('"score": null', '"score": ' + "7" * 5000, 1)
    with pytest.raises(AcdcError, match="integer of 5000 digits is too long"):
        load_circuit(write(tmp_path, text))


def test_score_beyond_the_float_range_is_rejected_by_field(small_circuit):
    data = circuit_to_dict(small_circuit)
    data["edges"]["input->logits"]["score"] = 10**400
    with pytest.raises(AcdcError, match=r"edges\['input->logits'\]: field 'score' must be float"):
        circuit_from_dict(data)


@pytest.mark.parametrize("key, value", [("version", True), ("version", 1.0), ("task", 5), ("method", [1]), ("run", "x")])
def test_wrong_type_of_top_level_field_is_rejected_by_name(small_circuit, key, value):
    data = circuit_to_dict(small_circuit)
    data[key] = value
    with pytest.raises(AcdcError, match=f"'{key}'"):
        circuit_from_dict(data)


def test_edge_in_the_circuit_but_not_kept_is_rejected(small_circuit):
    data = circuit_to_dict(small_circuit)
    name = next(n for n, e in data["edges"].items() if e["in_graph"])
    data["edges"][name]["kept"] = False
    with pytest.raises(AcdcError, match=f"edges\\['{name.replace('.', '[.]')}'\\]: 'in_graph' is true but 'kept' is false"):
        circuit_from_dict(data)


def test_node_entry_that_is_not_an_object_is_rejected(small_circuit):
    data = circuit_to_dict(small_circuit)
    data["nodes"]["logits"] = True
    with pytest.raises(AcdcError, match=r"nodes\['logits'\]: must be an object"):
        circuit_from_dict(data)


def test_huge_model_shape_with_few_edges_is_rejected_without_building_its_graph(small_circuit):
    data = circuit_to_dict(small_circuit)
    data["model"]["n_layers"] = 10**12
    with pytest.raises(AcdcError, match=r"edges: the model \(n_layers 1000000000000, n_heads 3\) has \d+ edges, the file lists"):
        circuit_from_dict(data)


@pytest.mark.parametrize("has_mlp", [False, True])
@pytest.mark.parametrize("split_input", [False, True])
def test_edge_count_formula_matches_the_built_graph(has_mlp, split_input):
    for n_layers in range(1, 5):
        for n_heads in range(1, 4):
            shape = GraphShape(n_layers, n_heads, has_mlp, split_input)
            assert edge_count(shape) == build_graph(shape, split_input=split_input).n_edges


# --- datasets --------------------------------------------------------------------------------


def tokens(n_prompts=3, n_pos=5):
    return torch.arange(n_prompts * n_pos).reshape(n_prompts, n_pos) % 7


@pytest.mark.parametrize(
    "fields, complaint",
    [
        ({"clean": [[1, 2], [3]]}, "clean must hold integer token ids: cannot read list"),
        ({"clean": "hello"}, "clean must hold integer token ids: cannot read str"),
        ({"clean": [[2**70] * 5] * 3}, "clean must hold integer token ids: cannot read list"),
        ({"positions": [1.5]}, "positions must hold integer positions, got dtype torch.float32"),
        ({"positions": []}, "positions is empty"),
        ({"answers": torch.zeros(3, 2, dtype=torch.long)}, r"answers must have shape \[n_prompts, n_positions\] = \(3, 1\), got \(3, 2\)"),
        ({"positions": [1, 2], "answers": torch.zeros(2, 3, dtype=torch.long)}, r"= \(3, 2\), got \(2, 3\)"),
        ({"answers": torch.full((3, 1), float("nan"))}, "answers must hold integer token ids, got dtype torch.float32"),
        ({"name": 7}, "task name must be a non-empty string"),
    ],
)
def test_malformed_dataset_is_rejected_naming_the_field(fields, complaint):
    arguments = {"name": "t", "clean": tokens(), "corrupted": tokens(), **fields}
    with pytest.raises(AcdcError, match=complaint):
        TaskData(**arguments)


def test_answers_given_flat_are_read_prompt_major():
    task = TaskData("t", tokens(), tokens(), positions=[1, 2], answers=torch.arange(6))
    assert task.answers.tolist() == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.parametrize("key", ["clean", "answers"])
def test_token_id_outside_the_vocabulary_is_rejected_naming_the_field(key):
    task = TaskData("t", tokens(), tokens(), answers=torch.zeros(3, 1, dtype=torch.long))
    getattr(task, key)[0, 0] = -1
    with pytest.raises(AcdcError, match=f"{key} holds token ids outside the model's vocabulary"):
        task.check_vocabulary(7)
