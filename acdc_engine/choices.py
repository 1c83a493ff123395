"""The named choices of a run's settings, as enums for Hydra's structured configs.

Hydra checks a value against its enum while composing the config, so a typo fails naming the key
and the allowed values. The Python API takes the plain strings (``metric="kl"``).
"""

from __future__ import annotations

from enum import Enum


class Metric(Enum):  # acdc_engine.metrics
    kl = "kl"
    logit_diff = "logit_diff"
    prob_diff = "prob_diff"
    nll = "nll"
    l2 = "l2"
    set_prob_diff = "set_prob_diff"
    max_logit_diff = "max_logit_diff"


class Ablation(Enum):  # acdc_engine.patching
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
