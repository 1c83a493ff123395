"""Hydra entry point ``acdc-discover``: a thin layer over ``acdc_engine.discover``.

    acdc-discover                                   # toy-induction-2l / induction / exact ACDC
    acdc-discover method.threshold=0.1 method.ablation=zero
    acdc-discover -m method.threshold=0.01,0.03,0.1 # one run folder per threshold

Each run writes circuit.json, circuit.dot (and .svg/.png when a renderer exists) into its Hydra
run folder, ``outputs/<date>/<time>/`` by default.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from acdc_engine.config import register_configs
from acdc_engine.errors import AcdcError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def run(cfg: DictConfig) -> Path:
    """Run discovery as ``cfg`` says and write the circuit files; returns the run folder."""
    from acdc_engine.api import discover
    from acdc_engine.draw import write_drawings
    from acdc_engine.methods.acdc import check_threshold
    from acdc_engine.models import load_model

    if cfg.method.name == "acdc":
        check_threshold(cfg.method.threshold)  # before the slow model load
        method_args = {"threshold": cfg.method.threshold, "batch_size": cfg.method.batch_size}
        selection = f"threshold {cfg.method.threshold}"
    else:
        method_args = {"top_n": cfg.method.top_n, "score_threshold": cfg.method.score_threshold}
        if "steps" in cfg.method:
            method_args["steps"] = cfg.method.steps
        selection = f"top_n {cfg.method.top_n}" if cfg.method.top_n is not None else f"score_threshold {cfg.method.score_threshold}"
    torch.manual_seed(cfg.seed)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
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
        model_name=cfg.model.name,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    circuit.save(out_dir / "circuit.json")
    drawings = write_drawings(circuit, out_dir)
    m = circuit.metric
    print(f"circuit files: {out_dir / 'circuit.json'}, " + ", ".join(p.name for p in drawings))
    print(f"edges kept: {circuit.n_edges} / {circuit.n_edges_total} ({selection})")
    print(f"{m['name']}: circuit {m['circuit']:.6g} | full model {m['full']:.6g} | empty circuit {m['empty']:.6g}")
    print(f"seconds: {circuit.run['seconds']:.2f}, forward passes: {circuit.run['forward_passes']}")
    return out_dir


def _main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except AcdcError as error:
        print(f"acdc-discover: error: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    if not CONF_DIR.is_dir():
        sys.exit(f"acdc-discover: error: config folder {CONF_DIR} not found (install with 'pip install -e .')")
    register_configs()
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_main)()


if __name__ == "__main__":
    main()
