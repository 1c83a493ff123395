"""ACDC, EAP and EAP-IG side by side on one model and task: ROC against a truth, faithfulness curves;
and any MIB submission (an importances file, or a folder of budgeted circuits) scored as MIB scores it.

``compare_methods`` runs each method as its registry entry says its circuits of different sizes
are made (``CircuitSelection``):
  THRESHOLD (acdc)       a threshold sweep (``sweep.acdc_threshold_sweep``, shared evaluations), one
                         circuit per threshold: one ROC point and one faithfulness point each;
  SCORES (eap, eap-ig)   one scoring run: the ROC of the ranking by |score|, and MIB's CPR and CMD
                         (``faithfulness.mib_scores``: CPR from the top-k circuits of the signed
                         ranking, CMD from those of the absolute one, unless told otherwise).
``score_submission`` measures what MIB's evaluator reads from a task folder (``submission_files``):
one importances file (EAP-IG's graph with a score on every edge; CPR and CMD as for SCORES) or 9
circuit files ``circuit_<k>.json`` / ``.pt``, one for each k of ``SUBMISSION_FRACTIONS``
(``faithfulness.faithfulness_of_budgeted_circuits``).
Every circuit's faithfulness is measured with one metric (``metric``, the task's default when None),
so the curves compare. The gradient methods score with ``gradient_metric``: by default the same
metric, except for distances from the full model (``kl``, ``l2``), whose gradient vanishes at the
clean model: then they score with ``logit_diff`` when the task has answers and wrong answers
(otherwise with the distance: EAP-IG takes its gradients away from the clean model and works; EAP
warns that its scores are noise).

Default thresholds: 0 and 16 values spaced evenly on a log scale from 1e-4 to 1 times the metric's
range |m(empty) - m(full)|, so the sweep spans circuits from nearly the full graph to nearly empty.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from acdc_engine.formats.atomic_files import atomic_write_bytes
from acdc_engine.core.circuit import METHOD_NAMES, Circuit
from acdc_engine.core.errors import AcdcError
from acdc_engine.core.graph import Graph
from acdc_engine.core.progress import progress_bar
from acdc_engine.evaluation.faithfulness import (
    MIB_CMD_RANKING,
    MIB_CPR_RANKING,
    MIB_FRACTIONS,
    CircuitEvaluator,
    FaithfulnessCurve,
    MibScores,
    Ranking,
    faithfulness_of_budgeted_circuits,
    faithfulness_of_circuits,
    mib_edge_count,
    mib_node_scores,
    mib_scores,
)
from acdc_engine.evaluation.roc import LEVELS, RocCurve, check_same_graph, roc_from_circuits, roc_from_scores
from acdc_engine.evaluation.sweep import ThresholdSweep, acdc_threshold_sweep
from acdc_engine.formats.mib import SUBMISSION_FRACTIONS
from acdc_engine.formats.tables import csv_text, markdown_table, number
from acdc_engine.resolve import resolve_task
from acdc_engine.methods import CircuitSelection, method_spec
from acdc_engine.tasks import TaskData

COMPARED_METHODS = ("acdc", "eap", "eap-ig")
"""The methods compared by default: ACDC as a threshold sweep, EAP and EAP-IG as rankings (module
docstring); any registered method may be named."""


@dataclass
class MethodResult:
    """One method's (or submission's) outcome.

    curves: its faithfulness curves (a sweep's one; a ranking's per ranking, CPR's first);
    mib: MIB's CPR and CMD, each with its curve (None for a threshold sweep);
    roc: {"edge": RocCurve, "node": RocCurve} when a truth was given;
    seconds: the method's own time (the sweep's, the scoring run's, or measuring a submission);
    circuits: the ACDC sweep's circuits (empty otherwise); cache: the sweep's MetricCache counters.
    """

    method: str
    curves: list[FaithfulnessCurve]
    seconds: float
    mib: MibScores | None = None
    roc: dict[str, RocCurve] = field(default_factory=dict)
    circuits: list[Circuit] = field(default_factory=list)
    cache: dict[str, int] | None = None

    def label(self, curve: FaithfulnessCurve) -> str:
        """The method's display name, with the ranking a ranking's curve comes from."""
        name = METHOD_NAMES.get(self.method, self.method)
        return f"{name}, {curve.ranking.value} ranking" if curve.ranking is not None else name


def _mib_cells(mib: MibScores | None) -> list[str]:
    """The CPR and CMD cells: each value with what its curve comes from ("0.490 (signed)"); "–" for none."""
    if mib is None:
        return ["–", "–"]
    return [f"{number(mib.cpr)} ({mib.cpr_curve.basis})", f"{number(mib.cmd)} ({mib.cmd_curve.basis})"]


@dataclass
class MethodComparison:
    """Every method's result on one (model, task), and the setting they ran in."""

    setting: dict[str, Any]
    results: dict[str, MethodResult]

    def table(self) -> str:
        """A Markdown table: method, edge and node AUC (with a truth), CPR and CMD each with the
        ranking (or circuits) it comes from, circuits measured, seconds."""
        has_roc = any(r.roc for r in self.results.values())
        header = ["method"] + (["edge AUC", "node AUC"] if has_roc else []) + ["CPR", "CMD", "circuits", "seconds"]
        rows = []
        for method, r in self.results.items():
            cells = [METHOD_NAMES.get(method, method)]
            if has_roc:
                cells += [f"{r.roc[level].auc:.3f}" for level in LEVELS]
            cells += _mib_cells(r.mib) + [str(sum(len(curve.edges) for curve in r.curves)), f"{r.seconds:.2f}"]
            rows.append(cells)
        return markdown_table(header, rows)

    def roc_rows(self) -> list[dict[str, Any]]:
        return [
            {"method": method, "level": level, "cut": p.cut, "fpr": p.fpr, "tpr": p.tpr, "size": p.size, "tp": p.tp, "fp": p.fp}
            for method, r in self.results.items()
            for level, curve in r.roc.items()
            for p in curve.points
        ]

    def faithfulness_rows(self) -> list[dict[str, Any]]:
        """One row per circuit measured; ``ranking``: the curve's basis (``FaithfulnessCurve.basis``);
        ``size``: edges / N (MIB's edge count)."""
        rows = []
        for method, r in self.results.items():
            for curve in r.curves:
                for cut, edges, value, f in zip(curve.cuts, curve.edges, curve.metric, curve.faithfulness):
                    rows.append({"method": method, "ranking": curve.basis, "cut": cut, "edges": edges,
                                 "size": edges / curve.total_edges, "metric": value, "faithfulness": f})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "methods": {
                method: {
                    "seconds": r.seconds,
                    "roc": {level: {"auc": c.auc, "points": [p.__dict__ for p in c.points]} for level, c in r.roc.items()},
                    "faithfulness": {
                        "cpr": r.mib.cpr if r.mib else None,
                        "cpr_ranking": r.mib.cpr_curve.basis if r.mib else None,
                        "cmd": r.mib.cmd if r.mib else None,
                        "cmd_ranking": r.mib.cmd_curve.basis if r.mib else None,
                        "points": [row for row in self.faithfulness_rows() if row["method"] == method],
                    },
                    **({"cache": r.cache} if r.cache is not None else {}),
                }
                for method, r in self.results.items()
            },
        }

    def write(self, folder: str | Path) -> list[Path]:
        """roc.csv/.json (with a truth), faithfulness.csv/.json, and their PNG and SVG plots."""
        from acdc_engine.evaluation import plots as plotting

        folder = Path(folder)
        written = []
        data = self.to_dict()
        has_roc = any(r.roc for r in self.results.values())
        if has_roc:
            written.append(atomic_write_bytes(folder / "roc.csv", csv_text(self.roc_rows()).encode()))
            roc_json = {"setting": self.setting, **{m: d["roc"] for m, d in data["methods"].items()}}
            written.append(atomic_write_bytes(folder / "roc.json", (json.dumps(roc_json, indent=1) + "\n").encode()))
        written.append(atomic_write_bytes(folder / "faithfulness.csv", csv_text(self.faithfulness_rows()).encode()))
        faith_json = {"setting": self.setting, **{m: d["faithfulness"] for m, d in data["methods"].items()}}
        written.append(atomic_write_bytes(folder / "faithfulness.json", (json.dumps(faith_json, indent=1) + "\n").encode()))
        title = f"{self.setting['model']} on {self.setting['task']}"
        if has_roc:
            curves = {METHOD_NAMES.get(m, m): r.roc for m, r in self.results.items()}
            written += plotting.plot_roc(curves, folder / "roc", title=title)
        curves = {r.label(curve): curve for r in self.results.values() for curve in r.curves}
        written += plotting.plot_faithfulness(curves, folder / "faithfulness", title=title, metric=self.setting["metric"])
        return written


