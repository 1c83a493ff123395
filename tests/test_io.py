"""The circuit file: schema, round trip, and clear errors for malformed files."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest

from acdc_engine import AcdcError, load_circuit
from acdc_engine.formats.atomic_files import _host_tag, atomic_write_bytes, remove_stale_temporaries
from acdc_engine.formats.circuit_file import circuit_from_dict
from acdc_engine.formats.circuit_file import circuit_to_dict, save_circuit


def test_circuit_has_both_kept_and_removed_edges(small_circuit):
    assert 0 < small_circuit.n_edges < small_circuit.n_edges_total


def test_file_holds_the_design_fields(small_circuit, tmp_path):
    data = json.loads(save_circuit(small_circuit, tmp_path / "c.json").read_text())
    assert data["format"] == "acdc-engine/circuit" and data["version"] == 1
    assert set(data["metric"]) == {"name", "full", "circuit", "empty"}
    assert {"seed", "versions", "seconds", "forward_passes"} <= set(data["run"])
    edge = next(iter(data["edges"].values()))
    assert set(edge) == {"in_graph", "kept", "score"}
    assert len(data["edges"]) == small_circuit.n_edges_total
    assert sum(e["in_graph"] for e in data["edges"].values()) == small_circuit.n_edges


def test_emitted_edges_are_a_subset_of_kept_edges(small_circuit):
    data = circuit_to_dict(small_circuit)
    assert all(e["kept"] for e in data["edges"].values() if e["in_graph"])


def test_save_then_load_round_trips_exactly(small_circuit, tmp_path):
    path = save_circuit(small_circuit, tmp_path / "c.json")
    assert circuit_to_dict(load_circuit(path)) == circuit_to_dict(small_circuit)


def test_unknown_fields_are_kept(small_circuit, tmp_path):
    data = circuit_to_dict(small_circuit)
    data["notes"] = {"by": "a researcher"}
    assert circuit_to_dict(circuit_from_dict(data))["notes"] == {"by": "a researcher"}


def test_mib_style_file_without_kept_scores_or_head_inputs_loads(small_circuit):
    data = circuit_to_dict(small_circuit)
    mib = {"model": data["model"], "edges": {k: {"in_graph": v["in_graph"]} for k, v in data["edges"].items()}}
    loaded = circuit_from_dict(mib)
    assert loaded.edges() == small_circuit.edges()


def mutated(data, path, value):
    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


DELETE = object()


@pytest.mark.parametrize(
    "path, value, complaint",
    [
        (("format",), "something-else", "format"),
        (("version",), 7, "version"),
        (("model",), DELETE, "missing field 'model'"),
        (("model", "n_layers"), "two", "n_layers"),
        (("edges", "input->logits", "in_graph"), "yes", r"edges\['input->logits'\].*in_graph"),
        (("edges", "input->logits", "score"), "big", "score"),
        (("metric", "circuit"), "low", "circuit"),
        (("threshold",), float("nan"), "threshold"),
    ],
)
def test_malformed_field_is_rejected_by_name(small_circuit, path, value, complaint):
    with pytest.raises(AcdcError, match=complaint):
        circuit_from_dict(mutated(circuit_to_dict(small_circuit), path, value))


def test_unknown_edge_name_is_rejected(small_circuit):
    data = circuit_to_dict(small_circuit)
    data["edges"]["a7.h0->logits"] = {"in_graph": True}
    with pytest.raises(AcdcError, match="unknown sender 'a7.h0'"):
        circuit_from_dict(data)


def test_missing_edges_are_rejected(small_circuit):
    data = circuit_to_dict(small_circuit)
    del data["edges"]["input->logits"]
    with pytest.raises(AcdcError, match="missing.*input->logits"):
        circuit_from_dict(data)


def test_nodes_that_contradict_the_edges_are_rejected(small_circuit):
    data = circuit_to_dict(small_circuit)
    name = "logits"
    data["nodes"][name]["in_graph"] = not data["nodes"][name]["in_graph"]
    with pytest.raises(AcdcError, match=f"nodes\\['{name}'\\]"):
        circuit_from_dict(data)


def test_invalid_json_is_rejected_with_its_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": "acdc-engine/circuit",\n  "model": }')
    with pytest.raises(AcdcError, match="line 2"):
        load_circuit(path)


def test_save_leaves_no_temporary_file_behind(small_circuit, tmp_path):
    save_circuit(small_circuit, tmp_path / "c.json")
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_saved_files_get_the_usual_permissions(small_circuit, tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    mode = save_circuit(small_circuit, tmp_path / "c.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask


# --- temporary files of killed writers -----------------------------------------------------------


def killed_writer(folder):
    """The temporary file a process leaves when it dies (as if killed) inside atomic_write_bytes."""
    script = textwrap.dedent(f"""
        import os
        from acdc_engine.formats import atomic_files
        os.fsync = lambda fd: os._exit(9)  # die after writing the temporary file, before the rename
        atomic_files.atomic_write_bytes({str(folder / "circuit.json")!r}, b"half")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    (tmp,) = folder.glob(".circuit.json.*.tmp")
    return tmp


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_into_its_folder(tmp_path):
    stale = killed_writer(tmp_path)
    atomic_write_bytes(tmp_path / "checkpoint.safetensors", b"state")
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]


def test_temporary_files_of_live_writers_other_machines_and_other_programs_are_kept(tmp_path):
    stale = killed_writer(tmp_path)
    dead_pid = stale.name.split(".")[-3].split("-")[1]
    other_host = format(int(_host_tag(), 16) ^ 1, "08x")
    kept = [
        tmp_path / f".circuit.json.{_host_tag()}-{os.getpid()}.abc123_x.tmp",  # this live process
        tmp_path / f".circuit.json.{other_host}-{dead_pid}.abc123_x.tmp",  # another machine's
        tmp_path / ".circuit.json.abc123_x.tmp",  # no writer named
        tmp_path / "notes.tmp",
    ]
    for path in kept:
        path.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert all(path.exists() for path in kept)
