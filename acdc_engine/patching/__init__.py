"""Masked forward passes: run a model with any set of edges patched, many circuits at once.

For receiver v with edge mask m_uv (1 = in the circuit), the patching rule (docs/design.md) is

    in_v = resid_v - sum_u (1 - m_uv) * (out_u - out_u*)

where out_u is sender u's output in this pass and out_u* its ablated output (the corrupted run's
under resample ablation, 0 under zero ablation, the per-position mean over the corrupted prompts
under mean ablation). A removed head input replaces that head's q (k, v) by its ablated value.

Modules, in the order a pass uses them: ``baseline`` (the clean and ablated runs, all-removed
inputs), ``pass_state`` (one pass's senders and receivers' inputs), ``steps`` (attention, MLP,
logits), ``patcher`` (``EdgePatcher``, the public entry), ``self_check``.
"""

from acdc_engine.patching.baseline import ABLATIONS
from acdc_engine.patching.patcher import EdgePatcher
from acdc_engine.patching.self_check import SelfCheck

__all__ = ["ABLATIONS", "EdgePatcher", "SelfCheck"]
