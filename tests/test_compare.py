"""Comparing circuits: overlap by name and by role, metrics side by side, diff drawings, acdc-compare."""

from collections import Counter

import pytest

from acdc_engine import AcdcError
from acdc_engine.evaluation.overlap import (
    compare_circuits,
    edge_keys,
    faithfulness_from_file,
    node_keys,
    overlap,
    role_of,
)
from acdc_engine.formats.diff_drawing import STATUS_COLOURS, diff_dot
from acdc_engine.commands.compare import main as acdc_compare
from acdc_engine.core.graph import GraphShape, build_graph
from acdc_engine.formats.circuit_file import circuit_from_dict
from acdc_engine.formats.circuit_file import save_circuit

TWO_LAYERS = {"name": "toy-a", "n_layers": 2, "n_heads": 4, "attn_only": True}
FOUR_LAYERS = {"name": "toy-b", "n_layers": 4, "n_heads": 2, "attn_only": True}
INDUCTION = {"input->a0.h3<v>", "a0.h3->a1.h2<k>", "input->a1.h2<q>", "input->a1.h2<v>", "a1.h2->logits"}


def circuit(edges, model=TWO_LAYERS, metric=None):
    shape = GraphShape(model["n_layers"], model["n_heads"], not model["attn_only"])
    names = build_graph(shape).edge_names()
    assert set(edges) <= set(names)
    return circuit_from_dict({
        "model": model,
        "metric": metric or {"name": "kl", "full": 0.0, "circuit": 0.25, "empty": 1.0},
        "edges": {name: {"in_graph": name in edges} for name in names},
    })


def test_overlap_of_sets_gives_jaccard_precision_and_recall():
    o = overlap(Counter({"x": 1, "y": 1, "z": 1}), Counter({"y": 1, "z": 1, "w": 1, "v": 1}))
    assert (o.shared, o.jaccard, o.precision, o.recall) == (2, 2 / 5, 2 / 4, 2 / 3)


def test_overlap_of_multisets_counts_the_smaller_and_larger_counts():
    o = overlap(Counter({"heads@1": 3, "embed": 1}), Counter({"heads@1": 2, "embed": 1, "logits": 1}))
    assert (o.shared, o.union) == (3, 5)


def test_overlap_of_two_empty_circuits_has_no_ratios():
    o = overlap(Counter(), Counter())
    assert (o.jaccard, o.precision, o.recall) == (None, None, None)


def test_depth_bins_put_deeper_models_layers_together():
    assert [role_of(f"a{layer}.h0", 4, 2) for layer in range(4)] == ["heads@0", "heads@0", "heads@1", "heads@1"]
    assert [role_of(f"a{layer}.h1", 2, 2) for layer in range(2)] == ["heads@0", "heads@1"]
    assert (role_of("m3", 4, 2), role_of("tok_embed", 4, 2), role_of("logits", 4, 2)) == ("mlp@1", "embed", "logits")


def test_role_level_counts_components_and_component_pairs():
    c = circuit(INDUCTION | {"input->a1.h1<q>", "a1.h1->logits"})
    assert node_keys(c, "role") == Counter({"embed": 1, "heads@0": 1, "heads@1": 2, "logits": 1})
    assert edge_keys(c, "role")["heads@1->logits"] == 2
    assert edge_keys(c, "role")["heads@0->heads@1<k>"] == 1


def test_circuits_of_one_shape_compare_by_name_and_by_role():
    a = circuit(INDUCTION)
    b = circuit((INDUCTION - {"a0.h3->a1.h2<k>"}) | {"a0.h1->a1.h2<k>"})
    comparison = compare_circuits([a, b])
    assert comparison.levels == ["name", "role"]
    by_name = comparison.overlaps[(0, 1)]["name"]["edges"]
    assert (by_name.size_a, by_name.size_b, by_name.shared) == (5, 5, 4)
    by_role = comparison.overlaps[(0, 1)]["role"]["edges"]
    assert by_role.jaccard == 1.0  # another layer-0 head in the same role


def test_circuits_of_different_shapes_compare_by_role_only():
    small = circuit(INDUCTION)
    deep = circuit({"input->a1.h0<v>", "a1.h0->a3.h1<k>", "input->a3.h1<q>", "input->a3.h1<v>", "a3.h1->logits"}, FOUR_LAYERS)
    comparison = compare_circuits([small, deep])
    assert comparison.levels == ["role"] and comparison.n_bins == 2
    assert comparison.overlaps[(0, 1)]["role"]["nodes"].jaccard == 1.0
    assert comparison.overlaps[(0, 1)]["role"]["edges"].jaccard == 1.0


def test_comparing_needs_two_circuits():
    with pytest.raises(AcdcError, match="at least two"):
        compare_circuits([circuit(INDUCTION)])


def test_faithfulness_is_computed_from_the_files_metric_values():
    assert faithfulness_from_file(circuit(INDUCTION)) == pytest.approx(0.75)
    assert faithfulness_from_file(circuit(INDUCTION, metric={"name": "kl"})) is None


