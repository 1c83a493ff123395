"""The method registry: every method is one MethodSpec, and one entry is all a new method needs."""

import dataclasses
import math
from typing import Optional

import pytest
import torch
from factories import random_task, small_model

from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine import AcdcError, discover, load_circuit
from acdc_engine.core import choices
from acdc_engine.commands.discover import CONF_DIR
from acdc_engine.methods import METHODS, CircuitSelection, MethodInput, MethodOutcome, MethodSpec
from acdc_engine.methods.eap import select_edges
from acdc_engine.formats.circuit_file import circuit_to_dict
from acdc_engine.formats.circuit_file import save_circuit


@dataclasses.dataclass
class RandomRankingParams:
    top_n: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.top_n < 0:
            raise AcdcError(f"top_n must be >= 0, got {self.top_n}")


@dataclasses.dataclass
class RandomRankingConfig(RandomRankingParams):
    name: str = "random-ranking"
    metric: Optional[choices.Metric] = None
    ablation: choices.Ablation = choices.Ablation.resample


def random_ranking(inputs: MethodInput, params: RandomRankingParams) -> MethodOutcome:
    """A baseline method: random scores, the top_n edges by them."""
    graph = inputs.graph
    scores = torch.rand(graph.edge_exists.shape, generator=torch.Generator().manual_seed(params.seed), dtype=torch.float64)
    scores = scores * graph.edge_exists
    heads = graph.full_head_input_mask()
    return MethodOutcome(
        kept=CircuitMask(select_edges(graph, scores, top_n=params.top_n), heads),
        scores=Scores(scores, torch.full(heads.shape, math.nan, dtype=torch.float64)),
        description={"name": "random-ranking", "ablation": inputs.ablation, "top_n": params.top_n, "seed": params.seed},
        threshold=None,
        forward_passes=0,
    )


RANDOM_RANKING = MethodSpec(
    name="random-ranking", params=RandomRankingParams, config=RandomRankingConfig, run=random_ranking,
    selection=lambda params: f"top_n {params.top_n}", circuits=CircuitSelection.SCORES,
)


def test_a_method_registered_with_one_entry_runs_through_discover_and_its_circuit_file_round_trips(monkeypatch, tmp_path):
    monkeypatch.setitem(METHODS, RANDOM_RANKING.name, RANDOM_RANKING)
    circuit = discover(small_model(attn_only=True), random_task(), method="random-ranking", top_n=7, progress=False)
    assert int(circuit.kept.edges.sum()) == 7
    assert circuit.method == {"name": "random-ranking", "ablation": "resample", "top_n": 7, "seed": 0}
    assert circuit.run["forward_passes"] == 5  # the measurement's own: clean, corrupted, full, circuit, empty
    assert set(circuit.metric) == {"name", "full", "circuit", "empty"}
    assert circuit_to_dict(load_circuit(save_circuit(circuit, tmp_path / "c.json")))["edges"] == circuit_to_dict(circuit)["edges"]


def test_a_registered_methods_rules_are_checked_before_the_model_loads(monkeypatch):
    monkeypatch.setitem(METHODS, RANDOM_RANKING.name, RANDOM_RANKING)
    with pytest.raises(AcdcError, match="top_n must be >= 0, got -1"):
        discover("no-such-model", random_task(), method="random-ranking", top_n=-1, progress=False)


@pytest.mark.parametrize("spec", list(METHODS.values()), ids=list(METHODS))
def test_every_shipped_method_has_a_config_file_and_a_schema_that_checks_its_parameters_rules(spec):
    assert (CONF_DIR / "method" / f"{spec.name}.yaml").is_file()
    assert issubclass(spec.config, spec.params)  # the schema's __post_init__ is the parameters'
    names = {f.name for f in dataclasses.fields(spec.config)}
    assert names == {f.name for f in dataclasses.fields(spec.params)} | {"name", "metric", "ablation"}


def test_checkpointing_is_refused_for_a_method_that_does_not_checkpoint(tmp_path):
    with pytest.raises(AcdcError, match="checkpoints are for methods that save their state .ACDC, the learned masks.; method 'eap' takes none"):
        discover(small_model(attn_only=True), random_task(), method="eap", top_n=3, checkpoint=tmp_path / "c.safetensors", progress=False)
