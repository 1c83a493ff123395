"""The architecture-neutral model the edge-patching engine runs on.

``ModelSpec`` holds a decoder-only transformer's weights in TransformerLens layout together with an
``ArchitectureConfig`` of its features. Build one with ``as_model_spec`` (from a TransformerLens 4
``TransformerBridge`` or a TransformerLens 3 ``HookedTransformer``), ``from_tl_weights`` (weights
in TransformerLens layout) or ``random_model``.
"""

from __future__ import annotations

from typing import Any

from acdc_engine.architecture.config import ArchitectureConfig
from acdc_engine.architecture.from_bridge import from_bridge
from acdc_engine.architecture.from_hooked import from_hooked_transformer
from acdc_engine.architecture.native import from_tl_weights, random_model
from acdc_engine.architecture.spec import ModelSpec
from acdc_engine.core.errors import AcdcError

__all__ = ["ArchitectureConfig", "ModelSpec", "as_model_spec", "from_bridge", "from_hooked_transformer",
           "from_tl_weights", "random_model"]


def _is_instance(model: Any, module: str, name: str) -> bool:
    """isinstance against ``module.name`` if that class exists in the installed TransformerLens."""
    import importlib

    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(model, cls)


def as_model_spec(model: Any) -> ModelSpec:
    """``model`` as a ``ModelSpec``: a ModelSpec itself, a TransformerBridge or a HookedTransformer
    converted; AcdcError naming the type for anything else."""
    if isinstance(model, ModelSpec):
        return model
    if _is_instance(model, "transformer_lens.model_bridge", "TransformerBridge"):
        return from_bridge(model)
    if _is_instance(model, "transformer_lens.HookedTransformer", "HookedTransformer"):
        return from_hooked_transformer(model)
    raise AcdcError(
        f"cannot run the edge-patching engine on a {type(model).__module__}.{type(model).__name__}: expected a "
        "ModelSpec, a TransformerLens TransformerBridge or a TransformerLens 3 HookedTransformer"
    )
