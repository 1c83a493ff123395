"""The trained testbeds beyond the default model: `toy-induction-mlp-2l` on task `induction`, and
`toy-predecessor-2l` on task `predecessor`.

Each model's circuit is checked against components identified from the model's own attention
patterns (never hard-coded head names), and against what the task forces any 2-layer model to do.
"""

import inspect
import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from acdc_engine import AcdcError, discover
from acdc_engine.commands.discover import CONF_DIR
from acdc_engine.evaluation.testbed_truth import attention_patterns, offset_scores
from acdc_engine.models import WEIGHTS, load_model
from acdc_engine.tasks import make_induction
from acdc_engine.tasks.predecessor import make_predecessor

TESTBEDS = ("toy-induction-mlp-2l", "toy-predecessor-2l")
HALF = 8


@pytest.fixture(scope="module")
def induction_model():
    return load_model("toy-induction-mlp-2l")


@pytest.fixture(scope="module")
def predecessor_model():
    return load_model("toy-predecessor-2l")


@pytest.fixture(scope="module")
def induction_task():
    return make_induction(d_vocab=64, n_prompts=32, half_length=HALF, seed=0)


@pytest.fixture(scope="module")
def predecessor_task():
    return make_predecessor(d_vocab=64)


# --- the shipped files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", TESTBEDS)
def test_shipped_testbed_is_small_and_records_how_it_was_trained(name):
    assert (WEIGHTS / f"{name}.safetensors").stat().st_size < 1_000_000
    training = json.loads((WEIGHTS / f"{name}.json").read_text())["training"]
    assert {"seed", "steps", "final_loss", "seconds", "command"} <= set(training)
    assert training["command"].startswith("HF_HUB_OFFLINE=1 python experiments/train_")


@pytest.mark.parametrize("name, task", [("toy-induction-mlp-2l", "induction"), ("toy-predecessor-2l", "predecessor")])
def test_model_and_task_yaml_compose_for_the_command_line(name, task):
    from acdc_engine.commands.config_schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=[f"model={name}", f"task={task}"])
    assert (cfg.model.name, cfg.task.name) == (name, task)


# --- toy-induction-mlp-2l on induction ----------------------------------------------------------


def test_mlp_induction_model_predicts_the_repeated_half(induction_model, induction_task):
    logits = induction_model(induction_task.clean)[:, induction_task.positions]
    accuracy = (logits.argmax(-1) == induction_task.answers).float().mean().item()
    assert accuracy > 0.9  # chance is 1/63


def test_mlp_induction_circuit_points_by_query_with_positional_keys(induction_model, induction_task):
    # Q-composition induction: a layer-0 duplicate-token head tells each repeated token where its
    # earlier occurrence was (its value carries that position, not its token); layer-1 heads turn
    # that into a query for the positions just after it, matched by position alone, and copy the
    # token found there through value inputs that read layer-0 heads looking one or two tokens back.
    layer0, layer1 = attention_patterns(induction_model, induction_task.clean)
    repeat = torch.arange(HALF + 1, 2 * HALF + 1)  # the earlier occurrence of position i is i - HALF
    duplicate_scores = offset_scores(layer0, HALF, repeat)
    duplicate = int(duplicate_scores.argmax())
    look_back = [h for h, s in enumerate((offset_scores(layer0, 1) + offset_scores(layer0, 2)).tolist()) if s > 0.5]
    after_earlier = sum(offset_scores(layer1, HALF - d, repeat) for d in (1, 2, 3))  # 1..3 after the earlier occurrence
    lookup = [h for h, s in enumerate(after_earlier.tolist()) if s > 0.5]
    assert duplicate_scores[duplicate] > 0.5 and look_back and lookup

    circuit = discover(induction_model, induction_task, threshold=0.05, progress=False)
    edges = set(circuit.edges())
    assert f"input->a0.h{duplicate}<v>" not in edges  # the pointer is a position: the same in the corrupted run
    assert not [edge for edge in edges if edge.endswith(tuple(f"->a1.h{h}<k>" for h in lookup))]  # keys: positions only
    assert any(
        {f"a0.h{duplicate}->a1.h{h}<q>", f"a1.h{h}->logits"} <= edges and any(f"a0.h{b}->a1.h{h}<v>" in edges for b in look_back)
        for h in lookup
    )


