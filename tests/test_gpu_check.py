"""experiments/gpu_check.py, the one script a session runs on a lent GPU: its judging helpers catch
the differences they are for, and its cheap steps pass on the CPU (the whole dry run,
``--device cpu --dry-run``, takes minutes and is run by hand)."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "experiments" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def eap_circuit(gpu_check):
    return gpu_check.run_method("eap", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is there")
def test_without_a_gpu_it_refuses_with_exit_status_2(gpu_check, capsys):
    with pytest.raises(SystemExit) as exited:
        gpu_check.select_device("cuda")
    assert exited.value.code == 2 and "--device cpu --dry-run" in capsys.readouterr().err


def test_every_registered_method_is_judged_as_the_docstring_says(gpu_check):
    from acdc_engine.methods import METHODS

    kinds = {name: gpu_check.method_kind(name) for name in METHODS}
    assert {n for n, k in kinds.items() if k == "learned"} == {"edge-pruning", "ugs", "subnetwork-probing"}
    assert {n for n, k in kinds.items() if k == "decisions"} == {"acdc", "acdc-eap", "acdc-nodes", "exact", "exact-nodes"}
    for name in ("eap", "eap-ig", "eap-ig-activations", "clean-corrupted", "information-flow-routes", "eap-nodes", "eap-ig-neurons"):
        assert kinds[name] == "scores"


def with_scores(circuit, edges: torch.Tensor):
    return dataclasses.replace(circuit, scores=dataclasses.replace(circuit.scores, edges=edges))


def test_the_method_verdict_passes_the_same_circuit_and_catches_what_each_kind_is_checked_for(gpu_check, eap_circuit):
    same = gpu_check.compare_circuits(eap_circuit, eap_circuit)
    assert all(gpu_check.method_verdict(kind, same)[0] for kind in ("scores", "decisions", "learned"))

    scale = float(eap_circuit.scores.edges.nan_to_num().abs().max())
    off = with_scores(eap_circuit, eap_circuit.scores.edges + 1e-3 * scale)  # 10x the score tolerance
    found = gpu_check.compare_circuits(eap_circuit, off)
    assert not gpu_check.method_verdict("scores", found)[0] and gpu_check.method_verdict("learned", found)[0]
    within = gpu_check.compare_circuits(eap_circuit, with_scores(eap_circuit, eap_circuit.scores.edges * (1 + 1e-6)))
    assert gpu_check.method_verdict("scores", within)[0]

    flipped = eap_circuit.kept.edges.clone()
    flipped[tuple(eap_circuit.graph.edge_exists.nonzero()[0].tolist())] ^= True
    found = gpu_check.compare_circuits(eap_circuit, dataclasses.replace(eap_circuit, kept=dataclasses.replace(eap_circuit.kept, edges=flipped)))
    assert found["kept_differing"] == 1
    assert gpu_check.method_verdict("scores", found)[0] and not gpu_check.method_verdict("decisions", found)[0]

    diverged = eap_circuit.scores.edges.clone()
    diverged[tuple(eap_circuit.graph.edge_exists.nonzero()[0].tolist())] = float("inf")
    assert not gpu_check.method_verdict("learned", gpu_check.compare_circuits(eap_circuit, with_scores(eap_circuit, diverged)))[0]


def test_rank_correlation_and_top_k_overlap(gpu_check):
    a = torch.tensor([0.5, -3.0, 2.0, 0.1, -1.0], dtype=torch.float64)
    assert gpu_check.spearman(a, 2 * a + 1) == pytest.approx(1.0)
    assert gpu_check.spearman(a, -a) == pytest.approx(-1.0)
    assert gpu_check.top_k_overlap(a, a, 2) == 1.0
    assert gpu_check.top_k_overlap(a, torch.tensor([3.0, 0.0, 0.0, 2.0, 0.0], dtype=torch.float64), 2) == 0.0


def test_the_top_layers_prefix_counts_the_visiting_order_from_the_case_config_alone(gpu_check):
    import benchmark

    from acdc_engine.core.graph import build_graph
    from acdc_engine.methods.acdc import visiting_order

    graph = build_graph(benchmark.build("autocircuit-shape")[0].cfg)  # 2 layers: the top two are all of it
    assert gpu_check.top_layers_prefix("autocircuit-shape") == len(visiting_order(graph))
    assert 0 < gpu_check.top_layers_prefix("autocircuit-shape", layers=1) < len(visiting_order(graph))


def test_the_cheap_checks_pass_on_the_cpu(gpu_check):
    assert gpu_check.bf16_patching_check("cpu")["passed"]
    assert gpu_check.method_check("acdc", "cpu")["passed"]
    lines = gpu_check.bf16_attribution_check("default", "cpu")
    assert [line["method"] for line in lines] == ["eap", "eap-ig"] and all(line["passed"] for line in lines)
