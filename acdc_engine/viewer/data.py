"""What the interactive viewer draws, as plain data: nodes placed by rank, edges with their input
(q/k/v), scores and state (decision, or diff status). ``circuit_view`` for one circuit,
``diff_view`` for two circuits compared; ``attention_block`` for the heads' attention patterns
that a circuit's page shows.

A view is a dict (embedded in the page as JSON)::

    {"mode": "circuit" | "diff", "title": str, "subtitle": str,
     "nodes": [[name, kind, rank, order, state, x]],    # kind: input, head, mlp, logits; state: -1 or index;
                                                        # x: Graphviz's x (points) or null (viewer.layout)
     "edges": [[sender, receiver, input, state, a, b]], # node indices; input "q"/"k"/"v"/""; a, b: numbers or null
     "states": [{"label", "colour", "fill", "shown", "faint"}],   # per edge/node state: legend and toggles
     "colourBy": "input" | "state", "colours": {"q", "k", "v", "other"}, "fills": {kind: colour},
     "values": [label of a, label of b], "note": str | null,
     "attention": null | {"tokens": [str], "patterns": [layer][head][query][key]}}

Ranks run bottom to top: the input at 0, layer L's heads at 2L + 1 and its MLP at 2L + 2, logits at
the top; ``order`` places a node within its rank (the head index).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from acdc_engine.core.errors import AcdcError
from acdc_engine.core.nodes import NodeKind, component_of, parse_node
from acdc_engine.evaluation.overlap import placement
from acdc_engine.methods import METHODS, CircuitSelection
from acdc_engine.formats.drawing import EDGE_COLOURS, NODE_STYLE

if TYPE_CHECKING:
    from acdc_engine.core.circuit import Circuit
    from acdc_engine.evaluation.overlap import Comparison

LARGEST_FULL_VIEW = 60_000  # edges: a larger graph's view holds the circuit's edges only
FILLS = {kind: style["fillcolor"] for kind, style in NODE_STYLE.items()}
# A circuit's edge states, in the order of circuit_view's state indices (0: in the circuit,
# 1: kept but off every input-to-logits path, 2: out and scored, 3: out and not scored), worded
# for the method that decided them: ACDC tests removals; EAP / EAP-IG select by |score|; a file
# that does not name its method (EAP-IG / MIB graph files) says only what it holds.
STATE_WORDS = {
    "acdc": ("in the circuit", "kept, but off every input-to-logits path", "removed (tested)", "removed untested"),
    "attribution": ("in the circuit", "selected, but off every input-to-logits path", "not selected (scored)", "not scored"),
    "file": ("in the circuit", "in the file's circuit, but off every input-to-logits path", "out of the circuit (scored)", "out of the circuit, no score"),
}
SCORE_WORDS = {"acdc": "score (metric change when removed)", "attribution": "attribution score", "file": "score"}
ATTENTION_DECIMALS = 3  # attention weights in the page: float16, then rounded to this many decimals


def place(node: str, n_layers: int, level: str = "name") -> tuple[int, int]:
    """(rank, order) of a node name (``a3.h1``, ``m2``, ``input``) or, at ``level`` "role", a role
    slot (``embed``, ``heads@1``, ``mlp@1``), placed as ``evaluation.overlap.placement`` places it:
    input 0, layer L's heads 2L + 1 and its MLP 2L + 2, logits 2 * n_layers + 1; order within a
    rank: a head's index, ``pos_embed`` after ``tok_embed``."""
    kind, depth = placement(node, level)
    if kind is NodeKind.INPUT:
        return 0, int(level == "name" and parse_node(node).kind is NodeKind.POS_EMBED)
    if kind is NodeKind.LOGITS:
        return 2 * n_layers + 1, 0
    return int(depth) + 1, parse_node(node).head if level == "name" and kind is NodeKind.HEAD else 0


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _nodes(names: list[str], n_layers: int, states: dict[str, int] | None = None, level: str = "name") -> list[list[Any]]:
    """[name, kind as drawn, rank, order, state, x] rows of the page's nodes."""
    return [
        [name, placement(name, level)[0].value, *place(name, n_layers, level), -1 if states is None else states[name], None]
        for name in names
    ]


def method_family(circuit: "Circuit") -> str:
    """Which wording a circuit's states take (``STATE_WORDS``), by how its registered method makes
    circuits (``CircuitSelection``): "acdc" (threshold methods test removals), "attribution" (score
    methods select by score), or "file" (a method the registry does not know, or none named)."""
    spec = METHODS.get(str(circuit.method.get("name", "")))
    if spec is None:
        return "file"
    return "acdc" if spec.circuits is CircuitSelection.THRESHOLD else "attribution"


