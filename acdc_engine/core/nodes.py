"""Node names of the computational graph: the one place that builds them and says what a name is.

    input senders    ``input``, or ``tok_embed`` and ``pos_embed`` (``split_input``)
    head             ``a{L}.h{H}``         sender: head H of layer L's result
    head receiver    ``a{L}.h{H}<q>``      receiver: that head's query (``<k>`` key, ``<v>`` value) input
    mlp              ``m{L}``              layer L's MLP: one name for its receiver (input) and sender (output)
    logits           ``logits``            receiver: the final residual stream
    edge             ``{sender}->{receiver}``

``parse_node`` answers what a name is (its kind, layer, head, q/k/v); the builders make names.
No other module assembles or takes apart these strings. Depends on nothing but ``errors``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from acdc_engine.core.errors import AcdcError

QKV = ("q", "k", "v")
INPUT, TOK_EMBED, POS_EMBED, LOGITS = "input", "tok_embed", "pos_embed", "logits"
INPUT_NAMES = (INPUT, TOK_EMBED, POS_EMBED)


class NodeKind(str, Enum):
    """What a node name can be; the three input kinds are also ``Node.is_input``. A str-valued enum:
    ``NodeKind.HEAD == "head"``, and the value is what files and the viewer write."""

    INPUT = "input"
    TOK_EMBED = "tok_embed"
    POS_EMBED = "pos_embed"
    HEAD = "head"
    HEAD_RECEIVER = "head_receiver"
    MLP = "mlp"
    LOGITS = "logits"

    def __str__(self) -> str:
        return self.value


INPUT_KINDS = (NodeKind.INPUT, NodeKind.TOK_EMBED, NodeKind.POS_EMBED)

_EDGE_ARROW = "->"
_COMPONENT = re.compile(r"a(?P<layer>\d+)\.h(?P<head>\d+)(?:<(?P<qkv>[qkv])>)?|m(?P<mlp>\d+)")


def head_name(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def head_receiver_name(layer: int, head: int, qkv: str) -> str:
    """``a{layer}.h{head}<{qkv}>``; ``qkv`` is "q", "k" or "v"."""
    return f"a{layer}.h{head}<{qkv}>"


def mlp_name(layer: int) -> str:
    return f"m{layer}"


def edge_name(sender: str, receiver: str) -> str:
    return f"{sender}{_EDGE_ARROW}{receiver}"


def split_edge(name: str) -> tuple[str, str]:
    """``"a0.h1->a1.h2<k>"`` -> ("a0.h1", "a1.h2<k>"): split at the first arrow; AcdcError if there is none."""
    sender, arrow, receiver = name.partition(_EDGE_ARROW)
    if not arrow:
        raise AcdcError(f"'{name}' is not an edge name (expected 'sender->receiver')")
    return sender, receiver


@dataclass(frozen=True)
class Node:
    """What a node name says. ``layer`` and ``head`` are None where the kind has none; ``qkv`` is
    set for head receivers only."""

    name: str
    kind: NodeKind
    layer: int | None = None
    head: int | None = None
    qkv: str | None = None

    @property
    def is_input(self) -> bool:
        return self.kind in INPUT_KINDS

    @property
    def qkv_index(self) -> int:
        """0, 1, 2 for a head receiver's q, k, v."""
        if self.qkv is None:
            raise AcdcError(f"'{self.name}' is not a head receiver")
        return QKV.index(self.qkv)

    @property
    def component(self) -> str:
        """The component the node belongs to: a head receiver's head (``a1.h2<k>`` -> ``a1.h2``);
        every other node is its own."""
        return head_name(self.layer, self.head) if self.kind is NodeKind.HEAD_RECEIVER else self.name


@lru_cache(maxsize=None)
def parse_node(name: str) -> Node:
    """The node ``name`` denotes; AcdcError if it is no node name (names are canonical: ``a01.h2``
    is refused, so that every node has exactly one name)."""
    if name in INPUT_NAMES or name == LOGITS:
        return Node(name, NodeKind(name))
    match = _COMPONENT.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise AcdcError(f"'{name}' is not a node name (e.g. 'input', 'a0.h1', 'a0.h1<q>', 'm0', 'logits')")
    if match["mlp"] is not None:
        node = Node(name, NodeKind.MLP, layer=int(match["mlp"]))
        canonical = mlp_name(node.layer)
    elif match["qkv"] is not None:
        node = Node(name, NodeKind.HEAD_RECEIVER, layer=int(match["layer"]), head=int(match["head"]), qkv=match["qkv"])
        canonical = head_receiver_name(node.layer, node.head, node.qkv)
    else:
        node = Node(name, NodeKind.HEAD, layer=int(match["layer"]), head=int(match["head"]))
        canonical = head_name(node.layer, node.head)
    if canonical != name:
        raise AcdcError(f"'{name}' is not a node name; the node is written '{canonical}'")
    return node


def component_of(name: str) -> str:
    """The component a node belongs to: ``a1.h2<k>`` -> ``a1.h2``; ``m0``, ``logits``, heads and
    the input senders are their own."""
    return parse_node(name).component