# --- the predecessor task ---------------------------------------------------------------------


def test_predecessor_answer_is_the_token_before_the_querys_earlier_occurrence(predecessor_task):
    for prompt, answer in zip(predecessor_task.clean.tolist(), predecessor_task.answers[:, 0].tolist()):
        body, query = prompt[1:-1], prompt[-1]
        assert body.count(query) == 1 and body.index(query) >= 1
        assert answer == body[body.index(query) - 1]


def test_predecessor_prompts_are_bos_then_distinct_tokens_then_the_query(predecessor_task):
    for tokens in (predecessor_task.clean, predecessor_task.corrupted):
        assert tokens.shape == (32, 14) and (tokens[:, 0] == 0).all()
        assert all(len(set(body)) == len(body) and 0 not in body for body in tokens[:, 1:-1].tolist())


def test_predecessor_wrong_answer_is_the_corrupted_prompts_answer(predecessor_task):
    for prompt, wrong in zip(predecessor_task.corrupted.tolist(), predecessor_task.wrong_answers[:, 0].tolist()):
        body = prompt[1:-1]
        assert wrong == body[body.index(prompt[-1]) - 1]


def test_predecessor_metric_reads_the_query_position(predecessor_task):
    assert predecessor_task.positions.tolist() == [13]


def test_predecessor_task_is_reproducible_from_its_seed():
    first, again, other = make_predecessor(64, seed=3), make_predecessor(64, seed=3), make_predecessor(64, seed=4)
    assert torch.equal(first.clean, again.clean) and torch.equal(first.corrupted, again.corrupted)
    assert not torch.equal(first.clean, other.clean)


@pytest.mark.parametrize(
    "kwargs, field", [(dict(length=1), "task.length"), (dict(n_prompts=0), "task.n_prompts"), (dict(length=64), "distinct")]
)
def test_predecessor_rejects_impossible_settings_naming_the_field(kwargs, field):
    with pytest.raises(AcdcError, match=field):
        make_predecessor(64, **kwargs)


def test_predecessor_yaml_composes_against_its_schema_with_the_python_defaults():
    from acdc_engine.commands.config_schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        task = OmegaConf.to_container(compose("config", overrides=["task=predecessor"]).task)
    defaults = {k: p.default for k, p in inspect.signature(make_predecessor).parameters.items() if k != "d_vocab"}
    assert task.pop("name") == "predecessor"
    assert task == defaults


# --- toy-predecessor-2l on predecessor ----------------------------------------------------------


def test_predecessor_model_names_the_predecessor(predecessor_model, predecessor_task):
    logits = predecessor_model(predecessor_task.clean)[:, -1]
    accuracy = (logits.argmax(-1) == predecessor_task.answers[:, 0]).float().mean().item()
    assert accuracy > 0.9  # chance is 1/63


def test_predecessor_circuit_finds_the_query_by_k_composition_and_reads_the_answer_by_v_composition(
    predecessor_model, predecessor_task
):
    # The answer t_{j-1} lies two positions before j+1, the one position whose previous token is the
    # query's token: the model's layer-1 heads attend there, find it through a previous-token head
    # (key input) and read the answer that a two-back head copied there (value input).
    tokens = predecessor_task.clean
    earlier = (tokens[:, 1:-1] == tokens[:, -1:]).int().argmax(1) + 1  # position j
    layer0, layer1 = attention_patterns(predecessor_model, tokens)
    lookup_scores = layer1[torch.arange(len(tokens)), :, -1, earlier + 1].mean(0)
    lookup_heads = [h for h, score in enumerate(lookup_scores.tolist()) if score > 0.5]
    prev_scores, two_back_scores = offset_scores(layer0, 1), offset_scores(layer0, 2)
    locator, mover = int(prev_scores.argmax()), int(two_back_scores.argmax())
    assert lookup_heads and prev_scores[locator] > 0.5 and two_back_scores[mover] > 0.5

    edges = set(discover(predecessor_model, predecessor_task, threshold=0.05, progress=False).edges())
    assert any(
        {f"a0.h{locator}->a1.h{h}<k>", f"a0.h{mover}->a1.h{h}<v>", f"a1.h{h}->logits"} <= edges for h in lookup_heads
    )