def circuit_title(circuit: "Circuit", source: str | Path | None = None) -> str:
    """The page title: model · task · method, as far as the circuit names them; a file that names
    none of them (an EAP-IG / MIB graph file) is titled by its file name and graph shape."""
    parts = [str(part) for part in (circuit.model.get("name"), circuit.task.get("name")) if part]
    method = circuit.method_label()
    if parts or method:
        return " \u00b7 ".join(parts + [method or "method not recorded"])
    shape = circuit.graph.shape
    graph = f"{shape.n_layers} layers \u00d7 {shape.n_heads} heads"
    return f"{Path(source).name} \u00b7 {graph}" if source else f"circuit \u00b7 {graph}"


def attention_block(patterns: Any, tokens: list[str]) -> dict[str, Any]:
    """The page's attention data from per-head attention patterns ``[n_layers, n_heads, pos, pos]``
    (query position, key position; a tensor or nested lists) of one prompt and its ``pos`` token
    strings: ``{"tokens": [...], "patterns": nested lists}``, the weights rounded through float16 to
    ``ATTENTION_DECIMALS`` decimals (a 12 x 12-head model on a 15-token prompt: about 150 kB).
    Pass it to ``circuit_view`` / ``circuit_html`` (``attention=``), or store it as the circuit's
    ``extra["attention"]``; AcdcError if the shapes disagree."""
    weights = torch.as_tensor(patterns).detach().to("cpu", torch.float16).double()
    if weights.dim() != 4 or weights.shape[2] != weights.shape[3] or weights.shape[3] != len(tokens):
        raise AcdcError(
            f"attention patterns must be [n_layers, n_heads, pos, pos] with pos = {len(tokens)} tokens, got {list(weights.shape)}"
        )
    rounded = torch.round(weights, decimals=ATTENTION_DECIMALS).tolist()
    return {"tokens": [str(token) for token in tokens], "patterns": rounded}


def _checked_attention(block: Any, circuit: "Circuit") -> dict[str, Any] | None:
    """``block`` (``attention_block``'s dict, or None) checked against the circuit's graph shape."""
    if block is None:
        return None
    shape = circuit.graph.shape
    try:
        tokens, patterns = block["tokens"], block["patterns"]
        dims = (len(patterns), len(patterns[0]), len(patterns[0][0]), len(patterns[0][0][0]))
    except (KeyError, IndexError, TypeError):
        raise AcdcError("attention: must be {\"tokens\": [str], \"patterns\": [layer][head][query][key]}") from None
    if dims != (shape.n_layers, shape.n_heads, len(tokens), len(tokens)):
        raise AcdcError(
            f"attention: patterns are {list(dims)}, the circuit's graph needs "
            f"[{shape.n_layers}, {shape.n_heads}, {len(tokens)}, {len(tokens)}]"
        )
    return {"tokens": tokens, "patterns": patterns}


