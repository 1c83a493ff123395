"""A cache of circuit metric values, keyed by the exact circuit, for runs that share work.

ACDC's runs at two thresholds t1 < t2 make the same decisions up to the first candidate whose score
lies in [t1, t2), so they evaluate the same circuits up to there (the full model first, then every
speculative batch before that candidate). ``discover(..., metric_cache=cache)`` looks each circuit of
a batch up before evaluating it: a threshold sweep computes the shared prefix once.

Keys: a 160-bit BLAKE2b digest of the packed edge mask, head input mask and resume layer; a collision
would need about 2**80 distinct circuits. Values are the metric as ``evaluate`` returned it (float64),
so a cached run makes exactly the decisions of a plain one. Circuits missing from the cache are
evaluated together in one call, in their batch order.

One cache serves one setting: the model object, task data, metric, ablation and input split it was
first used with. ``wrap`` refuses any other (AcdcError). The model is recognised by identity: do not
change its weights while a cache is in use.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.patcher import Evaluate
"""(edge masks [C, S, R], head input masks [C, L, H, 3], start layer) -> metric [C], float64."""


def _task_digest(task: Any) -> str:
    digest = hashlib.blake2b(digest_size=20)
    for key in ("clean", "corrupted", "positions", "answers", "wrong_answers", "answer_sets", "wrong_answer_sets"):
        value = getattr(task, key, None)
        digest.update(key.encode())
        if value is not None:
            digest.update(np.ascontiguousarray(value.detach().cpu().numpy()).tobytes())
    return digest.hexdigest()


class MetricCache:
    """Metric values of circuits already evaluated (see the module docstring).

    Counters (read them to see what the cache saved):
        circuits_requested / circuits_computed: circuits asked for / actually evaluated;
        passes_requested / passes_computed: ``evaluate`` calls asked for / actually made (a call
            whose circuits were all cached makes no forward pass).
    """

    def __init__(self) -> None:
        self._values: dict[bytes, float] = {}
        self._setting: tuple | None = None
        self._model: Any = None
        self.circuits_requested = 0
        self.circuits_computed = 0
        self.passes_requested = 0
        self.passes_computed = 0

    def __len__(self) -> int:
        return len(self._values)

    def _bind(self, model: Any, task: Any, metric: str, ablation: str, split_input: bool) -> None:
        setting = (_task_digest(task), metric, ablation, bool(split_input))
        if self._setting is None:
            self._setting, self._model = setting, model
        elif model is not self._model or setting != self._setting:
            raise AcdcError(
                "a MetricCache serves one (model, task, metric, ablation, split_input) setting; "
                "this run differs from the one it was first used with: use a new MetricCache"
            )

    @staticmethod
    def key(mask: CircuitMask, start_layer: int) -> bytes:
        """The cache key of one circuit: a digest of its masks ([S, R], [L, H, 3]) and resume layer."""
        digest = hashlib.blake2b(digest_size=20)
        digest.update(np.packbits(mask.edges.detach().cpu().numpy()).tobytes())
        digest.update(np.packbits(mask.head_inputs.detach().cpu().numpy()).tobytes())
        digest.update(int(start_layer).to_bytes(4, "little", signed=True))
        return digest.digest()

    def wrap(self, evaluate: Evaluate, *, model: Any, task: Any, metric: str, ablation: str, split_input: bool) -> Evaluate:
        """``evaluate`` with lookups in this cache; AcdcError if the setting is not this cache's."""
        self._bind(model, task, metric, ablation, split_input)

        def cached(masks: CircuitMask, start_layer: int = 0) -> Tensor:
            keys = [self.key(mask, start_layer) for mask in masks.unbind()]
            missing = [i for i, k in enumerate(keys) if k not in self._values]
            self.circuits_requested += len(keys)
            self.passes_requested += 1
            if missing:
                if len(missing) < len(keys):
                    masks = masks[torch.tensor(missing)]
                values = evaluate(masks, start_layer).tolist()
                self.circuits_computed += len(missing)
                self.passes_computed += 1
                for i, value in zip(missing, values):
                    self._values[keys[i]] = value
            return torch.tensor([self._values[k] for k in keys], dtype=torch.float64)

        return cached

    def stats(self) -> dict[str, int]:
        """The counters, as a dict (for reports)."""
        return {
            "circuits_requested": self.circuits_requested,
            "circuits_computed": self.circuits_computed,
            "passes_requested": self.passes_requested,
            "passes_computed": self.passes_computed,
        }
