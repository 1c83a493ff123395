"""Hydra structured configs: the schema every YAML file under ``conf/`` is checked against.

The model group and the root are defined here; each task's schema comes from its ``TaskSpec``
(``acdc_engine.tasks``), each method's from its ``MethodSpec`` (``acdc_engine.methods``).

A key that is not in the schema, or a value of the wrong type or outside an enum, fails with Hydra's
message naming the key before anything runs; ranges and rules across fields are checked next, by
``acdc_engine.commands.validation.validate_config`` (field metadata ``bounds(...)``, naming conventions,
``__post_init__``). The schemas of this module import no torch (the commands' ``--help`` reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from acdc_engine.core.choices import Device, DType


@dataclass
class ModelConfig:
    name: str = MISSING
    split_input: bool = False
    # resample ablation with split_input: the corrupted run sees its positional embedding at permuted
    # positions (seed 49), as the original ACDC's tracr runs do (acdc_engine.patching.baseline)
    permute_corrupted_positions: bool = False
    dtype: DType = DType.float32
    config: Optional[dict[str, Any]] = None  # HookedTransformerConfig fields, for name=random
    path: Optional[str] = None  # a Hugging Face folder, for name=local


@dataclass
class CheckpointConfig:
    """When a running ACDC saves its state (``acdc_engine.methods.checkpoint``): after every_decisions more
    candidates, or every_seconds after the last save, whichever comes first; null turns a trigger off.
    It also saves at the end and before stopping on a non-finite metric."""

    every_decisions: Optional[int] = None
    every_seconds: Optional[float] = 60.0


@dataclass
class Config:
    model: Any = MISSING
    task: Any = MISSING
    method: Any = MISSING
    seed: int = 0
    device: Device = Device.auto
    progress: bool = True
    threads: Optional[int] = None  # CPU threads; None: from the work's size and the free CPUs (core.threads)
    resume: Optional[str] = None  # a run folder whose checkpoint to continue (ACDC, learned masks); outputs go there
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    defaults: list[Any] = field(default_factory=list)


def _run_folder(resume: str | None, fresh: str) -> str:
    """hydra.run.dir: the folder being resumed when there is one, else the fresh dated folder (a
    resume= naming no folder gets a fresh one, and the run is then refused for want of a
    checkpoint, leaving no folder behind)."""
    return resume if resume is not None and Path(resume).is_dir() else fresh


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore: the root's, the model group's, and each registered
    task's and method's (importing those registries, and with them torch)."""
    from acdc_engine.methods import METHODS
    from acdc_engine.tasks import TASKS

    OmegaConf.register_new_resolver("acdc.run_folder", _run_folder, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    for spec in TASKS.values():
        cs.store(group="schema/task", name=spec.name, node=spec.config)
    for spec in METHODS.values():
        cs.store(group="schema/method", name=spec.name, node=spec.config)
