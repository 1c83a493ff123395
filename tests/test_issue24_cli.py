"""The Hydra commands' help and command-line errors, run as their console scripts run: help names the
command, its config groups (not the internal schema/* ones) and its keys with their defaults,
without importing torch; a wrong key or choice is one line naming what is allowed."""

import subprocess

import pytest

from console_scripts import imported_torch, run_script, script_command, script_env


@pytest.fixture(scope="module")
def discover_help(tmp_path_factory):
    return run_script("acdc-discover", "--help", cwd=tmp_path_factory.mktemp("help"))


def test_discover_help_names_the_command(discover_help):
    assert discover_help.returncode == 0, discover_help.stderr
    assert discover_help.stdout.startswith("usage: acdc-discover ")
    assert "Hydra" not in discover_help.stdout.splitlines()[0]


def test_discover_help_lists_the_groups_a_user_picks_and_not_the_schemas(discover_help):
    groups = {line.split()[0] for line in discover_help.stdout.split("config groups")[1].split("\n\n")[0].splitlines()[1:]}
    assert {"model", "task", "method", "hydra/launcher"} <= groups
    assert "schema" not in discover_help.stdout


def test_discover_help_shows_the_main_keys_with_their_defaults(discover_help):
    settings = {line.split()[0] for line in discover_help.stdout.splitlines() if "=" in line and line.startswith("  ")}
    assert {"method.threshold=0.05", "method.ablation=resample", "model.name=toy-induction-2l", "model.dtype=float32",
            "task.n_prompts=32", "seed=0", "device=auto"} <= settings


def test_discover_help_does_not_import_torch(discover_help):
    assert not imported_torch(discover_help)


def test_help_shows_the_keys_of_the_choice_given_before_it(tmp_path):
    result = run_script("acdc-discover", "method=eap", "-h", cwd=tmp_path)
    assert "  method.top_n=20" in result.stdout and "method.threshold" not in result.stdout


def test_evaluate_help_names_the_command_and_its_keys_without_torch(tmp_path):
    result = run_script("acdc-evaluate", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: acdc-evaluate ")
    assert "  truth=null" in result.stdout and "  method " not in result.stdout
    assert not imported_torch(result)


def test_help_into_a_closed_pipe_ends_without_an_error(tmp_path):
    process = subprocess.Popen(
        script_command("acdc-discover", "--help"), cwd=tmp_path, env=script_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    process.stdout.close()  # as `| head -1` does once it has its line
    stderr = process.stderr.read()
    assert process.wait(timeout=900) == 0
    assert "Error" not in stderr and "Traceback" not in stderr


def test_an_unknown_key_is_one_line_naming_the_groups_keys(tmp_path):
    result = run_script("acdc-discover", "method.nokey=1", cwd=tmp_path)
    assert result.returncode == 2
    (line, _torch) = result.stderr.splitlines()
    assert line == "acdc-discover: error: unknown key method.nokey; method has threshold, batch_size, name, metric, ablation"


def test_an_unknown_choice_is_one_line_naming_the_groups_choices(tmp_path):
    result = run_script("acdc-discover", "model=nosuch", cwd=tmp_path)
    assert result.returncode == 2
    (line, _torch) = result.stderr.splitlines()
    assert line.startswith("acdc-discover: error: unknown choice model=nosuch; model is one of: ")
    assert "toy-induction-2l, toy-induction-mlp-2l" in line
