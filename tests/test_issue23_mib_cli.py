"""Issue 23, probes 3 and 9: ``acdc-mib --method eap|eap-ig`` runs end to end, and a bad
``--task-param`` is one line, not a traceback."""

import pytest

from acdc_engine.commands.mib import main as acdc_mib

TOY = ["--model", "toy-induction-2l", "--model-key", "toy", "--task", "induction", "--task-key", "induction"]


@pytest.mark.parametrize("method_args", [["eap"], ["eap-ig", "--steps", "2"]], ids=["eap", "eap-ig"])
def test_acdc_mib_writes_a_submission_with_gradient_methods(tmp_path, method_args, capsys):
    args = [*TOY, "--method", *method_args, "--out", str(tmp_path), "--task-param", "n_prompts=4"]
    assert acdc_mib(args) == 0
    folder = tmp_path / "induction_toy"
    assert sorted(p.name for p in folder.iterdir())[0].startswith("circuit_")
    assert "MIB submission folder" in capsys.readouterr().out


def test_a_task_param_of_the_wrong_type_is_one_line(tmp_path, capsys):
    args = [*TOY, "--method", "eap", "--out", str(tmp_path), "--task-param", "n_prompts=abc"]
    assert acdc_mib(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "n_prompts" in err and "abc" in err and "Traceback" not in err


def test_an_unknown_task_param_is_one_line(tmp_path, capsys):
    args = [*TOY, "--method", "eap", "--out", str(tmp_path), "--task-param", "foo=1"]
    assert acdc_mib(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown task_params foo for task 'induction'" in err
