"""Prompts of many lengths: right-padded batches with each prompt's length, read at each prompt's
last real token, the padding never read and never averaged."""

from types import SimpleNamespace

import pytest
import torch
from factories import quick_params, small_model
from naive_reference import naive_acdc

from acdc_engine import AcdcError, TaskData, discover
from acdc_engine.formats.circuit_file import circuit_to_dict
from acdc_engine.measure.measurement import Measurement
from acdc_engine.methods import METHODS, CircuitSelection
from acdc_engine.resolve import resolve_task

PAD = 0


def ragged_task(lengths, corrupted_lengths=None, d_vocab=20, seed=0) -> TaskData:
    """Random prompts of the given lengths (corrupted: ``corrupted_lengths``, default the same),
    right-padded with ``PAD`` to the longest, each read at its last real token."""
    corrupted_lengths = corrupted_lengths or lengths
    g = torch.Generator().manual_seed(seed)
    width = max(*lengths, *corrupted_lengths)

    def rows(counts):
        out = torch.full((len(counts), width), PAD)
        for i, n in enumerate(counts):
            out[i, :n] = torch.randint(1, d_vocab, (n,), generator=g)
        return out

    clean, corrupted = rows(lengths), rows(corrupted_lengths)
    answers = torch.randint(1, d_vocab, (len(lengths), 1), generator=g)
    wrong = torch.randint(1, d_vocab, (len(lengths), 1), generator=g)
    return TaskData("ragged", clean, corrupted, answers=answers, wrong_answers=wrong,
                    lengths=torch.tensor(lengths), corrupted_lengths=torch.tensor(corrupted_lengths))


def per_prompt_kl(clean_logits, lengths):
    """KL(clean || circuit) at each prompt's last real token, averaged over prompts (naive)."""
    def metric(logits):
        total = 0.0
        for i, n in enumerate(lengths):
            p = clean_logits[i, n - 1].log_softmax(-1)
            q = logits[i, n - 1].log_softmax(-1)
            total += float((p.exp() * (p - q)).sum())
        return total / len(lengths)
    return metric


def kept(circuit):
    data = circuit_to_dict(circuit)
    return ({n: e["kept"] for n, e in data["edges"].items()}, {n: e["kept"] for n, e in data["head_inputs"].items()})


LENGTHS = [7, 5, 6, 4, 7, 5]
SHORTER_CORRUPTIONS = [7, 4, 6, 4, 5, 5]  # some corrupted prompts shorter than their clean prompt


def test_by_default_each_prompt_is_read_at_its_last_real_token():
    task = ragged_task(LENGTHS)
    assert task.positions.tolist() == [[n - 1] for n in LENGTHS]
    assert task.padded and task.n_positions == 1


def test_negative_positions_count_back_from_each_prompts_last_real_token():
    base = ragged_task(LENGTHS)
    task = TaskData("t", base.clean, base.corrupted, positions=[-2, -1], lengths=base.lengths)
    assert task.positions.tolist() == [[n - 2, n - 1] for n in LENGTHS]


def test_a_task_without_padding_keeps_one_set_of_positions_for_every_prompt():
    task = ragged_task([6, 6, 6])
    assert task.positions.tolist() == [5] and not task.padded


def test_a_metric_position_in_the_padding_is_refused():
    base = ragged_task(LENGTHS)
    with pytest.raises(AcdcError, match=r"metric position 6 of prompt 1 lies in its right padding \(the prompt has 5 real tokens\)"):
        TaskData("t", base.clean, base.corrupted, positions=[6], lengths=base.lengths)


