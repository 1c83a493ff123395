"""Sweeps beyond one process: the joblib launcher config, and acdc-summary over multirun folders."""

import copy
import os
import subprocess
import sys

import pytest

from acdc_engine.commands.summary import gather, main as acdc_summary, markdown
from acdc_engine.formats.circuit_file import save_circuit


def test_joblib_launcher_runs_a_threshold_sweep_in_parallel_and_summary_gathers_it(tmp_path, capsys):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "acdc_engine.commands.discover", "-m", "hydra/launcher=local",
               "method.threshold=0.02,0.2", "progress=false"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")

    assert acdc_summary([str(sweep)]) == 0
    table = capsys.readouterr().out
    assert "model: toy-induction-2l, task: induction, method: acdc, metric: kl (2 runs)" in table
    rows = [line for line in table.splitlines() if line.startswith("| 0_") or line.startswith("| 1_")]
    assert [row.split(" | ")[1] for row in rows] == ["0.02", "0.2"]


@pytest.fixture
def multirun(tmp_path, small_circuit):
    """A multirun folder: jobs 0, 1 and 10 wrote circuits (thresholds 0.1, 0.2, 0.3), job 2 did not."""
    for job, threshold in ((10, 0.3), (0, 0.1), (1, 0.2)):
        circuit = copy.deepcopy(small_circuit)  # the fixture is shared by the session
        circuit.threshold = threshold
        circuit.run["seconds"] = 1.5
        save_circuit(circuit, tmp_path / f"{job}_method.threshold={threshold}" / "circuit.json")
    (tmp_path / "2_method.threshold=0.4" / ".hydra").mkdir(parents=True)
    return tmp_path


def test_summary_rows_follow_hydra_job_numbers(multirun):
    rows, _ = gather(multirun)
    assert [row["run"].split("_")[0] for row in rows] == ["0", "1", "10"]
    assert [row["threshold"] for row in rows] == ["0.1", "0.2", "0.3"]


def test_summary_table_has_threshold_edges_metric_and_seconds(multirun, small_circuit):
    rows, unfinished = gather(multirun)
    text = markdown(rows, unfinished)
    assert "| run | threshold | edges | kl | seconds |" in text
    edges = f"{small_circuit.n_edges} / {small_circuit.n_edges_total}"
    assert f"| 0_method.threshold=0.1 | 0.1 | {edges} | {small_circuit.metric['circuit']:.6g} | 1.50 |" in text


def test_summary_lists_runs_that_wrote_no_circuit(multirun):
    _, unfinished = gather(multirun)
    assert [str(p) for p in unfinished] == ["2_method.threshold=0.4"]


def test_summary_of_a_folder_without_circuits_is_an_error(tmp_path, capsys):
    assert acdc_summary([str(tmp_path)]) == 2
    assert "no circuit.json under" in capsys.readouterr().err
