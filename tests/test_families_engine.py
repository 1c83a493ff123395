"""Every supported model family, as a tiny random Hugging Face model saved offline, runs through the
engine exactly: the all-edges pass is the model's own forward pass, random circuits equal the naive
reference's, and exact ACDC equals naive ACDC."""

import pytest
import torch

pytest.importorskip("transformer_lens.model_bridge", reason="the families load through TransformerLens 4's TransformerBridge")

from families import FAMILIES, build_family  # noqa: E402
from naive_eap import naive_gradients, naive_logit_diff_tensor, naive_scores_from_gradients  # noqa: E402
from naive_reference import naive_kl_acdc_kept_edges, naive_patched_logits  # noqa: E402

from acdc_engine.core.mask import CircuitMask
from acdc_engine import discover  # noqa: E402
from acdc_engine.core.graph import build_graph  # noqa: E402
from acdc_engine.models import load_model  # noqa: E402
from acdc_engine.patching import EdgePatcher  # noqa: E402
from acdc_engine.tasks import TaskData  # noqa: E402
from acdc_engine.formats.circuit_file import circuit_to_dict

N_PROMPTS, N_POS = 3, 10


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    build_family(request.param, folder)
    model = load_model("local", path=str(folder), dtype="float64")
    model.folder = folder  # for the command-line test
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(3, model.cfg.d_vocab, (N_PROMPTS, N_POS), generator=g)
    corrupted = torch.randint(3, model.cfg.d_vocab, (N_PROMPTS, N_POS), generator=g)
    return request.param, model, TaskData("random", clean, corrupted, torch.tensor([N_POS - 1]))


def test_the_all_edges_and_all_removed_passes_equal_the_models_own_forward_pass(family):
    _, model, task = family
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
    # the Hugging Face model in float64 keeps some float32 arithmetic (see self_check.TOLERANCE)
    assert patcher.self_check.full <= 1e-5 and patcher.self_check.empty <= 1e-5
    with torch.no_grad():  # against the spec's own plain pass the engine is exact to float64 rounding
        full = patcher.logits(graph.full_mask())
        empty = patcher.logits(graph.empty_mask())
        assert torch.allclose(full, model.forward(task.clean)[:, task.positions], atol=1e-10, rtol=0)
        assert torch.allclose(empty, model.forward(task.corrupted)[:, task.positions], atol=1e-10, rtol=0)


def test_random_circuits_equal_the_naive_reference(family):
    _, model, task = family
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions, split_input=graph.shape.split_input)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        edges = graph.edge_exists & (torch.rand(graph.edge_exists.shape, generator=g) < 0.6)
        heads = torch.rand(graph.full_head_input_mask().shape, generator=g) < 0.8
        removed = [f"{graph.senders[s]}->{graph.receivers[r]}" for s, r in (graph.edge_exists & ~edges).nonzero().tolist()]
        cut = [f"a{layer}.h{head}<{'qkv'[x]}>" for layer, head, x in (~heads).nonzero().tolist()]
        reference = naive_patched_logits(model, task.clean, task.corrupted, removed, cut)[:, task.positions]
        assert torch.allclose(patcher.logits(CircuitMask(edges, heads)), reference, atol=1e-9, rtol=0)


def test_exact_acdc_equals_naive_acdc(family):
    _, model, task = family
    threshold = 0.02
    circuit = discover(model, task, threshold=threshold, progress=False, batch_size=4)
    kept = {name for name, edge in circuit_to_dict(circuit)["edges"].items() if edge["kept"]}
    assert kept == naive_kl_acdc_kept_edges(model, task.clean, task.corrupted, task.positions.tolist(), threshold)


def test_the_command_line_runs_the_familys_local_folder_with_a_jsonl_task(family, tmp_path, monkeypatch):
    import json
    import sys

    from families import PROMPT_LENGTH, WORDS

    from acdc_engine.commands import discover as cli

    name, model, _ = family
    folder = model.folder
    words = WORDS[: PROMPT_LENGTH - 1]
    records = tmp_path / "records.jsonl"
    records.write_text(
        json.dumps({"clean": " ".join(words), "corrupted": " ".join(reversed(words))}) + "\n"
        + json.dumps({"clean": " ".join(words[1:] + words[:1]), "corrupted": " ".join(words[2:] + words[:2])}) + "\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "")
    monkeypatch.setattr(sys, "argv", [
        "acdc-discover", "model=local", f"model.path={folder}", "task=jsonl", f"task.path={records}",
        "method.threshold=0.02", "progress=false", f"hydra.run.dir={tmp_path / 'run'}",
    ])
    cli.main()
    circuit = json.loads((tmp_path / "run" / "circuit.json").read_text())
    assert circuit["task"]["name"] == "jsonl" and circuit["task"]["n_prompts"] == 2
    assert len(circuit["edges"]) == build_graph(model.cfg).n_edges
    assert circuit["run"]["self_check"]["max_abs_logit_diff_full"] <= circuit["run"]["self_check"]["tolerance"]


def test_eap_scores_equal_autograd_at_the_receivers_hooks(family):
    """The gradient pass (a layer's q/k/v as one product, their gradients in factors through the
    norm) on every family's norms, q/k norms, grouped heads and post-norms."""
    name, model, task = family
    g = torch.Generator().manual_seed(2)
    answers, wrong = (torch.randint(3, model.cfg.d_vocab, (N_PROMPTS, 1), generator=g) for _ in range(2))
    task = TaskData("random", task.clean, task.corrupted, task.positions, answers, wrong)
    circuit = discover(model, task, method="eap", metric="logit_diff", top_n=4, progress=False)
    gradients = naive_gradients(model, task.clean, naive_logit_diff_tensor(answers, wrong, task.positions.tolist()))
    naive = naive_scores_from_gradients(model, task.clean, task.corrupted, [gradients])
    graph = build_graph(model.cfg)
    scale = max(abs(v) for v in naive.values())
    assert scale > 1e-3  # not vacuous
    for edge, value in naive.items():
        assert float(circuit.scores.edges[graph.parse_edge(edge)]) == pytest.approx(value, rel=1e-5, abs=1e-7 * scale), (name, edge)