def check_compared_methods(methods: Sequence[str]) -> None:
    """AcdcError unless ``methods`` is a non-empty list of registered methods."""
    from acdc_engine.methods import METHODS

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise AcdcError(f"unknown or no methods {list(unknown or methods)}; choose from {', '.join(METHODS)}")


def default_thresholds(metric_range: float, n: int = 16) -> list[float]:
    """0, then ``n`` thresholds from 1e-4 to 1 times ``metric_range``, evenly spaced on a log scale."""
    return [0.0] + [float(t) for t in np.geomspace(1e-4, 1.0, n) * abs(metric_range)]


DISTANCE_METRICS = ("kl", "l2")  # minimal, with zero gradient, at the full model


def gradient_metric_for(task: TaskData, metric: str) -> str:
    """The metric the gradient methods score with when none is given (module docstring)."""
    if metric not in DISTANCE_METRICS:
        return metric
    return "logit_diff" if task.answers is not None and task.wrong_answers is not None else metric


def compare_methods(
    model: torch.nn.Module,
    task: TaskData | str,
    *,
    truth: Circuit | None = None,
    methods: Sequence[str] = COMPARED_METHODS,
    thresholds: Sequence[float] | None = None,
    metric: str | None = None,
    gradient_metric: str | None = None,
    ablation: str = "resample",
    split_input: bool | None = None,
    steps: int | None = None,
    fractions: Sequence[float] = MIB_FRACTIONS,
    cpr_ranking: Ranking | str = MIB_CPR_RANKING,
    cmd_ranking: Ranking | str = MIB_CMD_RANKING,
    batch_size: int | None = None,
    task_params: dict[str, Any] | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> MethodComparison:
    """Run ``methods`` on (model, task) and measure them (module docstring).

    Args:
        truth: a ground-truth circuit of this model's graph; None: no ROC.
        thresholds: the threshold methods' thresholds; None: ``default_thresholds`` of the metric's range.
        metric: the metric ACDC prunes with and every circuit is measured with; None: the task's.
        gradient_metric: the metric EAP and EAP-IG score with; None: see the module docstring.
        split_input: None: the truth's (False without a truth).
        steps: the ``steps`` of every method that takes them (EAP-IG's interpolation steps, a
            learned-mask method's training steps); None: each method's own default.
        fractions: the k of MIB's top-k circuits.
        cpr_ranking, cmd_ranking: the rankings CPR and CMD come from (MIB's: signed, absolute).
        progress: a bar over the methods, and each method's own (``acdc_engine.core.progress``).
    """
    check_compared_methods(methods)
    rankings = (Ranking(cpr_ranking), Ranking(cmd_ranking))
    split_input = _split_input(truth, split_input)
    task_data = resolve_task(model, task, task_params)
    evaluator = _evaluator(model, task_data, metric, ablation, split_input, truth)
    metric = evaluator.metric_name
    gradient_metric = gradient_metric or gradient_metric_for(task_data, metric)
    thresholds = default_thresholds(evaluator.empty - evaluator.full) if thresholds is None else thresholds
    common = dict(ablation=ablation, split_input=split_input, model_name=model_name, progress=progress)
    results: dict[str, MethodResult] = {}
    for method in progress_bar(methods, progress=progress, desc="methods", unit="method"):
        if method_spec(method).circuits is CircuitSelection.THRESHOLD:
            sweep = acdc_threshold_sweep(model, task_data, thresholds, method=method, metric=metric, batch_size=batch_size, **common)
            results[method] = _sweep_result(method, sweep, evaluator, truth)
        else:
            scoring = dict(common, metric=gradient_metric, **_method_params(method, **({} if steps is None else {"steps": steps})))
            results[method] = _scores_result(method, model, task_data, evaluator, truth, fractions, rankings, scoring)
    swept = any(method_spec(m).circuits is CircuitSelection.THRESHOLD for m in methods)
    setting = {
        "model": model_name or model.cfg.model_name, "task": task_data.name, "metric": metric,
        "gradient_metric": gradient_metric, "ablation": ablation, "split_input": split_input,
        **_measured(evaluator, truth, rankings),
        "thresholds": list(thresholds) if swept else None, "fractions": list(fractions), "steps": steps,
    }
    return MethodComparison(setting, results)


def _measured(evaluator: CircuitEvaluator, truth: Circuit | None, rankings: tuple[Ranking, Ranking]) -> dict[str, Any]:
    """The setting's graph size and MIB's N, the rankings CPR and CMD come from, the metric of the
    full model and the empty circuit, and the truth's faithfulness."""
    return {
        "edges": evaluator.graph.n_edges,
        "mib_edges": mib_edge_count(evaluator.graph.shape),
        "cpr_ranking": rankings[0].value,
        "cmd_ranking": rankings[1].value,
        "metric_full": evaluator.full,
        "metric_empty": evaluator.empty,
        "truth_faithfulness": (
            float(evaluator.faithfulness(evaluator.metrics(evaluator.circuit_masks([truth])))[0]) if truth is not None else None
        ),
    }


def _evaluator(
    model: torch.nn.Module, task: TaskData, metric: str | None, ablation: str, split_input: bool, truth: Circuit | None
) -> CircuitEvaluator:
    """What measures every circuit; AcdcError when the truth is not of the model's graph."""
    evaluator = CircuitEvaluator(model, task, metric, ablation, split_input)
    if truth is not None:
        check_same_graph(truth, evaluator.graph, "the model")
    return evaluator


def _split_input(truth: Circuit | None, split_input: bool | None) -> bool:
    """The graph's input split: the truth's; AcdcError when one is given that differs from it."""
    if truth is not None:
        if split_input is not None and split_input != truth.graph.shape.split_input:
            raise AcdcError(f"split_input={split_input}, but the ground truth's graph has split_input={truth.graph.shape.split_input}")
        split_input = truth.graph.shape.split_input
    return bool(split_input)


def _method_params(method: str, **given: Any) -> dict[str, Any]:
    """Those of ``given`` that the method's parameters include (``steps``: EAP-IG's, not EAP's)."""
    taken = {f.name for f in dataclasses.fields(method_spec(method).params)}
    return {name: value for name, value in given.items() if name in taken}


def _sweep_result(method: str, sweep: ThresholdSweep, evaluator: CircuitEvaluator, truth: Circuit | None) -> MethodResult:
    """A threshold sweep's result: one faithfulness point (and ROC point) per circuit."""
    result = MethodResult(
        method, [faithfulness_of_circuits(evaluator, sweep.circuits)], sweep.seconds,
        circuits=sweep.circuits, cache=sweep.cache.stats(),
    )
    if truth is not None:
        result.roc = {level: roc_from_circuits(truth, sweep.circuits, level) for level in LEVELS}
    return result


def _scores_result(
    method: str, model: torch.nn.Module, task: TaskData, evaluator: CircuitEvaluator, truth: Circuit | None,
    fractions: Sequence[float], rankings: tuple[Ranking, Ranking], scoring: dict[str, Any],
) -> MethodResult:
    """A scoring run's result: MIB's CPR and CMD of its scores, and the ROC of its ranking."""
    from acdc_engine.api import discover

    start = time.perf_counter()
    scored = discover(model, task, method=method, top_n=0, **scoring)
    seconds = time.perf_counter() - start
    if scored.method.get("selection") == Ranking.greedy.value:  # MIB sizes such a run's circuits greedily
        rankings = (Ranking.greedy, Ranking.greedy)
    result = _ranking_result(method, scored.scores.edges, evaluator, truth, fractions, rankings, seconds)
    if "node_scores" in scored.method:  # a node method: MIB's node track sizes its circuits in nodes
        result.mib = mib_node_scores(evaluator, scored.method["node_scores"], fractions, *rankings)
        result.curves = result.mib.curves
    return result


def _ranking_result(
    method: str, scores: torch.Tensor, evaluator: CircuitEvaluator, truth: Circuit | None,
    fractions: Sequence[float], rankings: tuple[Ranking, Ranking], seconds: float,
) -> MethodResult:
    """MIB's CPR and CMD of edge scores [S, R] (``mib_scores``), with the ROC of their ranking."""
    mib = mib_scores(evaluator, scores, fractions, *rankings)
    result = MethodResult(method, mib.curves, seconds, mib=mib)
    if truth is not None:
        result.roc = {level: roc_from_scores(truth, scores, level) for level in LEVELS}
    return result


# ----- MIB submissions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmissionFiles:
    """What MIB's evaluator reads from a task folder: one importances file, or the budgeted circuit
    files {k: path}; ``name``: the folder's (or the file's) name."""

    name: str
    importances: Path | None = None
    circuits: dict[float, Path] = field(default_factory=dict)


def _circuit_fraction(path: Path) -> float:
    """k of a circuit file ``circuit_<k>.json`` / ``.pt``; AcdcError for any other name."""
    text = path.stem.removeprefix("circuit_") if path.stem.startswith("circuit_") else ""
    try:
        return float(text)
    except ValueError:
        raise AcdcError(f"{path}: not a circuit file of a MIB submission (expected circuit_<k>.json or circuit_<k>.pt)") from None


def submission_files(path: str | Path) -> SubmissionFiles:
    """The files of a MIB submission at ``path``: an importances file itself, or a task folder holding
    one ``.json`` / ``.pt`` file (importances) or one ``circuit_<k>`` file for each k of
    ``SUBMISSION_FRACTIONS`` (other files, such as a README, are not read). AcdcError otherwise."""
    path = Path(path)
    if path.is_file():
        return SubmissionFiles(path.name, importances=path)
    if not path.is_dir():
        raise AcdcError(f"no submission file or folder '{path}'")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".pt"))
    if len(files) == 1:
        return SubmissionFiles(path.name, importances=files[0])
    circuits: dict[float, Path] = {}
    for file in files:
        k = _circuit_fraction(file)
        if k in circuits:
            raise AcdcError(f"{path}: two circuit files for k = {k:g}: {circuits[k].name} and {file.name}")
        circuits[k] = file
    if sorted(circuits) != sorted(SUBMISSION_FRACTIONS):
        expected = ", ".join(f"{k:g}" for k in SUBMISSION_FRACTIONS)
        found = ", ".join(f"{k:g}" for k in sorted(circuits)) or "none"
        raise AcdcError(
            f"{path}: MIB reads one importances file or 9 circuit files circuit_<k>.json / .pt, k = {expected}; "
            f"found {len(files)} .json / .pt files (circuits for k = {found})"
        )
    return SubmissionFiles(path.name, circuits=circuits)


