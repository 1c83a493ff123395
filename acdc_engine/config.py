"""Hydra structured configs: the schema every YAML file under ``conf/`` is checked against.

A key that is not in the schema, or a value of the wrong type or outside an enum, fails with Hydra's
message naming the key before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from acdc_engine.tasks import TASKS


class Metric(Enum):
    kl = "kl"
    logit_diff = "logit_diff"
    prob_diff = "prob_diff"
    nll = "nll"


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
class EapMethodConfig:
    """EAP (Syed et al. 2023). logit_diff by default: KL's gradient vanishes at the clean model."""

    name: str = "eap"
    metric: Metric = Metric.logit_diff
    ablation: Ablation = Ablation.resample
    top_n: Optional[int] = 20  # keep the top_n edges by |score| ...
    score_threshold: Optional[float] = None  # ... or those with |score| >= this (set top_n: null)


@dataclass
class EapIgMethodConfig(EapMethodConfig):
    """EAP-IG (Hanna et al. 2024): EAP with gradients averaged over interpolated input embeddings."""

    name: str = "eap-ig"
    steps: int = 5


@dataclass
class Config:
    model: Any = MISSING
    task: Any = MISSING
    method: Any = MISSING
    seed: int = 0
    device: Device = Device.auto
    progress: bool = True
    defaults: list[Any] = field(default_factory=list)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    for spec in TASKS.values():
        cs.store(group="schema/task", name=spec.name, node=spec.config)
    cs.store(group="schema/method", name="acdc", node=AcdcMethodConfig)
    cs.store(group="schema/method", name="eap", node=EapMethodConfig)
    cs.store(group="schema/method", name="eap-ig", node=EapIgMethodConfig)