def circuit_view(
    circuit: "Circuit", title: str | None = None, source: str | Path | None = None, attention: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The view of one circuit: every edge with its score and decision (only the emitted ones
    for graphs over ``LARGEST_FULL_VIEW`` edges), coloured by the input it enters, its states worded
    for its method (``STATE_WORDS``). ``title``: default ``circuit_title(circuit, source)``
    (``source``: the file it was read from); ``attention``: an ``attention_block``, default the
    circuit's ``extra["attention"]`` if it has one. Node positions: ``viewer.layout``."""
    from acdc_engine.viewer.layout import add_graphviz_x

    g = circuit.graph
    full = g.n_edges <= LARGEST_FULL_VIEW
    senders, receivers = g.edge_exists.T.nonzero().T.flip(0)  # edge order
    columns = zip(
        senders.tolist(), receivers.tolist(),
        circuit.in_graph.edges[senders, receivers].tolist(), circuit.kept.edges[senders, receivers].tolist(),
        circuit.scores.edges.double()[senders, receivers].tolist(),
    )
    names = g.senders + ["logits"]
    index = {name: i for i, name in enumerate(names)}
    edges = []
    for s, r, in_graph, kept, score in columns:
        state = 0 if in_graph else 1 if kept else 3 if math.isnan(score) else 2
        if state and not full:
            continue
        receiver = g.receivers[r]
        inputs = parse_node(receiver).qkv or ""
        edges.append([s, index[component_of(receiver)], inputs, state, _number(score), None])
    family = method_family(circuit)
    view = {
        "mode": "circuit",
        "title": title or circuit_title(circuit, source),
        "subtitle": circuit.summary() if circuit.metric else f"{circuit.n_edges} / {circuit.n_edges_total} edges",
        "nodes": _nodes(names, g.shape.n_layers),
        "edges": edges,
        "states": [
            {"label": label, "shown": k == 0, "faint": k > 0, "colour": None, "fill": None}
            for k, label in enumerate(STATE_WORDS[family])
        ],
        "colourBy": "input",
        "colours": EDGE_COLOURS,
        "fills": FILLS,
        "values": [SCORE_WORDS[family], None],
        "note": None if full else f"the graph has {g.n_edges} edges: only the circuit's are included",
        "attention": _checked_attention(attention if attention is not None else circuit.extra.get("attention"), circuit),
    }
    add_graphviz_x(view)
    return view


def diff_view(comparison: "Comparison", i: int = 0, j: int = 1, level: str | None = None) -> dict[str, Any]:
    """The view of circuit i against circuit j (``acdc_engine.evaluation.overlap``): shared, only-i and only-j
    nodes and edges; at name level an edge's scores in both circuits, at role level its counts."""
    from acdc_engine.evaluation.overlap import _receiver_parts, edge_keys, node_keys
    from acdc_engine.formats.diff_drawing import STATUS_COLOURS, STATUS_FILLS, status_of as _status
    from acdc_engine.viewer.layout import add_graphviz_x

    level = level or comparison.levels[0]
    if level not in comparison.levels:
        raise AcdcError(f"level '{level}' does not apply to these circuits; choose one of {', '.join(comparison.levels)}")
    a, b = comparison.circuits[i], comparison.circuits[j]
    label_a, label_b = comparison.labels[i], comparison.labels[j]
    bins = comparison.n_bins
    nodes_a, nodes_b = node_keys(a, level, bins), node_keys(b, level, bins)
    edges_a, edges_b = edge_keys(a, level, bins), edge_keys(b, level, bins)
    statuses = ("shared", "only_a", "only_b")
    n_layers = bins if level == "role" else a.graph.shape.n_layers
    names = sorted(set(nodes_a) | set(nodes_b), key=lambda n: place(n, n_layers, level))
    node_state = {n: statuses.index(_status(nodes_a[n], nodes_b[n])) for n in names}
    index = {name: k for k, name in enumerate(names)}

    def score(circuit: "Circuit", edge: str) -> float | None:
        s, r = circuit.graph.parse_edge(edge)
        return _number(float(circuit.scores.edges[s, r]))

    edges = []
    for edge in sorted(set(edges_a) | set(edges_b)):
        sender, receiver = edge.split("->")
        drawn, inputs = _receiver_parts(receiver, level)
        state = statuses.index(_status(edges_a[edge], edges_b[edge]))
        if level == "name":
            values = [score(a, edge) if edges_a[edge] else None, score(b, edge) if edges_b[edge] else None]
        else:
            values = [edges_a[edge], edges_b[edge]]
        edges.append([index[sender], index[drawn], inputs, state, *values])
    source_a, source_b = comparison.sources[i], comparison.sources[j]
    texts = (f"in {label_a} and {label_b}", f"only in {label_a}: {source_a}", f"only in {label_b}: {source_b}")
    shared = sum(1 for e in edges if e[3] == 0)
    view = {
        "mode": "diff",
        "title": f"{label_a}: {source_a} vs {label_b}: {source_b}",
        "subtitle": f"{level} level · {shared} shared, {sum(e[3] == 1 for e in edges)} only in {label_a}, "
                    f"{sum(e[3] == 2 for e in edges)} only in {label_b}",
        "nodes": _nodes(names, n_layers, node_state, level),
        "edges": edges,
        "states": [
            {"label": text, "colour": STATUS_COLOURS[key], "fill": STATUS_FILLS[key], "shown": True, "faint": False}
            for key, text in zip(statuses, texts)
        ],
        "colourBy": "state",
        "colours": EDGE_COLOURS,
        "fills": FILLS,
        "values": [f"score in {label_a}", f"score in {label_b}"] if level == "name" else [f"count in {label_a}", f"count in {label_b}"],
        "note": None,
        "attention": None,
    }
    add_graphviz_x(view)
    return view

