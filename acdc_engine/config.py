"""Hydra structured configs: the schema every YAML file under ``conf/`` is checked against.

A key that is not in the schema, or a value of the wrong type or outside an enum, fails with Hydra's
message naming the key before anything runs; ranges and rules across fields are checked next, by
``acdc_engine.validation.validate_config`` (field metadata ``bounds(...)``, naming conventions,
``__post_init__``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from acdc_engine.errors import AcdcError
from acdc_engine.tasks import TASKS
from acdc_engine.validation import bounds


class Metric(Enum):
    kl = "kl"
    logit_diff = "logit_diff"
    prob_diff = "prob_diff"
    nll = "nll"
    l2 = "l2"
    set_prob_diff = "set_prob_diff"
    max_logit_diff = "max_logit_diff"


class Ablation(Enum):
    resample = "resample"
    zero = "zero"
    mean = "mean"


class DType(Enum):
    float32 = "float32"
    float64 = "float64"
    float16 = "float16"  # GPU only
    bfloat16 = "bfloat16"  # GPU only


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class ModelConfig:
    name: str = MISSING
    split_input: bool = False
    dtype: DType = DType.float32
    config: Optional[dict[str, Any]] = None  # HookedTransformerConfig fields, for name=random
    path: Optional[str] = None  # a Hugging Face folder, for name=local


@dataclass
class AcdcMethodConfig:
    name: str = "acdc"
    threshold: float = 0.05
    metric: Optional[Metric] = None  # None: the task's default metric
    ablation: Ablation = Ablation.resample
    batch_size: Optional[int] = None  # candidates per forward pass; None: chosen from free memory


@dataclass
class AcdcEapMethodConfig(AcdcMethodConfig):
    """ACDC that skips edges whose EAP-IG attribution is below skip_below * threshold."""

    name: str = "acdc-eap"
    steps: int = 5
    skip_below: float = field(default=0.1, metadata=bounds(ge=0))


@dataclass
class EapMethodConfig:
    """EAP (Syed et al. 2023). logit_diff by default: KL's gradient vanishes at the clean model."""

    name: str = "eap"
    metric: Metric = Metric.logit_diff
    ablation: Ablation = Ablation.resample
    top_n: Optional[int] = 20  # keep the top_n edges by |score| ...
    score_threshold: Optional[float] = None  # ... or those with |score| >= this (set top_n: null)

    def __post_init__(self) -> None:  # run by acdc_engine.validation on the composed values
        if (self.top_n is None) == (self.score_threshold is None):
            raise AcdcError("give exactly one of top_n and score_threshold (set the other to null)")


@dataclass
class EapIgMethodConfig(EapMethodConfig):
    """EAP-IG (Hanna et al. 2024): EAP with gradients averaged over interpolated input embeddings."""

    name: str = "eap-ig"
    steps: int = 5


@dataclass
class CheckpointConfig:
    """When a running ACDC saves its state (``acdc_engine.checkpoint``): after every_decisions more
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
    resume: Optional[str] = None  # a run folder whose ACDC checkpoint to continue; outputs go there
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    defaults: list[Any] = field(default_factory=list)


def _run_folder(resume: str | None, fresh: str) -> str:
    """hydra.run.dir: the folder being resumed when there is one, else the fresh dated folder (a
    resume= naming no folder gets a fresh one, and the run is then refused for want of a
    checkpoint, leaving no folder behind)."""
    return resume if resume is not None and Path(resume).is_dir() else fresh


def register_configs() -> None:
    OmegaConf.register_new_resolver("acdc.run_folder", _run_folder, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    for spec in TASKS.values():
        cs.store(group="schema/task", name=spec.name, node=spec.config)
    cs.store(group="schema/method", name="acdc", node=AcdcMethodConfig)
    cs.store(group="schema/method", name="acdc-eap", node=AcdcEapMethodConfig)
    cs.store(group="schema/method", name="eap", node=EapMethodConfig)
    cs.store(group="schema/method", name="eap-ig", node=EapIgMethodConfig)