def mib_metric_for(task: TaskData) -> str:
    """The metric a submission is measured with when none is given: MIB's logit difference when the
    task has answers and wrong answers, else the task's default."""
    return "logit_diff" if task.answers is not None and task.wrong_answers is not None else task.default_metric


def _load_for(path: Path, graph: Graph) -> Circuit:
    """A submission's file as a circuit of ``graph``'s shape; AcdcError naming the file when its graph
    differs (e.g. it scores MLP edges and the model is attention-only). A file with no MLP edge scored
    or in its circuit reads as attention-only (``formats.eap_ig``), and is read as the model's when
    the model has MLPs."""
    from acdc_engine.formats.reader import load_circuit

    circuit = load_circuit(path)
    if circuit.graph.shape != graph.shape and graph.shape.has_mlp and not circuit.graph.shape.has_mlp:
        circuit = load_circuit(path, attn_only=False)
    if circuit.graph.shape != graph.shape:
        raise AcdcError(f"{path}: its graph {circuit.graph.shape} is not the model's {graph.shape}")
    return circuit


def score_submission(
    model: torch.nn.Module,
    task: TaskData | str,
    path: str | Path,
    *,
    truth: Circuit | None = None,
    metric: str | None = None,
    ablation: str = "resample",
    fractions: Sequence[float] = MIB_FRACTIONS,
    cpr_ranking: Ranking | str = MIB_CPR_RANKING,
    cmd_ranking: Ranking | str = MIB_CMD_RANKING,
    task_params: dict[str, Any] | None = None,
    model_name: str | None = None,
) -> MethodComparison:
    """MIB's CPR and CMD of the submission at ``path`` (``submission_files``) for ``model`` on ``task``:
    of an importances file's scores at ``fractions`` in the two rankings, or of the budgeted circuits
    (``fractions`` and the rankings then do not apply). ``metric``: None: ``mib_metric_for`` the task.
    With a truth, the ROC of the ranking by |score| or of the circuits. One result, named as the folder."""
    files = submission_files(path)
    rankings = (Ranking(cpr_ranking), Ranking(cmd_ranking))
    task_data = resolve_task(model, task, task_params)
    evaluator = _evaluator(model, task_data, metric or mib_metric_for(task_data), ablation, False, truth)
    start = time.perf_counter()
    try:
        if files.importances is not None:
            scores = _load_for(files.importances, evaluator.graph).scores.edges
            result = _ranking_result(files.name, scores, evaluator, truth, fractions, rankings, 0.0)
        else:
            circuits = {k: _load_for(p, evaluator.graph) for k, p in sorted(files.circuits.items())}
            mib = faithfulness_of_budgeted_circuits(evaluator, circuits)
            result = MethodResult(files.name, mib.curves, 0.0, mib=mib)
            if truth is not None:
                result.roc = {level: roc_from_circuits(truth, list(circuits.values()), level) for level in LEVELS}
    except AcdcError as error:
        raise AcdcError(f"{path}: {error}" if not str(error).startswith(str(path)) else str(error)) from None
    result.seconds = time.perf_counter() - start
    setting = {
        "model": model_name or model.cfg.model_name, "task": task_data.name, "metric": evaluator.metric_name,
        "gradient_metric": None, "ablation": ablation, "split_input": False, **_measured(evaluator, truth, rankings),
        "thresholds": None, "fractions": result.curves[0].cuts, "steps": None,
        "submission": str(path), "layout": "importances" if files.importances is not None else "circuits",
    }
    return MethodComparison(setting, {files.name: result})
