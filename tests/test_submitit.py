"""The distributed path: a multirun through Hydra's submitit launcher (``submitit_local``: the same
submission and job pickling as ``hydra/launcher=slurm``, with local processes for SLURM jobs)."""

import json

import pytest

from console_scripts import run_script


def test_a_submitit_sweep_writes_each_jobs_circuit(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = run_script(
        "acdc-discover", "-m", "hydra/launcher=submitit_local", "method.threshold=0.05,0.1", "task.n_prompts=4",
        "progress=false", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    circuits = sorted((tmp_path / "outputs" / "multirun").rglob("circuit.json"))
    assert [p.parent.name.split("_")[0] for p in circuits] == ["0", "1"]
    assert [json.loads(p.read_text())["threshold"] for p in circuits] == [0.05, 0.1]
