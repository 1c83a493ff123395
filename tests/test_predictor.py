"""ACDC's predictor: a cheap estimate of the metric (a few of the task's prompts) that plans the
speculative passes and never decides; the circuit and its scores stay the sequential algorithm's."""

import pytest
import torch
from factories import random_task, small_model
from naive_reference import naive_acdc, naive_kl
from test_acdc import additive_metric, decisions
from test_resume import KeepEverySave

from acdc_engine import TaskData, build_graph, discover
from acdc_engine.core.mask import CircuitMask
from acdc_engine.measure.measurement import PREDICTOR_BELOW, PREDICTOR_PROMPTS, Measurement, predictor
from acdc_engine.measure.metrics import kl_divergence
from acdc_engine.methods import acdc
from acdc_engine.methods.checkpoint import load_checkpoint
from acdc_engine.methods.fingerprint import fingerprint
from acdc_engine.methods.acdc import PROBE_FROM, run_acdc, visiting_segments
from acdc_engine.patching import EdgePatcher


probe = acdc._probe


def same_result(a, b) -> bool:
    return (
        torch.equal(a.kept.edges, b.kept.edges)
        and torch.equal(a.kept.head_inputs, b.kept.head_inputs)
        and torch.equal(a.scores.edges.nan_to_num(-1), b.scores.edges.nan_to_num(-1))
        and torch.equal(a.scores.head_inputs.nan_to_num(-1), b.scores.head_inputs.nan_to_num(-1))
    )


def long_segment_setting():
    """(model, task, graph, evaluate): a model whose ACDC run at threshold 0.0005 has a segment long
    enough to probe, and the engine's KL measurement of it."""
    model, task = small_model(attn_only=False, seed=1, n_heads=4), random_task(seed=1)
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions)
    metric = kl_divergence(patcher.logits(graph.full_mask()))

    def evaluate(masks, start_layer=0):
        return metric(patcher.logits(masks, start_layer)).double()

    return model, task, graph, evaluate


def test_a_task_subset_takes_every_per_prompt_field_at_the_chosen_prompts():
    g = torch.Generator().manual_seed(0)
    clean, corrupted, answers, wrong = (torch.randint(0, 20, shape, generator=g) for shape in [(6, 7), (6, 7), (6, 2), (6, 2)])
    task = TaskData("padded", clean, corrupted, torch.tensor([[2, -1]] * 6), answers, wrong, lengths=torch.tensor([7, 6, 7, 5, 7, 7]))
    prompts = torch.tensor([1, 3])
    subset = task.subset(prompts)
    for key in ("clean", "corrupted", "answers", "wrong_answers", "lengths", "positions"):
        assert torch.equal(getattr(subset, key), getattr(task, key)[prompts]), key
    assert subset.name == task.name and subset.default_metric == task.default_metric


def test_the_predictor_measures_the_same_metric_on_evenly_spaced_prompts():
    model, task = small_model(attn_only=False), random_task(n_prompts=12)
    graph = build_graph(model.cfg)
    predict = predictor(model, task, metric="logit_diff")
    masks = CircuitMask.stack([graph.full_mask(), graph.empty_mask()])
    expected = Measurement(model, task.subset(torch.tensor([0, 3, 6, 9])), "logit_diff").evaluate(masks)
    assert PREDICTOR_PROMPTS == 4
    assert torch.equal(predict(masks), expected)


def test_a_task_with_few_prompts_gets_no_predictor():
    model = small_model(attn_only=True)
    assert predictor(model, random_task(n_prompts=2 * PREDICTOR_PROMPTS - 1)) is None
    assert predictor(model, random_task(n_prompts=2 * PREDICTOR_PROMPTS)) is not None


def test_a_task_whose_passes_are_large_gets_no_predictor():
    model = small_model(attn_only=True)  # d_model 32
    n_pos = 8
    assert predictor(model, random_task(n_prompts=PREDICTOR_BELOW // (32 * n_pos) - 1, n_pos=n_pos)) is not None
    assert predictor(model, random_task(n_prompts=PREDICTOR_BELOW // (32 * n_pos), n_pos=n_pos)) is None


def test_a_predictor_that_is_always_wrong_changes_the_passes_never_the_circuit():
    graph = build_graph(small_model(attn_only=True, n_heads=4).cfg)
    assert max(len(s.candidates) for s in visiting_segments(graph)) >= PROBE_FROM
    evaluate = additive_metric(graph, seed=0)
    without = run_acdc(graph, evaluate, 0.3, batch_size=16, progress=False)
    misleading = run_acdc(graph, evaluate, 0.3, batch_size=16, progress=False, predict=lambda masks, start_layer=0: -evaluate(masks))
    assert same_result(misleading, without)


def test_a_predictor_that_agrees_with_the_metric_needs_fewer_passes_for_the_same_circuit():
    model, task, graph, evaluate = long_segment_setting()
    without = run_acdc(graph, evaluate, 0.0005, batch_size=16, progress=False)
    predicted = run_acdc(graph, evaluate, 0.0005, batch_size=16, progress=False, predict=evaluate)
    assert same_result(predicted, without)
    assert predicted.forward_passes < without.forward_passes


@pytest.mark.parametrize("batch_size", [5, 64])
def test_with_a_predictor_discover_still_gives_the_naive_references_circuit(batch_size, monkeypatch):
    model, task = small_model(attn_only=False, seed=1, n_heads=4), random_task(n_prompts=2 * PREDICTOR_PROMPTS, seed=1)
    probed = []
    monkeypatch.setattr(acdc, "_probe", lambda *args: probed.append(True) or probe(*args))
    circuit = discover(model, task, threshold=0.0005, batch_size=batch_size, progress=False)
    assert probed  # a segment was long enough to probe
    clean_logits = model(task.clean)
    reference = naive_acdc(model, task.clean, task.corrupted, lambda logits: naive_kl(clean_logits, logits, task.positions.tolist()), 0.0005)
    assert decisions(circuit) == (reference["edges"], reference["head_inputs"])


def test_a_run_with_a_predictor_resumed_from_any_save_repeats_the_uninterrupted_ones_passes(tmp_path, monkeypatch):
    model, task, graph, evaluate = long_segment_setting()
    probed = []
    monkeypatch.setattr(acdc, "_probe", lambda *args: probed.append(True) or probe(*args))
    saves = KeepEverySave(fingerprint({}, model, task))
    straight = run_acdc(graph, evaluate, 0.0005, batch_size=8, progress=False, checkpointer=saves, predict=evaluate)
    assert probed
    for n, contents in enumerate(saves.files[:-1]):
        (tmp_path / f"{n}.safetensors").write_bytes(contents)
        resumed = run_acdc(graph, evaluate, 0.0005, batch_size=8, progress=False, predict=evaluate,
                           resume=load_checkpoint(tmp_path / f"{n}.safetensors").state)
        assert same_result(resumed, straight)
        assert resumed.forward_passes == straight.forward_passes
