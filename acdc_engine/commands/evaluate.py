"""``acdc-evaluate``: ACDC, EAP and EAP-IG on one model and task, or a MIB submission scored as MIB
scores it; ROC against a ground truth and faithfulness curves, as CSV, JSON, PNG and SVG in the Hydra
run folder.

    acdc-evaluate                                              # toy-induction-2l / induction, no truth
    acdc-evaluate model=tracr-reverse task=tracr-reverse truth=tracr-reverse
    acdc-evaluate truth=outputs/<date>/<time>/circuit.json 'thresholds=[0,0.01,0.1]'
    acdc-evaluate submission=submission/ioi_gpt2 model=gpt2 task=ioi   # MIB's CPR and CMD of a submission
    acdc-evaluate -m model=a,b task=... hydra/launcher=local  # several at once (see README)

``submission``: an importances file (EAP-IG's graph JSON or ``.pt`` with a score on every edge) or a
MIB task folder (that one file, or the 9 files ``circuit_<k>.json`` / ``.pt``); the methods are then
not run. CPR and CMD come from the rankings ``cpr_ranking`` and ``cmd_ranking`` (MIB's: signed and
absolute), for the methods' scores as for a submission's (``acdc_engine.evaluation.faithfulness``).

Config: ``conf/evaluate.yaml`` (model/ and task/ groups as for ``acdc-discover``), checked against
``EvaluateConfig`` and then, before anything loads, by ``acdc_engine.commands.validation.validate_config`` as
``acdc-discover``'s is (one line naming the key: ``thresholds[0] must be a finite number >= 0``).
Writes roc.csv, roc.json, roc.png, roc.svg (with a truth) and faithfulness.csv, faithfulness.json,
faithfulness.png, faithfulness.svg, and prints a Markdown table of edge and node AUC, CPR and CMD
(each naming the ranking it comes from) and seconds per method or submission. What is computed:
``acdc_engine.evaluation.method_comparison``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig, OmegaConf

from acdc_engine.core.choices import Ablation, Device, Metric
from acdc_engine.commands.config_schema import register_configs
from acdc_engine.core.errors import AcdcError
from acdc_engine.evaluation.faithfulness import MIB_CMD_RANKING, MIB_CPR_RANKING, MIB_FRACTIONS, Ranking, check_fractions
from acdc_engine.core.values import bounds
from acdc_engine.formats.circuit_file import save_circuit


@dataclass
class EvaluateConfig:
    model: Any = MISSING
    task: Any = MISSING
    truth: Optional[str] = None  # a circuit file (this engine's, or EAP-IG / MIB JSON or .pt), or a shipped circuit's name; null: no ROC
    submission: Optional[str] = None  # an importances file or MIB task folder to score instead of running methods
    methods: list[str] = field(default_factory=lambda: ["acdc", "eap", "eap-ig"])
    # ACDC's; null: 0 and 16 log-spaced, 1e-4..1 x metric range
    thresholds: Optional[list[float]] = field(default=None, metadata=bounds(ge=0))
    metric: Optional[Metric] = None  # ACDC's and every measurement's; null: the task's default
    gradient_metric: Optional[Metric] = None  # EAP/EAP-IG scoring; null: the metric, logit_diff for kl and l2
    ablation: Ablation = Ablation.resample
    steps: Optional[int] = None  # every method's that takes them (EAP-IG's interpolation, a learned mask's training); None: its own
    fractions: list[float] = field(default_factory=lambda: list(MIB_FRACTIONS), metadata=bounds(gt=0, le=1))  # MIB's top-k
    cpr_ranking: Ranking = MIB_CPR_RANKING  # the ranking CPR's top-k circuits come from (MIB: signed)
    cmd_ranking: Ranking = MIB_CMD_RANKING  # the ranking CMD's top-k circuits come from (MIB: absolute)
    batch_size: Optional[int] = None  # ACDC candidates per pass; null: from free memory
    save_circuits: bool = False  # also write the ACDC sweep's circuit files (circuits/threshold_<t>.json)
    seed: int = 0
    device: Device = Device.auto
    progress: bool = True  # bars in a terminal, not under CI (acdc_engine.core.progress)
    defaults: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:  # run by acdc_engine.commands.validation on the composed values
        from acdc_engine.evaluation.method_comparison import check_compared_methods

        check_compared_methods(self.methods)
        if self.thresholds is not None and not self.thresholds:
            raise AcdcError("give at least one threshold, or thresholds=null for the default sweep")
        check_fractions(self.fractions)


OUTPUTS = tuple(f"{stem}.{kind}" for stem in ("roc", "faithfulness") for kind in ("csv", "json", "png", "svg")) + ("circuits",)
"""The files a run writes into its folder; a run is refused a folder that holds any of them."""


def run(cfg: DictConfig) -> Path:
    """Evaluate the methods, or score the submission, as ``cfg`` says; write the files into the run
    folder and return it.
    Nothing is written before ``cfg`` is valid and the folder is claimed (``acdc_engine.commands.run_folder``);
    files the folder cannot take are saved elsewhere, and the run then ends with an error saying where."""
    from acdc_engine.commands.discover import require_extra
    from acdc_engine.evaluation.overlap import load_circuit_or_reference
    from acdc_engine.evaluation.method_comparison import submission_files
    from acdc_engine.models import load_model
    from acdc_engine.commands.run_folder import claim_run_folder, run_record, save_outputs
    from acdc_engine.commands.validation import validate_config

    validate_config(cfg)  # ranges and rules across fields, as acdc-discover checks them, before any loading
    require_extra("matplotlib", "plots", needed_for="acdc-evaluate (its ROC and faithfulness figures)")
    truth = load_circuit_or_reference(cfg.truth) if cfg.truth is not None else None
    if cfg.submission is not None:
        submission_files(cfg.submission)  # its layout checked before anything loads
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    with claim_run_folder(out_dir, OUTPUTS), run_record(out_dir, cfg, OUTPUTS):  # a run that fails before writing leaves no record
        torch.manual_seed(cfg.seed)
        model_cfg = OmegaConf.to_container(cfg.model.config, resolve=True) if cfg.model.config else None
        model = load_model(cfg.model.name, device=cfg.device.value, dtype=cfg.model.dtype.value, config=model_cfg, path=cfg.model.path)
        task_params = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "name"}
        comparison = _evaluate(cfg, model, truth, task_params)

        def write(folder: Path) -> list[Path]:
            written = comparison.write(folder)
            if cfg.save_circuits and "acdc" in comparison.results:
                for circuit in comparison.results["acdc"].circuits:
                    written.append(save_circuit(circuit, folder / "circuits" / f"threshold_{circuit.threshold:.6g}.json"))
            return written

        saved = save_outputs(out_dir, write, "the evaluation files")
    _report(comparison, cfg.truth if truth is not None else None, saved.paths)
    if saved.problem:
        raise AcdcError(saved.problem)
    return out_dir


def _evaluate(cfg: DictConfig, model: torch.nn.Module, truth: Any, task_params: dict[str, Any]) -> Any:
    """The submission scored, or the methods compared, as ``cfg`` says (a ``MethodComparison``)."""
    from acdc_engine.evaluation.method_comparison import compare_methods, score_submission

    metric = None if cfg.metric is None else cfg.metric.value
    common = dict(
        truth=truth, metric=metric, ablation=cfg.ablation.value, fractions=list(cfg.fractions),
        cpr_ranking=cfg.cpr_ranking.value, cmd_ranking=cfg.cmd_ranking.value, task_params=task_params, model_name=cfg.model.name,
    )
    if cfg.submission is not None:
        return score_submission(model, cfg.task.name, cfg.submission, **common)
    # with a truth, the graph splits the input as the truth's does, unless asked to explicitly
    split_input = None if truth is not None and not cfg.model.split_input else cfg.model.split_input
    return compare_methods(
        model,
        cfg.task.name,
        methods=list(cfg.methods),
        thresholds=None if cfg.thresholds is None else list(cfg.thresholds),
        gradient_metric=None if cfg.gradient_metric is None else cfg.gradient_metric.value,
        split_input=split_input,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        progress=cfg.progress,
        **common,
    )


def _report(comparison: Any, truth: str | None, paths: list[Path]) -> None:
    """Print the setting, the table (CPR and CMD naming their rankings), the ACDC sweep's sharing and
    the files written."""
    s = comparison.setting
    what = f"{s['submission']} ({s['layout']}) for " if "submission" in s else ""
    print(f"{what}{s['model']} on {s['task']}: {s['edges']} edges (MIB's N: {s['mib_edges']}, EAP-IG's graph); "
          f"{s['metric']}: full model {s['metric_full']:.6g}, empty circuit {s['metric_empty']:.6g}"
          + (f"; truth {truth}" if truth is not None else ""))
    print(f"CPR from the top-k circuits of the {s['cpr_ranking']} ranking, CMD from the {s['cmd_ranking']} ranking "
          "(MIB's: signed, absolute); areas over k on a linear axis, f = 1 at the full model")
    print(comparison.table())
    if "acdc" in comparison.results:
        stats = comparison.results["acdc"].cache
        print(f"ACDC sweep: {len(s['thresholds'])} thresholds, {stats['circuits_computed']} of "
              f"{stats['circuits_requested']} circuit evaluations computed (the rest shared between thresholds)")
    print("files: " + ", ".join(str(p) for p in paths))


def register_evaluate_configs() -> None:
    """Register the schemas ``conf/evaluate.yaml`` names (those of acdc-discover and EvaluateConfig)."""
    register_configs()
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


def main() -> None:
    from acdc_engine.commands.discover import run_hydra_command

    register_evaluate_configs()
    run_hydra_command("acdc-evaluate", "evaluate", run)


if __name__ == "__main__":
    main()
