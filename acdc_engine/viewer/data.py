"""What the interactive viewer draws, as plain data: nodes placed by rank, edges with their input
(q/k/v), scores and state (decision, or diff status). ``circuit_view`` for one circuit,
``diff_view`` for two circuits compared.

A view is a dict (embedded in the page as JSON)::

    {"mode": "circuit" | "diff", "title": str, "subtitle": str,
     "nodes": [[name, kind, rank, order, state]],       # kind: input, head, mlp, logits; state: -1 or index
     "edges": [[sender, receiver, input, state, a, b]], # node indices; input "q"/"k"/"v"/""; a, b: numbers or null
     "states": [{"label", "colour", "fill", "shown", "faint"}],   # per edge/node state: legend and toggles
     "colourBy": "input" | "state", "colours": {"q", "k", "v", "other"}, "fills": {kind: colour},
     "values": [label of a, label of b], "note": str | null}

Ranks run bottom to top: the input at 0, layer L's heads at 2L + 1 and its MLP at 2L + 2, logits at
the top; ``order`` places a node within its rank (the head index).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from acdc_engine.formats.drawing import EDGE_COLOURS, NODE_STYLE
from acdc_engine.core.nodes import component_of

if TYPE_CHECKING:
    from acdc_engine.core.circuit import Circuit
    from acdc_engine.evaluation.overlap import Comparison

LARGEST_FULL_VIEW = 60_000  # edges: a larger graph's view holds the circuit's edges only
FILLS = {kind: style["fillcolor"] for kind, style in NODE_STYLE.items()}
CIRCUIT_STATES = [
    {"label": "in the circuit", "shown": True, "faint": False},
    {"label": "kept, but off every input-to-logits path", "shown": False, "faint": True},
    {"label": "removed (tested)", "shown": False, "faint": True},
    {"label": "removed untested", "shown": False, "faint": True},
]


def _kind(node: str) -> str:
    if node == "logits":
        return "logits"
    if node.startswith(("a", "heads@")):
        return "head"
    if node.startswith(("m", "mlp@")):
        return "mlp"
    return "input"


def place(node: str, n_layers: int) -> tuple[int, int]:
    """(rank, order) of a node name (``a3.h1``, ``m2``, ``input``) or role slot (``heads@1``)."""
    if node == "logits":
        return 2 * n_layers + 1, 0
    if node in ("input", "tok_embed", "embed"):
        return 0, 0
    if node == "pos_embed":
        return 0, 1
    if "@" in node:
        kind, depth = node.split("@")
        return 2 * int(depth) + (2 if kind == "mlp" else 1), 0
    layer = int(node[1:].split(".")[0])
    if node.startswith("m"):
        return 2 * layer + 2, 0
    return 2 * layer + 1, int(node.split(".h")[1])


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _nodes(names: list[str], n_layers: int, states: dict[str, int] | None = None) -> list[list[Any]]:
    return [[name, _kind(name), *place(name, n_layers), -1 if states is None else states[name]] for name in names]


def circuit_view(circuit: "Circuit", title: str | None = None) -> dict[str, Any]:
    """The view of one circuit: every edge with its score and decision (only the emitted ones
    for graphs over ``LARGEST_FULL_VIEW`` edges), coloured by the input it enters."""
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
        inputs = receiver[-2] if receiver.endswith(">") else ""
        edges.append([s, index[component_of(receiver)], inputs, state, _number(score), None])
    m = circuit.metric or {}
    subtitle = circuit.summary()
    details = [str(part) for part in (circuit.model.get("name"), circuit.task.get("name"), circuit.method.get("name")) if part]
    if circuit.threshold is not None:
        details.append(f"threshold {circuit.threshold:g}")
    return {
        "mode": "circuit",
        "title": title or " · ".join(details) or "circuit",
        "subtitle": subtitle if m else f"{circuit.n_edges} / {circuit.n_edges_total} edges",
        "nodes": _nodes(names, g.shape.n_layers),
        "edges": edges,
        "states": [{**s, "colour": None, "fill": None} for s in CIRCUIT_STATES],
        "colourBy": "input",
        "colours": EDGE_COLOURS,
        "fills": FILLS,
        "values": ["score", None],
        "note": None if full else f"the graph has {g.n_edges} edges: only the circuit's are included",
    }


def diff_view(comparison: "Comparison", i: int = 0, j: int = 1, level: str | None = None) -> dict[str, Any]:
    """The view of circuit i against circuit j (``acdc_engine.evaluation.overlap``): shared, only-i and only-j
    nodes and edges; at name level an edge's scores in both circuits, at role level its counts."""
    from acdc_engine.evaluation.overlap import _receiver_parts, edge_keys, node_keys
    from acdc_engine.formats.diff_drawing import STATUS_COLOURS, STATUS_FILLS, status_of as _status
    from acdc_engine.core.errors import AcdcError

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
    names = sorted(set(nodes_a) | set(nodes_b), key=lambda n: place(n, n_layers))
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
    return {
        "mode": "diff",
        "title": f"{label_a}: {source_a} vs {label_b}: {source_b}",
        "subtitle": f"{level} level · {shared} shared, {sum(e[3] == 1 for e in edges)} only in {label_a}, "
                    f"{sum(e[3] == 2 for e in edges)} only in {label_b}",
        "nodes": _nodes(names, n_layers, node_state),
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
    }

