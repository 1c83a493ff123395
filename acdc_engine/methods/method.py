"""What a circuit-discovery method is to the engine: its registry entry, what it runs on, what it returns.

Every method is one ``MethodSpec`` in ``acdc_engine.methods.METHODS``. ``discover`` looks the method
up by name, has the entry check its parameters (``MethodSpec.parse``), builds the setting every
method shares (graph, patcher, metric: a ``MethodInput``), calls ``MethodSpec.run``, and prunes and
measures the ``MethodOutcome`` the same way whatever the method. The command line registers each
entry's ``config`` as the Hydra schema of ``conf/method/<name>.yaml`` and passes that group's keys
through to ``discover``. docs/design.md shows a new method plugged in with one entry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph
from acdc_engine.core.patcher import Evaluate, Patcher
from acdc_engine.measure.metrics import Metric
from acdc_engine.patching.memory import MemoryProfile

from acdc_engine.core.values import check_values

RUN_KEYS = ("name", "metric", "ablation")
"""Keys of a method's Hydra config that ``discover`` takes as its own arguments, not the method's."""


class Checkpointing(Protocol):
    """Where a method that checkpoints saves its state (``acdc_engine.methods.checkpoint.Checkpointer`` is
    one); the methods know only this interface."""

    path: Path

    def due(self, visited: int) -> bool:
        """Whether the state after ``visited`` steps (ACDC: candidates visited) should be saved now."""

    def save(self, state: Any) -> None:
        """Write ``state`` (ACDC: an ``AcdcState``) so that a later run can continue from it."""


class CircuitSelection(Enum):
    """How a method's circuits of different sizes are made, for sweeps, curves and MIB submissions.

    THRESHOLD: one run per circuit; a threshold decides the size (exact ACDC), so circuits of other
    sizes come from runs at other thresholds. SCORES: one run scores every edge; a circuit of any
    size is the top edges by |score| (EAP, EAP-IG)."""

    THRESHOLD = "threshold"
    SCORES = "scores"


@dataclass(frozen=True)
class MethodInput:
    """The setting a method runs in, built by ``discover`` (``acdc_engine.measure.measurement``).

    metric: circuit logits [C, n_prompts, P, d_vocab] -> [C]; evaluate: the patched pass and the
    metric in one call (``Evaluate``; shared through a ``MetricCache`` in a sweep). resume and
    checkpointer are set only for a method that checkpoints (``MethodSpec.checkpoints``): the state
    saved by an earlier run to continue from (ACDC: ``AcdcState``), and where to save its own.
    predict: an estimate of ``evaluate`` (``Measurement.predictor``: the metric on a few of the
    prompts, or on tiny tasks ``evaluate`` itself) that a method may use to plan its passes, never
    to decide; None: none.
    """

    graph: Graph
    patcher: Patcher
    metric: Metric
    metric_name: str
    evaluate: Evaluate
    ablation: str
    progress: bool = True
    resume: Any = None
    checkpointer: Checkpointing | None = None
    predict: Evaluate | None = None


@dataclass
class MethodOutcome:
    """What a method found, before pruning to input-to-logits paths.

    kept: bool masks (``CircuitMask``: edges [S, R], head inputs [L, H, 3]), True = kept.
    scores: float64 in the same layout (``Scores``), NaN where not measured.
    description: the circuit file's ``method`` block (``name`` and ``ablation`` first).
    threshold: the circuit file's ``threshold`` (what the scores were cut at; None: no threshold).
    forward_passes, backward_passes: the passes the method itself ran.
    run_block: further entries of the circuit file's ``run`` block (ACDC: candidates_tested, batch_size).
    """

    kept: CircuitMask
    scores: Scores
    description: dict[str, Any]
    threshold: float | None
    forward_passes: int
    backward_passes: int = 0
    run_block: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """A method's registry entry.

    name: the ``method=`` choice and the circuit file's ``method.name``.
    params: a dataclass of the method's own parameters as ``discover`` takes them (keyword
        arguments), with their defaults; its ``__post_init__`` is the one place their rules are
        checked (AcdcError naming the parameter).
    config: the Hydra schema of ``conf/method/<name>.yaml``: ``params``' fields (a subclass, so the
        same ``__post_init__`` checks the composed config) and ``RUN_KEYS``.
    run: ``run(MethodInput, params) -> MethodOutcome``.
    selection: the command line's words for what picked the edges, e.g. "threshold 0.05".
    circuits: how circuits of other sizes are made (``CircuitSelection``).
    checkpoints: whether the method saves its state and resumes (``discover(checkpoint=...)``).
    review: called with the outcome, the method's input and the measured metric block
        (``{"name", "full", "circuit", "empty"}``) once the circuit is measured, for warnings
        that need those values; None: nothing to review.
    memory: what the method holds beside the patcher's tables (``MemoryProfile``), for the memory
        check before a run (``acdc_engine.patching.memory.method_bytes``).
    """

    name: str
    params: type
    config: type
    run: Callable[[MethodInput, Any], MethodOutcome]
    selection: Callable[[Any], str]
    circuits: CircuitSelection
    checkpoints: bool = False
    review: Callable[[MethodOutcome, MethodInput, Mapping[str, Any]], None] | None = None
    memory: MemoryProfile = MemoryProfile.PATCHED_PASS

    def parse(self, given: Mapping[str, Any]) -> Any:
        """The method's parameters from keyword arguments (defaults for the rest); AcdcError on a
        parameter the method does not take, a value not of its field's type (``batch_size=1.5``,
        ``threshold=True``), or a value its rules refuse."""
        names = [f.name for f in dataclasses.fields(self.params)]
        unknown = [key for key in given if key not in names]
        if unknown:
            raise AcdcError(
                f"method '{self.name}' takes no parameter '{unknown[0]}'; its parameters are {', '.join(names)}"
            )
        check_values(self.params, given, "", ranges=False)  # the types; __post_init__ checks the ranges
        return self.params(**given)
