"""Hydra entry point ``acdc-discover``: a thin layer over ``acdc_engine.discover``.

    acdc-discover                                   # toy-induction-2l / induction / exact ACDC
    acdc-discover method.threshold=0.1 method.ablation=zero
    acdc-discover -m method.threshold=0.01,0.03,0.1 # one run folder per threshold
    acdc-discover resume=outputs/<date>/<time>      # continue a killed ACDC run (same overrides)

Each run writes circuit.json, circuit.html (the interactive view), circuit.dot (and .svg/.png when a
renderer exists and the drawing's size allows, ``acdc_engine.draw``) into its Hydra
run folder, ``outputs/<date>/<time>/`` by default; an ACDC run also keeps its state there
(checkpoint.safetensors, see ``acdc_engine.checkpoint``). A resumed run writes into the folder it
resumes, and Hydra's record of it goes to ``.hydra/resumed-<date>_<time>/`` there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from acdc_engine.checkpoint import FILE_NAME as CHECKPOINT_FILE
from acdc_engine.config import register_configs
from acdc_engine.errors import AcdcError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def run(cfg: DictConfig) -> Path:
    """Run discovery as ``cfg`` says and write the circuit files; returns the run folder."""
    from acdc_engine.api import ACDC_METHODS, discover
    from acdc_engine.draw import write_drawings
    from acdc_engine.models import load_model
    from acdc_engine.validation import validate_config
    from acdc_engine.viewer import write_circuit_html

    validate_config(cfg)  # ranges and rules across fields, before the slow model load
    if cfg.method.name in ACDC_METHODS:
        method_args = {"threshold": cfg.method.threshold, "batch_size": cfg.method.batch_size}
        if cfg.method.name == "acdc-eap":
            method_args.update(steps=cfg.method.steps, skip_below=cfg.method.skip_below)
        selection = f"threshold {cfg.method.threshold}"
    else:
        method_args = {"top_n": cfg.method.top_n, "score_threshold": cfg.method.score_threshold}
        if "steps" in cfg.method:
            method_args["steps"] = cfg.method.steps
        selection = f"top_n {cfg.method.top_n}" if cfg.method.top_n is not None else f"score_threshold {cfg.method.score_threshold}"
    torch.manual_seed(cfg.seed)
    out_dir = Path(HydraConfig.get().runtime.output_dir)  # under resume=, the resumed run's folder
    checkpoint = (out_dir if cfg.resume is None else Path(cfg.resume)) / CHECKPOINT_FILE
    if cfg.method.name in ACDC_METHODS:
        method_args.update(
            checkpoint=checkpoint,
            checkpoint_every=cfg.checkpoint.every_decisions,
            checkpoint_seconds=cfg.checkpoint.every_seconds,
            run_config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        )
    if cfg.resume is not None:
        if not checkpoint.is_file() or cfg.method.name not in ACDC_METHODS:
            raise AcdcError(f"resume={cfg.resume}: no ACDC checkpoint {checkpoint} to resume")
        print(f"resuming from {checkpoint}")
    model_cfg = OmegaConf.to_container(cfg.model.config, resolve=True) if cfg.model.config else None
    model = load_model(
        cfg.model.name, device=cfg.device.value, dtype=cfg.model.dtype.value, config=model_cfg, path=cfg.model.path
    )
    task_params = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "name"}
    circuit = discover(
        model,
        cfg.task.name,
        method=cfg.method.name,
        metric=cfg.method.metric.value if cfg.method.metric is not None else None,
        ablation=cfg.method.ablation.value,
        split_input=cfg.model.split_input,
        **method_args,
        task_params=task_params,
        model_name=cfg.model.path if cfg.model.name == "local" else cfg.model.name,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    circuit.save(out_dir / "circuit.json")
    notes: list[str] = []
    drawings = write_drawings(circuit, out_dir, notes=notes)
    drawings.append(write_circuit_html(circuit, out_dir / "circuit.html"))  # the interactive view
    m = circuit.metric
    print(f"circuit files: {out_dir / 'circuit.json'}, " + ", ".join(p.name for p in drawings))
    for note in notes:
        print(f"note: {note}")
    print(f"edges kept: {circuit.n_edges} / {circuit.n_edges_total} ({selection})")
    print(f"{m['name']}: circuit {m['circuit']:.6g} | full model {m['full']:.6g} | empty circuit {m['empty']:.6g}")
    print(f"seconds: {circuit.run['seconds']:.2f}, forward passes: {circuit.run['forward_passes']}")
    return out_dir


RAISED_IN_RUN = "_acdc_raised_in_run"  # marks an exception from a run (a bug), not from Hydra's composition


def hydra_command(prog: str, run: Callable[[DictConfig], Any]) -> Callable[[DictConfig], None]:
    """``run`` as a Hydra task function: an AcdcError prints one line under ``prog`` and exits 2;
    any other exception is marked as raised by the run (a bug, to keep its traceback)."""

    def task(cfg: DictConfig) -> None:
        try:
            run(cfg)
        except AcdcError as error:
            print(f"{prog}: error: {error}", file=sys.stderr)
            sys.exit(2)
        except Exception as error:
            setattr(error, RAISED_IN_RUN, True)  # an attribute survives the trip back from a launcher's worker process
            raise

    return task


def _config_error(error: Exception) -> str:
    """One clear message for an error Hydra raised while reading the command line and composing the
    config (its CompactHydraException and OmegaConf errors name the key; some overrides, such as
    setting a key below a null node, surface as plain AssertionError/ValueError from Hydra)."""
    if isinstance(error, CompactHydraException):
        cause = error.__cause__
        return str(error) + (f"\n{cause}" if isinstance(cause, OmegaConfBaseException) else "")
    return (
        f"cannot compose the config from the command line ({type(error).__name__}: {error}); "
        "set HYDRA_FULL_ERROR=1 for Hydra's traceback"
    )


def run_hydra_command(prog: str, config_name: str, run: Callable[[DictConfig], Any]) -> None:
    """Run ``run`` under Hydra with ``conf/<config_name>.yaml``. Errors in the command line or the
    config composition print one line naming the key and exit 2 (``HYDRA_FULL_ERROR=1`` restores
    Hydra's own reports); errors in ``run`` as ``hydra_command`` says."""
    if not CONF_DIR.is_dir():
        sys.exit(f"{prog}: error: config folder {CONF_DIR} not found (install with 'pip install -e .')")
    entry = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(
        hydra_command(prog, run)
    )
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for Hydra's own reports
        entry()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors here instead of printing tracebacks
    try:
        entry()
    except Exception as error:
        if getattr(error, RAISED_IN_RUN, False):  # not a config error: a bug, keep its traceback
            raise
        print(f"{prog}: error: {_config_error(error)}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    register_configs()
    run_hydra_command("acdc-discover", "config", run)


if __name__ == "__main__":
    main()
