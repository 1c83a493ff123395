"""The node vocabulary has one home: ``acdc_engine/core/nodes.py`` builds and reads node names and
says what kind a node is (``NodeKind``). Everywhere else, code asks ``parse_node`` and compares
``NodeKind`` members; it never compares a kind with a string literal, keys a table by kind strings,
or takes a node name apart by hand. Read from the source with ``ast``."""

import ast
import re
from pathlib import Path

import pytest

from acdc_engine.core.nodes import NodeKind

PACKAGE = Path(__file__).resolve().parent.parent / "acdc_engine"
VOCABULARY = PACKAGE / "core" / "nodes.py"
KIND_VALUES = {kind.value for kind in NodeKind}
NAME_PIECES = {"a", "m", "<q>", "<k>", "<v>", "<", ">", ".h"}
"""Prefixes and suffixes that only take a node name apart: ``a{L}.h{H}``, ``m{L}``, ``<q>``."""
NAME_PATTERN = re.compile(r"\\.h|<\[?q|\[qkv\]")
"""Regex source that parses node names (``a(\\d+)\\.h(\\d+)``, ``<([qkv])>``)."""


def modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path != VOCABULARY)


def _is_kind(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "kind") or (isinstance(node, ast.Name) and node.id == "kind")


def _kind_literals(node: ast.AST) -> list[str]:
    values = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [v.value for v in values if isinstance(v, ast.Constant) and v.value in KIND_VALUES]


def problems(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_kind(side) for side in sides) and any(_kind_literals(side) for side in sides):
                found.append(f"{where}: a node kind compared with a string literal")
        elif isinstance(node, ast.Dict):
            if sum(bool(_kind_literals(key)) for key in node.keys if key is not None) >= 2:
                found.append(f"{where}: a table keyed by node-kind strings")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("startswith", "endswith"):
            pieces = [p for a in node.args for p in (a.elts if isinstance(a, ast.Tuple) else [a])]
            if any(isinstance(p, ast.Constant) and p.value in NAME_PIECES for p in pieces):
                found.append(f"{where}: a node name taken apart by hand ({node.func.attr})")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("compile", "match", "fullmatch", "search", "findall"):
            if any(isinstance(a, ast.Constant) and isinstance(a.value, str) and NAME_PATTERN.search(a.value) for a in node.args[:1]):
                found.append(f"{where}: a node name parsed with a regular expression")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_outside_the_vocabulary_handles_node_kinds_or_names_as_strings(path):
    assert problems(path) == []


def test_the_check_finds_what_it_forbids(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        'if node.kind == "head": pass\n'
        'STYLE = {"head": 1, "mlp": 2}\n'
        'if name.startswith("a"): pass\n'
        'if name.startswith(("m", "mlp@")): pass\n'
        'import re\nre.compile(r"a(\\d+)\\.h(\\d+)")\n'
    )
    assert len(problems(sample)) == 5
