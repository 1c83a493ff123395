"""``acdc-evaluate``: ACDC, EAP and EAP-IG on one model and task; ROC against a ground truth and
faithfulness curves, as CSV, JSON, PNG and SVG in the Hydra run folder.

    acdc-evaluate                                              # toy-induction-2l / induction, no truth
    acdc-evaluate model=tracr-reverse task=tracr-reverse truth=tracr-reverse
    acdc-evaluate truth=outputs/<date>/<time>/circuit.json 'thresholds=[0,0.01,0.1]'
    acdc-evaluate -m model=a,b task=... hydra/launcher=local  # several at once (see README)

Config: ``conf/evaluate.yaml`` (model/ and task/ groups as for ``acdc-discover``), checked against
``EvaluateConfig`` and then, before anything loads, by ``acdc_engine.commands.validation.validate_config`` as
``acdc-discover``'s is (one line naming the key: ``thresholds[0] must be a finite number >= 0``).
Writes roc.csv, roc.json, roc.png, roc.svg (with a truth) and faithfulness.csv, faithfulness.json,
faithfulness.png, faithfulness.svg, and prints a Markdown table of edge and node AUC, CPR, CMD and
seconds per method. What is computed: ``acdc_engine.evaluation.method_comparison``.
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
from acdc_engine.evaluation.faithfulness import MIB_FRACTIONS, check_fractions
from acdc_engine.core.values import bounds
from acdc_engine.formats.circuit_file import save_circuit


@dataclass
class EvaluateConfig:
    model: Any = MISSING
    task: Any = MISSING
    truth: Optional[str] = None  # a circuit file (this engine's, or EAP-IG / MIB JSON or .pt), or a shipped circuit's name; null: no ROC
    methods: list[str] = field(default_factory=lambda: ["acdc", "eap", "eap-ig"])
    # ACDC's; null: 0 and 16 log-spaced, 1e-4..1 x metric range
    thresholds: Optional[list[float]] = field(default=None, metadata=bounds(ge=0))
    metric: Optional[Metric] = None  # ACDC's and every measurement's; null: the task's default
    gradient_metric: Optional[Metric] = None  # EAP/EAP-IG scoring; null: the metric, logit_diff for kl and l2
    ablation: Ablation = Ablation.resample
    steps: int = 5  # EAP-IG
    fractions: list[float] = field(default_factory=lambda: list(MIB_FRACTIONS), metadata=bounds(gt=0, le=1))  # MIB's top-k
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
    """Evaluate the methods as ``cfg`` says; write the files into the run folder and return it.
    Nothing is written before ``cfg`` is valid and the folder is claimed (``acdc_engine.commands.run_folder``);
    files the folder cannot take are saved elsewhere, and the run then ends with an error saying where."""
    from acdc_engine.commands.discover import require_extra
    from acdc_engine.evaluation.overlap import load_circuit_or_reference
    from acdc_engine.evaluation.method_comparison import compare_methods
    from acdc_engine.models import load_model
    from acdc_engine.commands.run_folder import claim_run_folder, run_record, save_outputs
    from acdc_engine.commands.validation import validate_config

    validate_config(cfg)  # ranges and rules across fields, as acdc-discover checks them, before any loading
    require_extra("matplotlib", "plots", needed_for="acdc-evaluate (its ROC and faithfulness figures)")
    truth = load_circuit_or_reference(cfg.truth) if cfg.truth is not None else None
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    with claim_run_folder(out_dir, OUTPUTS), run_record(out_dir, cfg, OUTPUTS):  # a run that fails before writing leaves no record
        torch.manual_seed(cfg.seed)
        model_cfg = OmegaConf.to_container(cfg.model.config, resolve=True) if cfg.model.config else None
        model = load_model(cfg.model.name, device=cfg.device.value, dtype=cfg.model.dtype.value, config=model_cfg, path=cfg.model.path)
        task_params = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "name"}
        # with a truth, the graph splits the input as the truth's does, unless asked to explicitly
        split_input = None if truth is not None and not cfg.model.split_input else cfg.model.split_input
        comparison = compare_methods(
            model,
            cfg.task.name,
            truth=truth,
            methods=list(cfg.methods),
            thresholds=None if cfg.thresholds is None else list(cfg.thresholds),
            metric=None if cfg.metric is None else cfg.metric.value,
            gradient_metric=None if cfg.gradient_metric is None else cfg.gradient_metric.value,
            ablation=cfg.ablation.value,
            split_input=split_input,
            steps=cfg.steps,
            fractions=list(cfg.fractions),
            batch_size=cfg.batch_size,
            task_params=task_params,
            model_name=cfg.model.name,
            progress=cfg.progress,
        )

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


def _report(comparison: Any, truth: str | None, paths: list[Path]) -> None:
    """Print the setting, the methods' table, the ACDC sweep's sharing and the files written."""
    s = comparison.setting
    print(f"{s['model']} on {s['task']}: {s['edges']} edges; {s['metric']}: full model {s['metric_full']:.6g}, "
          f"empty circuit {s['metric_empty']:.6g}" + (f"; truth {truth}" if truth is not None else ""))
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
