"""The import layering of docs/design.md: every module has a layer and imports only from its own
layer or lower ones, and no modules import each other in a cycle. Read from the source with ``ast``:
every import counts, also one inside a function and one under ``if TYPE_CHECKING:`` (an annotation
that names a higher layer is a dependency on it too)."""

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "acdc_engine"

LAYERS = (  # bottom to top; an entry names a module or a package (everything under it)
    ("core", ("core",)),
    ("formats", ("formats", "reference_circuits")),
    ("models", ("architecture", "models", "tracr", "tasks", "patching")),
    ("measure", ("measure",)),
    ("methods", ("methods",)),
    ("api", ("api", "resolve")),
    ("evaluation", ("evaluation", "viewer")),
    ("commands", ("commands", "")),
)


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def layer_of(module: str) -> int:
    """The layer of the longest entry that names ``module`` or a package above it."""
    best = None
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if entry == module or entry == "" or module.startswith(entry + "."):
                if best is None or len(entry) > len(best[1]):
                    best = (index, entry)
    if best is None or (best[1] == "" and module != ""):
        raise AssertionError(f"module acdc_engine.{module} has no layer: add it to LAYERS here and to docs/design.md")
    return best[0]


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}".removeprefix("acdc_engine.") in modules
                       else node.module for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "acdc_engine" or target.startswith("acdc_engine."):
                found.add(target.removeprefix("acdc_engine").removeprefix("."))
    return found & modules


@pytest.fixture(scope="module")
def import_graph() -> nx.DiGraph:
    modules = module_names()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        graph.add_edges_from((module, target) for target in imports(path, set(modules)) if target != module)
    return graph


def test_every_module_imports_only_from_its_own_or_lower_layers(import_graph):
    upward = [
        f"acdc_engine.{a or '__init__'} ({LAYERS[layer_of(a)][0]}) imports acdc_engine.{b} ({LAYERS[layer_of(b)][0]})"
        for a, b in import_graph.edges
        if layer_of(b) > layer_of(a)
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_no_modules_import_each_other_in_a_cycle(import_graph):
    cycles = [" -> ".join(cycle + cycle[:1]) for cycle in nx.simple_cycles(import_graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_foundation_modules_depend_on_nothing_but_errors(import_graph):
    for module in ("core.nodes", "formats.atomic_files", "formats.strict_json", "core.choices"):
        assert set(import_graph.successors(module)) <= {"core.errors"}, module


def test_the_design_notes_list_the_same_layers():
    text = (PACKAGE.parent / "docs" / "design.md").read_text()
    table = text[text.index("| layer | modules | what |"):].split("\n\n")[0].splitlines()[2:]
    documented = []
    for row in table:
        _, layer, modules, _, _ = row.split("|")
        names = tuple("" if name == "__init__" else name for name in re.findall(r"`([\w.]+)`", modules))
        documented.append((layer.strip(), names))
    assert documented == [(name, entries) for name, entries in LAYERS]
