"""Light commands start without torch: ``import acdc_engine``, ``acdc-summary FOLDER`` and each
console script's ``--help`` never import it (each runs as its console script does, in a subprocess)."""

import json
import subprocess
import sys

import pytest

from console_scripts import imported_torch, run_script

def test_importing_the_package_does_not_import_torch(tmp_path):
    code = "import sys, acdc_engine; print(sorted(acdc_engine.__all__)); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"


def test_the_package_names_are_imported_on_first_use():
    import acdc_engine
    from acdc_engine.api import discover
    from acdc_engine.core.circuit import Circuit

    assert acdc_engine.discover is discover and acdc_engine.Circuit is Circuit
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        acdc_engine.nosuch


@pytest.mark.parametrize("name", ["acdc-convert", "acdc-view", "acdc-summary", "acdc-compare"])
def test_help_of_a_plain_command_does_not_import_torch(tmp_path, name):
    result = run_script(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"usage: {name}" in result.stdout
    assert not imported_torch(result)


def test_summary_of_a_run_folder_does_not_import_torch(tmp_path, small_circuit):
    from acdc_engine.formats.circuit_file import save_circuit

    save_circuit(small_circuit, tmp_path / "runs" / "0_x" / "circuit.json")
    result = run_script("acdc-summary", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{small_circuit.n_edges} / {small_circuit.n_edges_total}" in result.stdout
    assert not imported_torch(result)


def test_a_circuit_files_header_gives_what_the_full_reader_gives(tmp_path, small_circuit):
    from acdc_engine.formats.circuit_file import save_circuit
    from acdc_engine.formats.circuit_header import read_circuit_header
    from acdc_engine.formats.reader import load_circuit

    path = save_circuit(small_circuit, tmp_path / "circuit.json")
    header, circuit = read_circuit_header(path), load_circuit(path)
    assert (header.n_edges, header.n_edges_total) == (circuit.n_edges, circuit.n_edges_total)
    assert (header.threshold, header.metric, header.method, header.run) == (circuit.threshold, circuit.metric, circuit.method, circuit.run)


def test_a_file_not_in_save_circuits_form_has_no_header(tmp_path, small_circuit):
    from acdc_engine.formats.circuit_header import read_circuit_header
    from acdc_engine.formats.eap_ig import circuit_to_eap_ig

    path = tmp_path / "eap-ig.json"
    path.write_text(json.dumps(circuit_to_eap_ig(small_circuit, d_model=8)))
    assert read_circuit_header(path) is None