def test_metrics_table_shows_each_circuits_values_side_by_side():
    a = circuit(INDUCTION)
    b = circuit(INDUCTION, metric={"name": "kl", "full": 0.0, "circuit": 0.5, "empty": 1.0})
    table = compare_circuits([a, b], sources=["a.json", "b.json"]).metrics_table()
    row_a, row_b = table.splitlines()[2:]
    assert "a.json" in row_a and "0.250 |" not in row_a and "| 0.25 |" in row_a and "| 0.750 |" in row_a
    assert "b.json" in row_b and "| 0.500 |" in row_b


def test_diff_drawing_colours_shared_and_own_edges_distinctly_with_one_legend():
    a = circuit(INDUCTION)
    b = circuit((INDUCTION - {"a0.h3->a1.h2<k>"}) | {"a0.h1->a1.h2<k>"})
    dot = diff_dot(compare_circuits([a, b]))
    lines = dot.splitlines()

    def edge_line(sender, receiver):
        return next(line for line in lines if f"{sender} -> {receiver}" in line.replace('"', ""))

    assert STATUS_COLOURS["shared"] in edge_line("a1.h2", "logits")
    assert STATUS_COLOURS["only_a"] in edge_line("a0.h3", "a1.h2")
    assert STATUS_COLOURS["only_b"] in edge_line("a0.h1", "a1.h2")
    assert dot.count("cluster_legend") == 1


def test_role_level_diff_labels_each_slot_with_both_counts():
    small = circuit(INDUCTION)
    deep = circuit({"input->a1.h0<v>", "a1.h0->logits", "input->a2.h0<q>", "a2.h0->logits"}, FOUR_LAYERS)
    dot = diff_dot(compare_circuits([small, deep]))
    assert "heads@1\\nA 1 · B 1" in dot
    with pytest.raises(AcdcError, match="does not apply"):
        diff_dot(compare_circuits([small, deep]), level="name")


def test_acdc_compare_prints_the_report_and_writes_diff_drawings(tmp_path, capsys):
    paths = []
    for name, edges in (("seed0", INDUCTION), ("seed1", INDUCTION - {"input->a1.h2<v>"})):
        paths.append(str(save_circuit(circuit(edges), tmp_path / f"{name}.json")))
    code = acdc_compare([*paths, "--out", str(tmp_path / "diffs"), "--json", str(tmp_path / "report.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "Jaccard" in out and "seed0.json" in out and "| A | B | name | edges | 5 | 4 | 4 | 0.800 | 1.000 | 0.800 |" in out
    assert (tmp_path / "diffs" / "diff_A_B.dot").is_file()
    assert (tmp_path / "report.json").is_file()


def test_acdc_compare_names_a_missing_file(tmp_path, capsys):
    code = acdc_compare([str(tmp_path / "nothing.json"), str(tmp_path / "other.json"), "--no-drawings"])
    assert code == 2
    assert "nothing.json" in capsys.readouterr().err


def compare_error(capsys, *argv):
    """Run acdc-compare, expecting exit status 2; its stderr (which must be one line)."""
    code = acdc_compare([str(arg) for arg in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("acdc-compare: error: ")
    return err


def test_acdc_compare_reports_a_missing_file_in_one_line(tmp_path, capsys):
    err = compare_error(capsys, tmp_path / "nothing.json", "tracr-reverse")
    assert "no circuit file" in err and "nothing.json" in err


def test_acdc_compare_reports_invalid_json_with_file_and_line(tmp_path, capsys):
    (tmp_path / "broken.json").write_text('{"model": {\n  "name": oops}}')
    err = compare_error(capsys, tmp_path / "broken.json", "tracr-reverse")
    assert "broken.json: not valid JSON at line 2" in err


def test_acdc_compare_reports_a_file_of_another_format_by_field(tmp_path, capsys):
    (tmp_path / "other.json").write_text('{"format": "mib/graph", "version": 1}')
    err = compare_error(capsys, tmp_path / "other.json", "tracr-reverse")
    assert "other.json: field 'format' is 'mib/graph', expected 'acdc-engine/circuit'" in err


def test_acdc_compare_asks_for_at_least_two_circuits(capsys):
    assert "give at least two circuits" in compare_error(capsys, "tracr-reverse")


def test_acdc_compare_rejects_an_unknown_level_with_argparse_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        acdc_compare(["tracr-reverse", "tracr-reverse", "--level", "edge"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.splitlines()[-1] == "acdc-compare: error: argument --level: invalid choice: 'edge' (choose from 'name', 'role')"


def test_acdc_compare_rejects_an_out_folder_that_is_a_file_before_comparing(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    err = compare_error(capsys, "tracr-reverse", "tracr-reverse", "--out", tmp_path / "taken")
    assert "--out" in err and "is a file, not a folder" in err


def test_acdc_compare_rejects_a_json_report_path_that_is_a_folder(tmp_path, capsys):
    assert "is a folder, not a file" in compare_error(capsys, "tracr-reverse", "tracr-reverse", "--json", tmp_path)


def test_acdc_compare_reports_an_unwritable_out_folder_without_a_traceback(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    err = compare_error(capsys, "tracr-reverse", "tracr-reverse", "--out", tmp_path / "file" / "diffs")
    assert err.startswith(f"acdc-compare: error: cannot write {tmp_path / 'file' / 'diffs'}")
