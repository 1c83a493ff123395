"""The named choices of a run's settings, as enums for Hydra's structured configs.

Hydra checks a value against its enum while composing the config, so a typo fails naming the key
and the allowed values. The Python API takes the plain strings (``metric="kl"``); ``dtype_name``
reads a dtype given as a name or a torch.dtype. Imports no torch (the commands' ``--help`` reads
these choices).
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Any, Iterable

from acdc_engine.core.errors import AcdcError


class Metric(Enum):  # acdc_engine.measure.metrics
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


def dtype_name(dtype: Any, choices: Iterable[str]) -> str:
    """The name among ``choices`` of ``dtype``, given as a name (``"float16"``) or a torch.dtype
    (``torch.float16``); AcdcError listing the choices otherwise."""
    choices = list(choices)
    torch = sys.modules.get("torch")  # a torch.dtype exists only once torch is imported: no import here
    name = str(dtype).removeprefix("torch.") if torch is not None and isinstance(dtype, torch.dtype) else dtype
    if not isinstance(name, str) or name not in choices:
        raise AcdcError(f"unknown dtype {dtype!r}; choose one of {', '.join(choices)} (a name or the torch.dtype)")
    return name
