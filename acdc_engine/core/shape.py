"""A graph's shape and its forward-order axis, without the graph itself (and without torch).

``GraphShape`` is what the graph depends on (layers, heads, MLPs, parallel blocks, split input);
the read and write points place every node on one forward-order axis in half layers; ``edge_count``
is the number of edges in closed form. ``acdc_engine.core.graph`` builds the graph from a shape;
light readers (a table of runs) use the shape alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acdc_engine.core.errors import AcdcError


INPUT_WRITES = -1
"""Where the input senders write on the forward-order axis (see ``Graph``)."""


def heads_write(layer: int) -> int:
    """Where layer ``layer``'s heads write, and where their q/k/v receivers read."""
    return 2 * layer


def mlp_writes(layer: int) -> int:
    """Where layer ``layer``'s MLP writes."""
    return 2 * layer + 1


@dataclass(frozen=True)
class GraphShape:
    """What the graph depends on: a model's layer/head counts, whether it has MLPs, whether its
    blocks are parallel (attention and MLP read the same residual), and ``split_input``."""

    n_layers: int
    n_heads: int
    has_mlp: bool
    split_input: bool = False
    parallel_attn_mlp: bool = False

    @classmethod
    def from_model_config(cls, cfg: Any, split_input: bool = False) -> "GraphShape":
        """From a model config with TransformerLens's field names (``n_layers``, ``n_heads``,
        ``attn_only``, ``parallel_attn_mlp``): an ``ArchitectureConfig`` or a ``HookedTransformerConfig``."""
        if isinstance(cfg, GraphShape):
            return cls(cfg.n_layers, cfg.n_heads, cfg.has_mlp, split_input, cfg.parallel_attn_mlp)
        for key in ("n_layers", "n_heads"):
            if not isinstance(getattr(cfg, key, None), int) or getattr(cfg, key) < 1:
                raise AcdcError(f"model config needs a positive integer '{key}', got {getattr(cfg, key, None)!r}")
        has_mlp = not getattr(cfg, "attn_only", False)
        return cls(cfg.n_layers, cfg.n_heads, has_mlp, split_input, has_mlp and bool(getattr(cfg, "parallel_attn_mlp", False)))

    def attention_reads(self, layer: int) -> int:
        """Where layer ``layer``'s q/k/v receivers read the residual stream."""
        return heads_write(layer)

    def mlp_reads(self, layer: int) -> int:
        """Where ``m{layer}`` reads: after the layer's heads, or beside them in a parallel block."""
        return heads_write(layer) if self.parallel_attn_mlp else mlp_writes(layer)

    @property
    def logits_read(self) -> int:
        """Where ``logits`` reads: after every layer."""
        return heads_write(self.n_layers)


def edge_count(shape: GraphShape) -> int:
    """The number of edges of ``build_graph(shape)``, in closed form (cheap for any shape).

    Every receiver reads every sender that writes strictly before it: layer l's head receivers
    (3 per head) read the I input senders and the H heads (+ MLP) of each earlier layer; layer l's
    MLP also reads layer l's heads, except in a parallel block; the logits read every sender.
    """
    inputs = 2 if shape.split_input else 1
    mlp = 1 if shape.has_mlp else 0
    layers, heads = shape.n_layers, shape.n_heads
    per_layer = heads + mlp  # senders each layer adds
    earlier = layers * inputs + per_layer * layers * (layers - 1) // 2  # summed over l of senders before layer l
    same_layer = 0 if shape.parallel_attn_mlp else mlp * layers * heads
    return (3 * heads + mlp) * earlier + same_layer + inputs + layers * per_layer


def eap_ig_edge_count(shape: GraphShape) -> int:
    """The number of edges EAP-IG's graph (and so MIB's evaluator) counts for a model of this shape.

    EAP-IG's graph has one ``input`` node and an MLP in every layer even for attention-only models
    (whose MLP nodes output zero), so it counts ``edge_count`` of the shape with MLPs and without the
    split input: 110 edges for 2 layers of 4 heads attention-only, where this engine's graph has 81.
    MIB's budgets ("at most k of the model's edges") and its top-k sizes are fractions of this count.
    """
    return edge_count(GraphShape(shape.n_layers, shape.n_heads, True, False, shape.parallel_attn_mlp))
