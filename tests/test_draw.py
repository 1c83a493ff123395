"""Drawings: the emitted circuit only, ranked input-to-logits, q/k/v colours, rendered when possible."""

import re

import pytest

from acdc_engine import draw
from acdc_engine.circuit import Circuit


def test_dot_draws_only_nodes_of_the_emitted_circuit(small_circuit):
    source = small_circuit.to_dot()
    drawn = set(re.findall(r'^\s*"?([\w.]+)"? \[label=', source, flags=re.M))
    assert drawn - {"legend"} == set(small_circuit.nodes())


def test_dot_draws_one_arrow_per_emitted_edge(small_circuit):
    assert small_circuit.to_dot().count(" -> ") == small_circuit.n_edges


def test_query_key_value_edges_have_distinct_colours(small_circuit):
    source = small_circuit.to_dot()
    for qkv in "qkv":
        if any(name.endswith(f"<{qkv}>") for name in small_circuit.edges()):
            assert draw.EDGE_COLOURS[qkv] in source
    assert len({draw.EDGE_COLOURS[x] for x in "qkv"}) == 3


def test_input_is_at_the_bottom_and_logits_at_the_top(small_circuit):
    source = small_circuit.to_dot()
    assert "rankdir=BT" in source
    assert re.search(r"rank=min\s+input", source)
    assert re.search(r"rank=max\s+logits", source)


def test_edge_width_grows_with_effect_size(small_circuit):
    widths = [float(w) for w in re.findall(r'penwidth="?([\d.]+)', small_circuit.to_dot())]
    assert min(widths) >= 1.0 and max(widths) == pytest.approx(5.0)


def test_svg_and_png_are_written_when_a_renderer_exists(small_circuit, tmp_path):
    written = draw.write_drawings(small_circuit, tmp_path)
    assert [p.name for p in written] == ["circuit.dot", "circuit.svg", "circuit.png"]
    assert (tmp_path / "circuit.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "circuit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_a_renderer_only_dot_is_written_with_one_warning(small_circuit, tmp_path, monkeypatch):
    monkeypatch.setattr(draw.shutil, "which", lambda program: None)
    with pytest.warns(UserWarning, match="no Graphviz renderer") as caught:
        written = draw.write_drawings(small_circuit, tmp_path)
    assert len(caught) == 1
    assert [p.name for p in written] == ["circuit.dot"]


def test_circuit_draws_inline_in_jupyter(small_circuit):
    assert isinstance(small_circuit, Circuit)
    assert "<svg" in small_circuit._repr_svg_()
