"""The Hydra command line, run as a user runs it: a subprocess in a fresh folder."""

import json
import os
import re
import subprocess
import sys

import pytest


def acdc_discover(tmp_path, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""}
    command = [sys.executable, "-m", "acdc_engine.commands.discover", *args, "progress=false"]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def run_folders(tmp_path):
    return sorted(p.parent for p in (tmp_path / "outputs").rglob("circuit.json"))


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("default")
    return tmp_path, acdc_discover(tmp_path)


def test_default_run_writes_circuit_files_into_a_dated_run_folder(default_run):
    tmp_path, result = default_run
    assert result.returncode == 0, result.stderr
    (folder,) = run_folders(tmp_path)
    assert folder.relative_to(tmp_path / "outputs").parts[0].count("-") == 2  # outputs/<date>/<time>
    assert {"circuit.json", "circuit.html", "circuit.dot", "circuit.svg", "circuit.png"} <= {p.name for p in folder.iterdir()}


def test_default_run_uses_the_toy_induction_model_and_task(default_run):
    tmp_path, _ = default_run
    (folder,) = run_folders(tmp_path)
    data = json.loads((folder / "circuit.json").read_text())
    assert data["model"]["name"] == "toy-induction-2l"
    assert data["task"]["name"] == "induction"
    assert data["method"] == {"name": "acdc", "ablation": "resample", "order": "reference"}


def test_default_run_reports_where_the_files_are_edges_kept_and_metrics(default_run):
    _, result = default_run
    out = result.stdout
    assert "circuit files:" in out and "circuit.json" in out
    assert "edges kept:" in out and " / 81 " in out
    assert "full model" in out and "empty circuit" in out


def test_overrides_reach_the_run(tmp_path):
    result = acdc_discover(tmp_path, "method.threshold=0.2", "method.ablation=zero", "method.metric=nll")
    assert result.returncode == 0, result.stderr
    data = json.loads((run_folders(tmp_path)[0] / "circuit.json").read_text())
    assert data["threshold"] == 0.2
    assert data["method"]["ablation"] == "zero"
    assert data["metric"]["name"] == "nll"


def test_multirun_writes_one_folder_per_threshold(tmp_path):
    result = acdc_discover(tmp_path, "-m", "method.threshold=0.01,0.1")
    assert result.returncode == 0, result.stderr
    thresholds = sorted(json.loads((f / "circuit.json").read_text())["threshold"] for f in run_folders(tmp_path))
    assert thresholds == [0.01, 0.1]


@pytest.mark.parametrize(
    "override, complaint",
    [
        ("method.thresh=0.1", "thresh"),
        ("method.ablation=shuffle", "shuffle"),
        ("method.threshold=-1", "threshold must be a finite number >= 0"),
        ("model=gpt7", "gpt7"),
        ("task.n_prompts=many", "n_prompts"),
    ],
)
def test_bad_config_fails_with_one_clear_message_and_no_traceback(tmp_path, override, complaint):
    result = acdc_discover(tmp_path, override)
    assert result.returncode != 0
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


def test_default_runs_page_shows_each_heads_attention_on_the_first_prompt(default_run):
    tmp_path, _ = default_run
    (folder,) = run_folders(tmp_path)
    page = (folder / "circuit.html").read_text()
    view = json.loads(re.search(r'<script type="application/json" id="view">(.*?)</script>', page, re.S).group(1))
    attention = view["attention"]
    assert attention["tokens"][0] == "0" and len(attention["tokens"]) == 17  # BOS and twice 8 tokens, as ids
    patterns = attention["patterns"]
    assert (len(patterns), len(patterns[0]), len(patterns[0][0])) == (2, 4, 17)
    assert all(abs(sum(row) - 1) < 0.01 for row in patterns[1][2])  # each query's weights sum to 1