@pytest.mark.parametrize("model_name", ["small-mlp", "llama"])
def test_full_model_logits_at_the_read_positions_equal_the_model_run_on_each_prompt_alone(model_name, attribution_models):
    model = small_model(False, seed=1) if model_name == "small-mlp" else attribution_models("llama")[0]
    task = ragged_task(LENGTHS, SHORTER_CORRUPTIONS, d_vocab=min(20, model.cfg.d_vocab), seed=1)
    measurement = Measurement(model, task, "kl")
    logits = measurement.patcher.logits(measurement.graph.full_mask())  # [n, 1, V]
    for i, n in enumerate(LENGTHS):
        alone = model.source_logits(task.clean[i : i + 1, :n]) if model.source is not None else model(task.clean[i : i + 1, :n])
        torch.testing.assert_close(logits[i, 0], alone[0, n - 1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("ablation", ["resample", "zero", "mean"])
@pytest.mark.parametrize("attn_only", [True, False], ids=["attn-only", "mlp"])
def test_exact_acdc_on_a_variable_length_task_equals_the_naive_reference(attn_only, ablation):
    model = small_model(attn_only, seed=5)
    corrupted_lengths = SHORTER_CORRUPTIONS if ablation != "mean" else [7, 5, 7, 6, 4, 5]
    task = ragged_task(LENGTHS, corrupted_lengths, seed=5)
    threshold = 0.002 if ablation == "mean" else 0.01
    circuit = discover(model, task, metric="kl", threshold=threshold, ablation=ablation, progress=False)
    with torch.no_grad():
        clean_logits = model(task.clean)
    reference = naive_acdc(
        model, task.clean, task.corrupted, per_prompt_kl(clean_logits, LENGTHS), threshold, ablation,
        corrupted_lengths=corrupted_lengths,
    )
    edges, heads = kept(circuit)
    assert (edges, heads) == (reference["edges"], reference["head_inputs"])
    assert 0 < sum(edges.values()) < len(edges)


def test_acdc_on_a_variable_length_task_does_not_depend_on_the_batch_size():
    model, task = small_model(False, seed=6), ragged_task(LENGTHS, SHORTER_CORRUPTIONS, seed=6)
    one = discover(model, task, metric="kl", threshold=0.005, batch_size=1, progress=False)
    many = discover(model, task, metric="kl", threshold=0.005, batch_size=16, progress=False)
    assert kept(one) == kept(many)


@pytest.mark.parametrize("method", ["eap", "eap-ig", "eap-ig-activations", "clean-corrupted", "exact"])
def test_attribution_on_a_variable_length_task_equals_each_length_group_alone_combined(method):
    model = small_model(False, seed=7)
    task = ragged_task(LENGTHS, seed=7)
    scores = discover(model, task, method=method, metric="logit_diff", top_n=0, progress=False).scores.edges
    combined = torch.zeros_like(scores)
    for n in sorted(set(LENGTHS)):
        group = [i for i, length in enumerate(LENGTHS) if length == n]
        alone = TaskData("group", task.clean[group, :n], task.corrupted[group, :n],
                         answers=task.answers[group], wrong_answers=task.wrong_answers[group])
        group_scores = discover(model, alone, method=method, metric="logit_diff", top_n=0, progress=False).scores.edges
        combined += group_scores * len(group) / len(LENGTHS)
    torch.testing.assert_close(scores, combined, rtol=1e-7, atol=1e-10)


def test_mean_ablation_averages_the_corrupted_prompts_real_tokens_only():
    model = small_model(False, seed=8)
    task = ragged_task(LENGTHS, [7, 5, 7, 6, 4, 5], seed=8)
    patcher = Measurement(model, task, "kl", ablation="mean").patcher
    plain = patcher.baseline.corrupted_run.sender_out  # [n, pos, S, d]
    for p in range(task.clean.shape[1]):
        real = [i for i, n in enumerate(task.corrupted_lengths.tolist()) if n > p]
        expected = sum(plain[i, p] for i in real) / len(real)
        torch.testing.assert_close(patcher.ablated_sender_out[0, p], expected, rtol=1e-12, atol=1e-12)


def test_mean_ablation_is_refused_where_no_corrupted_prompt_has_a_real_token():
    task = ragged_task([7, 5, 6], [5, 5, 6])
    with pytest.raises(AcdcError, match=r"mean ablation .* positions 6 \.\. 6 of the longest clean prompts have none"):
        discover(small_model(True), task, ablation="mean", progress=False)


def tokenizer_model(pad_token_id=PAD):
    """What resolve_task reads of a model: its config and its tokenizer's pad token."""
    return SimpleNamespace(cfg=SimpleNamespace(d_vocab=20, n_ctx=16), tokenizer=SimpleNamespace(pad_token_id=pad_token_id))


def test_right_padded_prompts_without_lengths_are_refused_in_one_line():
    task = ragged_task(LENGTHS)
    unmarked = {"clean": task.clean, "corrupted": task.corrupted}
    with pytest.raises(AcdcError, match=r"clean prompt 1 is read at position 6, which is right padding .* in 4 of 6 prompts"):
        resolve_task(tokenizer_model(), unmarked)


def test_prompts_given_with_lengths_are_not_taken_for_padding():
    task = ragged_task(LENGTHS)
    resolved = resolve_task(tokenizer_model(), {"clean": task.clean, "corrupted": task.corrupted, "lengths": task.lengths})
    assert torch.equal(resolved.lengths, task.lengths)


def test_a_task_dict_takes_eap_igs_attention_mask_and_input_lengths():
    task = ragged_task(LENGTHS)
    mask = (torch.arange(task.clean.shape[1])[None] < task.lengths[:, None]).long()
    from_mask = resolve_task(tokenizer_model(), {"clean": task.clean, "corrupted": task.corrupted, "attention_mask": mask})
    from_lengths = resolve_task(tokenizer_model(), {"clean": task.clean, "corrupted": task.corrupted, "input_lengths": task.lengths})
    assert from_mask.lengths.tolist() == from_lengths.lengths.tolist() == LENGTHS
    assert from_mask.positions.tolist() == [[n - 1] for n in LENGTHS]


def test_discover_takes_a_task_dict_with_eap_igs_padding_fields():
    task = ragged_task(LENGTHS)
    fields = {"clean": task.clean, "corrupted": task.corrupted, "input_lengths": task.lengths}
    circuit = discover(small_model(True), fields, threshold=0.01, progress=False)
    assert circuit.task["lengths"] == LENGTHS


def test_a_left_padded_attention_mask_is_refused():
    task = ragged_task([4, 4])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    with pytest.raises(AcdcError, match="attention_mask is not right padding"):
        resolve_task(tokenizer_model(), {"clean": task.clean, "corrupted": task.corrupted, "attention_mask": mask})


def test_lengths_that_disagree_with_the_attention_mask_are_refused():
    task = ragged_task([4, 3])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with pytest.raises(AcdcError, match="lengths and attention_mask give different prompt lengths"):
        resolve_task(tokenizer_model(), {"clean": task.clean, "corrupted": task.corrupted, "attention_mask": mask, "lengths": [4, 4]})


def test_every_method_runs_on_a_variable_length_task():
    model, task = small_model(False, seed=9), ragged_task(LENGTHS, SHORTER_CORRUPTIONS, seed=9)
    for method, spec in METHODS.items():
        size = {"top_n": 10} if spec.circuits is CircuitSelection.SCORES else {"threshold": 0.01}
        circuit = discover(model, task, method=method, metric="logit_diff", progress=False, **size, **quick_params(method))
        assert circuit.task["lengths"] == LENGTHS and torch.isfinite(torch.tensor(circuit.metric["circuit"]))


def test_a_variable_length_run_killed_and_resumed_ends_with_the_uninterrupted_circuit(tmp_path):
    from test_resume import in_child_until_killed, kill_after_save

    model, task = small_model(False, seed=6), ragged_task(LENGTHS, SHORTER_CORRUPTIONS, seed=6)
    run = dict(metric="kl", threshold=0.005, batch_size=4, progress=False)
    uninterrupted = kept(discover(model, task, **run))
    checkpoint = tmp_path / "checkpoint.safetensors"

    def body():
        kill_after_save(lambda state: state.visited > 20)
        discover(model, task, **run, checkpoint=checkpoint, checkpoint_every=1)

    in_child_until_killed(body)
    assert kept(discover(model, task, **run, checkpoint=checkpoint, checkpoint_every=1)) == uninterrupted


def test_resume_with_other_prompt_lengths_is_refused_naming_them(tmp_path):
    model, task = small_model(False, seed=6), ragged_task(LENGTHS, seed=6)
    checkpoint = tmp_path / "checkpoint.safetensors"
    discover(model, task, metric="kl", threshold=0.005, progress=False, checkpoint=checkpoint)
    shorter = TaskData("ragged", task.clean, task.corrupted, answers=task.answers, wrong_answers=task.wrong_answers,
                       lengths=task.lengths - (task.lengths > 4).long())
    with pytest.raises(AcdcError, match=r"data differs: the task's positions, lengths, corrupted_lengths"):
        discover(model, shorter, metric="kl", threshold=0.005, progress=False, checkpoint=checkpoint)
