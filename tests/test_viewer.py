"""The interactive viewer: one self-contained page per circuit or diff, with what it draws as data."""

import json
import re

import pytest

from acdc_engine.evaluation.overlap import compare_circuits
from acdc_engine.commands.compare import main as acdc_compare
from acdc_engine.formats.drawing import EDGE_COLOURS
from acdc_engine.formats.circuit_file import circuit_from_dict
from acdc_engine.reference_circuits import reference_circuit
from acdc_engine.viewer import circuit_html, diff_html
from acdc_engine.commands.view import main as acdc_view
from acdc_engine.viewer.data import circuit_view, diff_view, place
from acdc_engine.formats.circuit_file import circuit_to_dict, save_circuit


def embedded_view(page):
    return json.loads(re.search(r'<script type="application/json" id="view">(.*?)</script>', page, re.S).group(1))


def test_the_page_fetches_nothing(small_circuit):
    page = circuit_html(small_circuit)
    assert not re.search(r"<\w+[^>]*\s(src|href)\s*=", page)  # in the markup; the script's one link is its data: download
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert "default-src 'none'" in page  # and the browser refuses any fetch


def test_the_page_embeds_its_view(small_circuit):
    assert embedded_view(circuit_html(small_circuit)) == json.loads(json.dumps(circuit_view(small_circuit)))


def test_a_circuit_view_holds_every_edge_with_its_decision_and_score(small_circuit):
    view = circuit_view(small_circuit)
    assert len(view["edges"]) == small_circuit.n_edges_total
    names = [n[0] for n in view["nodes"]]
    in_graph = {f"{names[s]}->{names[t]}" + (f"<{x}>" if x else "") for s, t, x, state, *_ in view["edges"] if state == 0}
    assert in_graph == set(small_circuit.edges())
    removed = [e for e in view["edges"] if e[3] == 3]
    assert removed and all(e[4] is None for e in removed)  # removed untested: no score


def test_edges_are_coloured_by_the_input_they_enter(small_circuit):
    view = circuit_view(small_circuit)
    assert view["colourBy"] == "input" and view["colours"] == EDGE_COLOURS
    assert {e[2] for e in view["edges"]} == {"q", "k", "v", ""}


def test_nodes_are_ranked_by_layer_input_at_the_bottom_and_logits_at_the_top():
    ranks = [place(name, 2)[0] for name in ("input", "a0.h2", "m0", "a1.h0", "m1", "logits")]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)


def test_text_that_would_close_the_script_is_escaped(small_circuit):
    page = circuit_html(small_circuit, title="</script><script>alert(1)</script>")
    assert page.count("</script>") == 2  # the view's and the viewer's own
    assert embedded_view(page)["title"].startswith("</script>")


def test_a_diff_view_marks_shared_and_only_a_and_only_b_edges(small_circuit):
    smaller = circuit_from_dict(circuit_to_dict(small_circuit))
    drop = smaller.graph.parse_edge(small_circuit.edges()[-1])  # an edge into logits: the rest stays on paths
    smaller.in_graph.edges[drop] = smaller.kept.edges[drop] = False
    comparison = compare_circuits([small_circuit, smaller], sources=["ioi", "smaller"])
    view = diff_view(comparison)
    states = [e[3] for e in view["edges"]]
    assert states.count(0) == small_circuit.n_edges - 1 and states.count(1) == 1 and states.count(2) == 0
    assert [s["label"] for s in view["states"]] == ["in A and B", "only in A: ioi", "only in B: smaller"]


def test_a_role_level_diff_counts_each_role_edge_in_both_circuits():
    comparison = compare_circuits([reference_circuit("toy-induction-2l"), reference_circuit("toy-induction-mlp-2l")])
    view = diff_view(comparison, level="role")
    assert view["values"] == ["count in A", "count in B"]
    assert all(isinstance(e[4], int) and isinstance(e[5], int) for e in view["edges"])


def test_acdc_view_writes_the_page_beside_the_file(tmp_path, small_circuit):
    save_circuit(small_circuit, tmp_path / "run.json")
    assert acdc_view([str(tmp_path / "run.json")]) == 0
    assert embedded_view((tmp_path / "run.html").read_text())["mode"] == "circuit"


def test_acdc_view_of_two_files_writes_their_diff(tmp_path, small_circuit):
    save_circuit(small_circuit, tmp_path / "a.json")
    out = tmp_path / "d.html"
    assert acdc_view([str(tmp_path / "a.json"), "toy-induction-mlp-2l", "--out", str(out), "--level", "role"]) == 0
    assert embedded_view(out.read_text())["mode"] == "diff"


def test_acdc_view_errors_are_one_line(tmp_path, capsys):
    assert acdc_view([str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("acdc-view: error:") and "\n" not in err


def test_acdc_compare_writes_a_diff_view_for_every_pair(tmp_path):
    assert acdc_compare(["toy-induction-2l", "toy-induction-mlp-2l", "--out", str(tmp_path)]) == 0
    view = embedded_view((tmp_path / "diff_A_B.html").read_text())
    assert view["mode"] == "diff" and view["subtitle"].startswith("role level")


@pytest.mark.parametrize("page", ["circuit", "diff"])
def test_pages_are_html_documents(small_circuit, page):
    text = circuit_html(small_circuit) if page == "circuit" else diff_html(compare_circuits([small_circuit, small_circuit]))
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


class _Formatter:
    """The part of an IPython display formatter that registration uses: ``for_type``."""

    def __init__(self) -> None:
        self.by_type = {}

    def for_type(self, cls, render):
        self.by_type[cls] = render


def test_a_notebook_shows_a_circuit_as_its_interactive_page_and_its_drawing(small_circuit):
    from types import SimpleNamespace

    from acdc_engine.core.circuit import Circuit
    from acdc_engine.viewer.notebook import register_notebook_display

    formatters = {"text/html": _Formatter(), "image/svg+xml": _Formatter()}
    assert register_notebook_display(SimpleNamespace(display_formatter=SimpleNamespace(formatters=formatters)))
    assert formatters["text/html"].by_type[Circuit](small_circuit).startswith("<iframe srcdoc=")
    assert "<svg" in formatters["image/svg+xml"].by_type[Circuit](small_circuit)
