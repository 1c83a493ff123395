"""Optional extras: a command that needs one which is missing says, in one line, what to install."""

import importlib.util
import sys

import pytest

from acdc_engine.commands import discover as cli
from acdc_engine.formats import drawing as draw
from acdc_engine.commands import evaluate as evaluate_cli

real_find_spec = importlib.util.find_spec


def without(monkeypatch, *missing):
    """Make the modules ``missing`` (and their submodules) look uninstalled."""
    def find_spec(name, *args):
        return None if any(name == m or name.startswith(m + ".") for m in missing) else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def one_error_line(capsys, command, argv, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit:
        command()
    assert exit.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


@pytest.mark.parametrize("launcher, extra, plugin", [("local", "parallel", "hydra_plugins.hydra_joblib_launcher"),
                                                     ("slurm", "slurm", "hydra_plugins.hydra_submitit_launcher")])
def test_a_launcher_whose_plugin_is_missing_names_the_extra(monkeypatch, capsys, tmp_path, launcher, extra, plugin):
    without(monkeypatch, plugin)
    line = one_error_line(capsys, cli.main, ["acdc-discover", "-m", f"hydra/launcher={launcher}", "method.threshold=0.1,0.3"], monkeypatch, tmp_path)
    assert line == f"acdc-discover: error: hydra/launcher={launcher} needs a package not installed: pip install 'acdc-engine[{extra}]'"


def test_acdc_evaluate_without_matplotlib_names_the_plots_extra_before_any_work(monkeypatch, capsys, tmp_path):
    without(monkeypatch, "matplotlib")
    line = one_error_line(capsys, evaluate_cli.main, ["acdc-evaluate", "methods=[eap]"], monkeypatch, tmp_path)
    assert line.startswith("acdc-evaluate: error: acdc-evaluate (its ROC and faithfulness figures) needs")
    assert line.endswith("pip install 'acdc-engine[plots]'")
    assert not list(tmp_path.rglob("*.json"))  # nothing was run or written


def test_without_a_renderer_the_warning_names_the_draw_extra(small_circuit, tmp_path, monkeypatch):
    monkeypatch.setattr(draw.shutil, "which", lambda program, path=None: None)
    with pytest.warns(UserWarning, match=r"pip install 'acdc-engine\[draw\]'"):
        draw.write_drawings(small_circuit, tmp_path)
