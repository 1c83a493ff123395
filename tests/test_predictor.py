"""ACDC's probes: each candidate of a long segment of the top layer or the logits measured removed
alone by the predictor (the metric on a few of the task's prompts, or on tiny tasks the measurement
itself) before the segment's first batch; they plan the speculative passes and never decide, so the
circuit and its scores stay the sequential algorithm's."""

import pytest
import torch
from factories import random_task, small_model
from naive_reference import naive_acdc, naive_kl
from test_acdc import additive_metric, decisions
from test_resume import KeepEverySave

from acdc_engine import TaskData, build_graph, discover
from acdc_engine.core.mask import CircuitMask
from acdc_engine.measure.measurement import PREDICTOR_BELOW, PREDICTOR_PROMPTS, SUBSET_FROM, Measurement, predictor
from acdc_engine.measure.metrics import kl_divergence
from acdc_engine.methods import acdc
from acdc_engine.methods.checkpoint import load_checkpoint
from acdc_engine.methods.fingerprint import fingerprint
from acdc_engine.methods.acdc import PROBE_BATCH_FROM, PROBE_FROM, run_acdc, visiting_segments
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


def unused(masks, start_layer=0):
    raise AssertionError("the predictor's choice must not measure anything")


def test_from_SUBSET_FROM_the_predictor_measures_the_same_metric_on_evenly_spaced_prompts():
    model = small_model(attn_only=False)  # d_model 32
    task = random_task(n_prompts=128, n_pos=8)  # work 128 x 8 x 32 = SUBSET_FROM
    graph = build_graph(model.cfg)
    predict = predictor(model, task, unused, metric="logit_diff")
    masks = CircuitMask.stack([graph.full_mask(), graph.empty_mask()])
    expected = Measurement(model, task.subset(torch.tensor([0, 32, 64, 96])), "logit_diff").evaluate(masks)
    assert PREDICTOR_PROMPTS == 4 and task.clean.numel() * 32 == SUBSET_FROM
    assert torch.equal(predict(masks), expected)


def test_below_SUBSET_FROM_the_predictor_is_the_measurement_itself():
    measurement = Measurement(small_model(attn_only=True), random_task(n_prompts=6))
    assert measurement.predictor == measurement.evaluate


def test_a_task_with_few_prompts_above_SUBSET_FROM_gets_no_predictor():
    model = small_model(attn_only=True)  # d_model 32
    n_pos = SUBSET_FROM // (32 * (2 * PREDICTOR_PROMPTS - 1)) + 1
    assert predictor(model, random_task(n_prompts=2 * PREDICTOR_PROMPTS - 1, n_pos=n_pos), unused) is None
    assert predictor(model, random_task(n_prompts=2 * PREDICTOR_PROMPTS, n_pos=n_pos), unused) is not None


def test_a_task_whose_passes_are_large_gets_no_predictor():
    model = small_model(attn_only=True)  # d_model 32
    n_pos = 8
    assert predictor(model, random_task(n_prompts=PREDICTOR_BELOW // (32 * n_pos) - 1, n_pos=n_pos), unused) is not None
    assert predictor(model, random_task(n_prompts=PREDICTOR_BELOW // (32 * n_pos), n_pos=n_pos), unused) is None


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


def test_the_probes_passes_count_as_forward_passes():
    model, task, graph, evaluate = long_segment_setting()
    passes = []

    def counted(masks, start_layer=0):
        passes.append(start_layer)
        return evaluate(masks, start_layer)

    result = run_acdc(graph, counted, 0.0005, batch_size=16, progress=False, predict=counted)
    assert result.forward_passes == len(passes)


def probed_layers(monkeypatch) -> list[int]:
    """The start layers of the segments ACDC probes from now on."""
    layers = []
    monkeypatch.setattr(acdc, "_probe", lambda state, candidates, moot, start_layer, *rest: layers.append(start_layer)
                        or probe(state, candidates, moot, start_layer, *rest))
    return layers


def test_probes_measure_only_the_segments_of_the_top_layer_and_the_logits(monkeypatch):
    model, task, graph, evaluate = long_segment_setting()
    layers = probed_layers(monkeypatch)
    run_acdc(graph, evaluate, 0.0005, batch_size=16, progress=False, predict=evaluate)
    top = graph.shape.n_layers - 1
    assert sorted(set(layers)) == [top, top + 1]


def test_probes_wait_for_batches_of_PROBE_BATCH_FROM_circuits(monkeypatch):
    model, task, graph, evaluate = long_segment_setting()
    layers = probed_layers(monkeypatch)
    run_acdc(graph, evaluate, 0.0005, batch_size=PROBE_BATCH_FROM - 1, progress=False, predict=evaluate)
    assert layers == []
    run_acdc(graph, evaluate, 0.0005, batch_size=PROBE_BATCH_FROM, progress=False, predict=evaluate)
    assert layers


@pytest.mark.parametrize("n_prompts, n_pos", [(2 * PREDICTOR_PROMPTS, 7), (128, 8)], ids=["itself", "subset"])
@pytest.mark.parametrize("batch_size", [PROBE_BATCH_FROM, 64])
def test_with_a_predictor_discover_still_gives_the_naive_references_circuit(n_prompts, n_pos, batch_size, monkeypatch):
    model, task = small_model(attn_only=False, seed=1, n_heads=4), random_task(n_prompts=n_prompts, n_pos=n_pos, seed=1)
    layers = probed_layers(monkeypatch)
    circuit = discover(model, task, threshold=0.0005, batch_size=batch_size, progress=False)
    assert layers  # a segment was long enough to probe
    clean_logits = model(task.clean)
    reference = naive_acdc(model, task.clean, task.corrupted, lambda logits: naive_kl(clean_logits, logits, task.positions.tolist()), 0.0005)
    assert decisions(circuit) == (reference["edges"], reference["head_inputs"])


def test_a_run_with_a_predictor_resumed_from_any_save_repeats_the_uninterrupted_ones_passes(tmp_path, monkeypatch):
    model, task, graph, evaluate = long_segment_setting()
    layers = probed_layers(monkeypatch)
    saves = KeepEverySave(fingerprint({}, model, task))
    batch_size = PROBE_BATCH_FROM
    straight = run_acdc(graph, evaluate, 0.0005, batch_size=batch_size, progress=False, checkpointer=saves, predict=evaluate)
    assert layers
    for n, contents in enumerate(saves.files[:-1]):
        (tmp_path / f"{n}.safetensors").write_bytes(contents)
        resumed = run_acdc(graph, evaluate, 0.0005, batch_size=batch_size, progress=False, predict=evaluate,
                           resume=load_checkpoint(tmp_path / f"{n}.safetensors").state)
        assert same_result(resumed, straight)
        assert resumed.forward_passes == straight.forward_passes
