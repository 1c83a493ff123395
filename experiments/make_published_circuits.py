"""Write the published circuits of IOI, greater-than and docstring as circuit files, for ROC work.

    python experiments/make_published_circuits.py            # writes acdc_engine/reference_circuits/
    python experiments/make_published_circuits.py --out DIR

Each circuit is built on the graph of the model it was found in (GPT-2 small for ioi and greater-than,
the attention-only 4-layer attn-only-4l for docstring; only the shape is needed, no weights), with
the edges as the ACDC paper (Conmy et al. 2023) encodes the published circuits for its ROC curves
(its repository ArthurConmy/Automatic-Circuit-Discovery: ``get_ioi_true_edges`` in acdc/ioi/utils.py,
``get_greaterthan_true_edges`` in acdc/greaterthan/utils.py, ``get_docstring_subgraph_true_edges``
in acdc/docstring/utils.py). ``kept`` holds the published edges and head inputs, ``in_graph`` the
part of them on input-to-logits paths (for these three, all of them). The file's ``reference``
field records the source, the classes of components and the class-to-class connections.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch

from acdc_engine.core.mask import CircuitMask
from acdc_engine.core.circuit import Circuit
from acdc_engine.core.graph import GraphShape, build_graph
from acdc_engine.core.nodes import LOGITS, QKV, head_name, head_receiver_name, mlp_name, parse_node
from acdc_engine.reference_circuits import FOLDER
from acdc_engine.formats.circuit_file import save_circuit

ACDC_REPOSITORY = "https://github.com/ArthurConmy/Automatic-Circuit-Discovery"
Head = tuple[int, int]


def _layer(node: str) -> int:
    """The layer of a head, head receiver or MLP: ``a3.h1<q>`` -> 3, ``m7`` -> 7."""
    return parse_node(node).layer


def _input_of(head: str, qkv: str) -> str:
    """The ``qkv`` input of the head named ``head``: (``a3.h0``, "q") -> ``a3.h0<q>``."""
    node = parse_node(head)
    return head_receiver_name(node.layer, node.head, qkv)


def _receivers_of(component: str) -> list[str]:
    """A component's receivers: a head's q, k and v inputs; an MLP or ``logits`` is its own."""
    node = parse_node(component)
    return [head_receiver_name(node.layer, node.head, x) for x in QKV] if node.kind == "head" else [component]


# Wang et al. 2022, the 26 heads of GPT-2 small's IOI circuit by class.
IOI_CLASSES: dict[str, list[Head]] = {
    "name mover": [(9, 9), (10, 0), (9, 6)],
    "backup name mover": [(10, 10), (10, 6), (10, 2), (10, 1), (11, 2), (9, 7), (9, 0), (11, 9)],
    "negative name mover": [(10, 7), (11, 10)],
    "s-inhibition": [(7, 3), (7, 9), (8, 6), (8, 10)],
    "induction": [(5, 5), (5, 8), (5, 9), (6, 9)],
    "duplicate token": [(0, 1), (0, 10), (3, 0)],
    "previous token": [(2, 2), (4, 11)],
}
# (sender class, receiver class, the receiver's inputs it feeds); "input" is the embedding and every
# MLP, "logits" the logits and every MLP input (the ACDC encoding's INPUT and OUTPUT).
IOI_CONNECTIONS: list[tuple[str, str, str]] = [
    ("input", "previous token", "qkv"),
    ("input", "duplicate token", "qkv"),
    ("input", "s-inhibition", "q"),
    ("input", "negative name mover", "kv"),
    ("input", "name mover", "kv"),
    ("input", "backup name mover", "kv"),
    ("previous token", "induction", "kv"),
    ("induction", "s-inhibition", "kv"),
    ("duplicate token", "s-inhibition", "kv"),
    ("s-inhibition", "negative name mover", "q"),
    ("s-inhibition", "name mover", "q"),
    ("s-inhibition", "backup name mover", "q"),
    ("negative name mover", "logits", ""),
    ("name mover", "logits", ""),
    ("backup name mover", "logits", ""),
]

# Hanna et al. 2023, GPT-2 small's greater-than circuit by class; (layer, None) is that layer's MLP.
GREATER_THAN_CLASSES: dict[str, list[tuple[int, int | None]]] = {
    "0305": [(0, 3), (0, 5)],
    "01": [(0, 1)],
    "MEARLY": [(0, None), (1, None), (2, None), (3, None)],
    "AMID": [(5, 5), (6, 1), (6, 9), (7, 10), (8, 11), (9, 1)],
    "MLATE": [(8, None), (9, None), (10, None), (11, None)],
}
GREATER_THAN_CONNECTIONS: list[tuple[str, str]] = [
    ("input", "0305"), ("input", "01"), ("input", "MEARLY"),
    ("01", "MEARLY"), ("01", "AMID"), ("0305", "AMID"), ("MEARLY", "AMID"), ("AMID", "MLATE"),
    ("AMID", "logits"), ("MLATE", "logits"),
]

# Heimersheim & Janiak 2023, attn-only-4l's docstring circuit: (sender, receiver) edges.
DOCSTRING_EDGES: list[tuple[str, str]] = [
    ("input", "a0.h5<v>"),
    ("a0.h5", "a1.h4<v>"), ("input", "a1.h4<v>"),
    ("input", "a1.h2<q>"), ("a0.h5", "a1.h2<q>"), ("input", "a1.h2<k>"), ("a0.h5", "a1.h2<k>"),
    ("input", "a2.h0<q>"), ("a0.h5", "a2.h0<q>"), ("input", "a2.h0<k>"), ("a0.h5", "a2.h0<k>"), ("a1.h4", "a2.h0<v>"),
    *[
        edge
        for head in ("a3.h0", "a3.h6")
        for edge in [
            (head, LOGITS), ("a1.h4", _input_of(head, "q")), ("a2.h0", _input_of(head, "k")),
            ("a1.h2", _input_of(head, "k")), ("input", _input_of(head, "v")), ("a0.h5", _input_of(head, "v")),
        ]
    ],
]
DOCSTRING_HEAD_INPUTS = ["a0.h5<v>", "a1.h4<v>", "a1.h2<q>", "a1.h2<k>"] + [
    receiver for head in ("a2.h0", "a3.h0", "a3.h6") for receiver in _receivers_of(head)
]

GPT2_SMALL = GraphShape(n_layers=12, n_heads=12, has_mlp=True)
ATTN_ONLY_4L = GraphShape(n_layers=4, n_heads=8, has_mlp=False)


def published_circuit(
    shape: GraphShape, model_name: str, task: str, edges: Callable[[str, str], bool], head_inputs: set[str], reference: dict
) -> Circuit:
    """A circuit over ``shape``'s graph holding the edges ``edges(sender, receiver)`` accepts and the
    named head inputs; unscored, with no metric."""
    graph = build_graph(shape)
    edge_kept = torch.zeros_like(graph.edge_exists)
    for sender, receiver in graph.edges():
        if edges(sender, receiver):
            edge_kept[graph.sender_index[sender], graph.receiver_index[receiver]] = True
    head_kept = torch.zeros(shape.n_layers, shape.n_heads, 3, dtype=torch.bool)
    for name in head_inputs:
        head_kept[graph.parse_head_input(name)] = True
    return Circuit.unscored(
        graph, CircuitMask(edge_kept, head_kept),
        model={"name": model_name, "n_layers": shape.n_layers, "n_heads": shape.n_heads, "attn_only": not shape.has_mlp, "split_input": False},
        task={"name": task},
        method={"name": "published", "source": f"{reference['paper']}; edges as encoded in {reference['encoding']}"},
        extra={"reference": reference},
    )


def ioi_circuit() -> Circuit:
    """All edges among the input, the MLPs, the 26 heads and the logits, except that a head's q/k/v
    take from the input and from other heads only what ``IOI_CONNECTIONS`` lists, and only name
    movers, backup and negative name movers write to the logits (the ACDC encoding)."""
    class_of = {head_name(*head): name for name, heads in IOI_CLASSES.items() for head in heads}
    allowed = {(a, b, x) for a, b, letters in IOI_CONNECTIONS for x in letters}
    to_logits = {a for a, b, _ in IOI_CONNECTIONS if b == "logits"}

    def keep(sender: str, receiver: str) -> bool:
        source, target = parse_node(sender), parse_node(receiver)
        if source.kind == "head" and sender not in class_of:
            return False
        if target.kind == "head_receiver" and target.component not in class_of:
            return False
        if target.kind == LOGITS:
            return source.kind != "head" or class_of[sender] in to_logits
        if "mlp" in (source.kind, target.kind):  # MLPs keep every edge
            return True
        return (class_of.get(sender, "input"), class_of[target.component], target.qkv) in allowed

    heads = {head_receiver_name(*head, x) for heads in IOI_CLASSES.values() for head in heads for x in QKV}
    reference = {
        "paper": "Wang et al. 2022, Interpretability in the Wild: a Circuit for Indirect Object Identification in GPT-2 small",
        "encoding": f"{ACDC_REPOSITORY}, acdc/ioi/utils.py, get_ioi_true_edges",
        "classes": {name: [head_name(*h) for h in hs] for name, hs in IOI_CLASSES.items()},
        "connections": [list(c) for c in IOI_CONNECTIONS],
        "notes": "MLPs keep all their edges; 'input' in connections is the embedding and every MLP, "
        "'logits' the logits and every MLP input",
    }
    return published_circuit(GPT2_SMALL, "gpt2", "ioi", keep, heads, reference)


def greater_than_circuit() -> Circuit:
    """``GREATER_THAN_CONNECTIONS`` between the classes' components (a head feeds a later layer, or
    its own layer's MLP), the MLPs of one class interconnected, and, as the ACDC encoding adds for the
    AMID heads' clean queries, every MLP below layer 9 feeding every later such MLP and the <q> of
    every later AMID head."""
    component = {name: [mlp_name(l) if h is None else head_name(l, h) for l, h in members] for name, members in GREATER_THAN_CLASSES.items()}
    amid_top = max(layer for layer, _ in GREATER_THAN_CLASSES["AMID"])

    def feeds(sender: str, receiver_component: str) -> bool:
        s, r = _layer(sender), _layer(receiver_component)
        return s < r or (s == r and parse_node(sender).kind == "head" and parse_node(receiver_component).kind == "mlp")

    kept: set[tuple[str, str]] = set()

    def connect(sender: str, component_name: str) -> None:
        kept.update((sender, r) for r in _receivers_of(component_name))

    for a, b in GREATER_THAN_CONNECTIONS:
        for s in ["input"] if a == "input" else component[a]:
            if b == LOGITS:
                kept.add((s, LOGITS))
                continue
            for r in component[b]:
                if s == "input" or feeds(s, r):
                    connect(s, r)
    for name in ("MEARLY", "MLATE"):
        kept.update((s, r) for s in component[name] for r in component[name] if _layer(s) < _layer(r))
    kept.update((mlp_name(s), mlp_name(r)) for s in range(amid_top) for r in range(s + 1, amid_top))
    kept.update((mlp_name(s), head_receiver_name(l, h, "q")) for l, h in GREATER_THAN_CLASSES["AMID"] for s in range(l))
    heads = {head_receiver_name(l, h, x) for members in GREATER_THAN_CLASSES.values() for l, h in members if h is not None for x in QKV}
    reference = {
        "paper": "Hanna et al. 2023, How does GPT-2 compute greater-than?",
        "encoding": f"{ACDC_REPOSITORY}, acdc/greaterthan/utils.py, get_greaterthan_true_edges",
        "classes": component,
        "connections": [list(c) for c in GREATER_THAN_CONNECTIONS],
        "notes": f"MLPs of one class interconnected; every MLP below layer {amid_top} feeds every later such MLP "
        "and the <q> of every later AMID head",
    }
    return published_circuit(GPT2_SMALL, "gpt2", "greater-than", lambda s, r: (s, r) in kept, heads, reference)


def docstring_circuit() -> Circuit:
    """``DOCSTRING_EDGES`` and ``DOCSTRING_HEAD_INPUTS``: the 37 edges of Heimersheim & Janiak's
    circuit as the ACDC encoding counts them (24 edges between components, 13 head inputs)."""
    kept = set(DOCSTRING_EDGES)
    reference = {
        "paper": "Heimersheim & Janiak 2023, A circuit for Python docstrings in a 4-layer attention-only transformer",
        "encoding": f"{ACDC_REPOSITORY}, acdc/docstring/utils.py, get_docstring_subgraph_true_edges",
        "heads": ["a0.h5", "a1.h2", "a1.h4", "a2.h0", "a3.h0", "a3.h6"],
        "connections": [list(e) for e in DOCSTRING_EDGES],
    }
    return published_circuit(ATTN_ONLY_4L, "attn-only-4l", "docstring", lambda s, r: (s, r) in kept, set(DOCSTRING_HEAD_INPUTS), reference)


CIRCUITS: dict[str, Callable[[], Circuit]] = {
    "ioi": ioi_circuit,
    "greater-than": greater_than_circuit,
    "docstring": docstring_circuit,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FOLDER, help="folder for <name>.json (default: the package's)")
    args = parser.parse_args()
    for name, make in CIRCUITS.items():
        circuit = make()
        path = save_circuit(circuit, args.out / f"{name}.json")
        kept = int(circuit.kept.edges.sum()) + int(circuit.kept.head_inputs.sum())
        print(f"{path}: {circuit.n_edges} edges in graph of {circuit.n_edges_total}, "
              f"{int(circuit.in_graph.head_inputs.sum())} head inputs; {kept} published edges and head inputs, "
              f"{len(circuit.nodes())} nodes")


if __name__ == "__main__":
    main()
