"""Drawings: the emitted circuit only, ranked input-to-logits, q/k/v colours, rendered when possible."""

import re

import pytest

from acdc_engine.core.mask import CircuitMask
from acdc_engine.formats import drawing as draw
from acdc_engine.core.circuit import Circuit
from acdc_engine.formats.drawing import circuit_svg, circuit_to_dot


def test_dot_draws_only_nodes_of_the_emitted_circuit(small_circuit):
    source = circuit_to_dot(small_circuit)
    drawn = set(re.findall(r'^\s*"?([\w.]+)"? \[label=', source, flags=re.M))
    assert drawn - {"legend"} == set(small_circuit.nodes())


def test_dot_draws_one_arrow_per_emitted_edge(small_circuit):
    assert circuit_to_dot(small_circuit).count(" -> ") == small_circuit.n_edges


def test_query_key_value_edges_have_distinct_colours(small_circuit):
    source = circuit_to_dot(small_circuit)
    for qkv in "qkv":
        if any(name.endswith(f"<{qkv}>") for name in small_circuit.edges()):
            assert draw.EDGE_COLOURS[qkv] in source
    assert len({draw.EDGE_COLOURS[x] for x in "qkv"}) == 3


def test_input_is_at_the_bottom_and_logits_at_the_top(small_circuit):
    source = circuit_to_dot(small_circuit)
    assert "rankdir=BT" in source
    assert re.search(r"rank=min\s+input", source)
    assert re.search(r"rank=max\s+logits", source)


def test_edge_width_grows_with_effect_size(small_circuit):
    widths = [float(w) for w in re.findall(r'penwidth="?([\d.]+)', circuit_to_dot(small_circuit))]
    assert min(widths) >= 1.0 and max(widths) == pytest.approx(5.0)


def test_the_legend_is_the_graphs_label_outside_the_drawing(small_circuit):
    source = circuit_to_dot(small_circuit)
    assert "cluster_legend" not in source and re.search(r"^\s*label=<<TABLE", source, flags=re.M)
    assert "labelloc=t" in source


def test_nodes_edge_labels_and_legend_share_one_sans_serif_font(small_circuit, tmp_path):
    draw.write_drawings(small_circuit, tmp_path)
    fonts = set(re.findall(r'font-family="([^"]*)"', (tmp_path / "circuit.svg").read_text()))
    assert len(fonts) == 1 and fonts.pop().lower().endswith("sans-serif")


def test_pngs_are_rendered_at_a_resolution_fit_for_slides(small_circuit, tmp_path):
    from PIL import Image

    draw.write_drawings(small_circuit, tmp_path)
    svg_width = float(re.search(r'<svg width="([\d.]+)pt"', (tmp_path / "circuit.svg").read_text()).group(1))
    png_width = Image.open(tmp_path / "circuit.png").size[0]
    assert 150 <= png_width / svg_width * 72 <= 200  # pixels per inch


def test_svg_and_png_are_written_when_a_renderer_exists(small_circuit, tmp_path):
    written = draw.write_drawings(small_circuit, tmp_path)
    assert [p.name for p in written] == ["circuit.dot", "circuit.svg", "circuit.png"]
    assert (tmp_path / "circuit.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "circuit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_a_renderer_only_dot_is_written_with_one_warning(small_circuit, tmp_path, monkeypatch):
    monkeypatch.setattr(draw.shutil, "which", lambda program, path=None: None)
    with pytest.warns(UserWarning, match="no Graphviz renderer") as caught:
        written = draw.write_drawings(small_circuit, tmp_path)
    assert len(caught) == 1
    assert [p.name for p in written] == ["circuit.dot"]


def test_circuit_draws_inline_in_jupyter(small_circuit):
    assert isinstance(small_circuit, Circuit)
    assert "<svg" in circuit_svg(small_circuit)


def test_the_renderer_is_found_next_to_the_interpreter_without_an_activated_environment(monkeypatch, tmp_path):
    renderer = tmp_path / "graphviz-pure"
    renderer.write_text("#!/bin/sh\n")
    renderer.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(draw.sys, "executable", str(tmp_path / "python"))
    assert draw.find_renderer() == [str(renderer)]


def large_circuit(n_edges):
    """A circuit of about ``n_edges`` emitted edges on a GPT-2-shaped graph."""
    import torch

    from acdc_engine.core.graph import GraphShape, build_graph

    graph = build_graph(GraphShape(12, 12, True))
    kept = graph.edge_exists & (torch.rand(graph.edge_exists.shape, generator=torch.Generator().manual_seed(0)) < n_edges / 16000)
    return Circuit.unscored(graph, CircuitMask(kept, graph.full_head_input_mask()))


def test_large_drawings_have_no_edge_labels_and_fewer_layout_passes():
    circuit = large_circuit(900)
    assert circuit.n_edges > draw.FAST_LAYOUT
    source = circuit_to_dot(circuit)
    assert not re.search(r"label=[qkv]\b", source) and "mclimit=0.1" in source


def test_small_drawings_keep_their_qkv_labels(small_circuit):
    assert small_circuit.n_edges <= draw.LABEL_LIMIT
    assert re.search(r"label=[qkv]\b", circuit_to_dot(small_circuit))


def test_above_the_png_limit_only_dot_and_svg_are_written_and_said_in_one_line(tmp_path):
    circuit = large_circuit(800)
    assert draw.PNG_LIMIT < circuit.n_edges <= draw.RENDER_LIMIT
    notes = []
    written = draw.write_drawings(circuit, tmp_path, notes=notes)
    assert [p.name for p in written] == ["circuit.dot", "circuit.svg"]
    assert len(notes) == 1 and "no PNG" in notes[0] and "\n" not in notes[0]


def test_above_the_render_limit_only_the_dot_source_is_written(tmp_path):
    circuit = large_circuit(4000)
    assert circuit.n_edges > draw.RENDER_LIMIT
    with pytest.warns(draw.DrawingNote, match="no SVG/PNG"):
        written = draw.write_drawings(circuit, tmp_path)
    assert [p.name for p in written] == ["circuit.dot"]
    assert circuit_svg(circuit) is None
