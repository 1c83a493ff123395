"""Run folders are never clobbered: one run per folder, nothing written before the config is valid,
unique default folders, resume only when asked. The commands run in this process (their Hydra
entry, as a user's command line reaches it), which is fast; ``run_folder``'s lock is tested directly."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from acdc_engine.commands import discover as cli
from acdc_engine.commands import run_folder
from acdc_engine.commands.config_schema import register_configs
from acdc_engine.core.errors import AcdcError
from acdc_engine.commands.run_folder import LOCK_NAME, run_folder_lock


def command(monkeypatch, tmp_path, *args, main=cli.main, prog="acdc-discover"):
    """Run a Hydra command in ``tmp_path`` as a user would; returns its exit code."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "")
    monkeypatch.setattr(sys, "argv", [prog, *args, "progress=false"])
    try:
        main()
    except SystemExit as exit:
        return exit.code
    return 0


def contents(folder):
    """Every file under ``folder`` with its bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture
def finished_folder(tmp_path):
    """A folder that holds a finished run: its record, circuit and checkpoint."""
    folder = tmp_path / "finished"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 7\n")
    (folder / "circuit.json").write_text("{}\n")
    (folder / "checkpoint.safetensors").write_bytes(b"checkpoint")
    return folder


# ----- the lock -------------------------------------------------------------------------------------


def test_a_second_lock_on_a_folder_fails_at_once_naming_the_holder(tmp_path):
    with run_folder_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        with pytest.raises(AcdcError, match="in use by another run") as error:
            with run_folder_lock(tmp_path):
                pass
    message = str(error.value)
    assert f"pid {os.getpid()}" in message and socket.gethostname() in message and holder["started"] in message


def test_the_lock_is_gone_when_the_run_ends_and_the_folder_can_be_locked_again(tmp_path):
    with run_folder_lock(tmp_path):
        pass
    assert not (tmp_path / LOCK_NAME).exists()
    with run_folder_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(folder, pid, host):
    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host, "started": "2026-01-01T00:00:00+00:00"}))


def test_a_lock_left_by_a_dead_process_of_this_host_is_taken_over(tmp_path, capsys):
    pid = dead_pid()
    write_lock(tmp_path, pid, socket.gethostname())
    with run_folder_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taking over {tmp_path / LOCK_NAME} from pid {pid}" in capsys.readouterr().err


def test_a_lock_naming_another_host_is_refused_saying_which_file_to_delete(tmp_path):
    write_lock(tmp_path, 1234, "another-host.example")
    with pytest.raises(AcdcError, match=f"pid 1234 on host another-host.example.*delete {tmp_path / LOCK_NAME}"):
        with run_folder_lock(tmp_path):
            pass


@pytest.mark.parametrize("alive", [True, False])
def test_without_flock_a_lock_holds_while_its_pid_runs_on_this_host(tmp_path, monkeypatch, alive):
    monkeypatch.setattr(run_folder, "_try_flock", lambda fd: None)  # a filesystem without flock
    write_lock(tmp_path, os.getppid() if alive else dead_pid(), socket.gethostname())
    if alive:
        with pytest.raises(AcdcError, match=f"pid {os.getppid()}"):
            with run_folder_lock(tmp_path):
                pass
    else:
        with run_folder_lock(tmp_path):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_run_into_a_folder_another_run_holds_fails_at_once_naming_it(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "busy"
    with run_folder_lock(folder):
        code = command(monkeypatch, tmp_path, f"hydra.run.dir={folder}")
    assert code == 2
    err = capsys.readouterr().err
    assert f"run folder {folder} is in use by another run (pid {os.getpid()}" in err
    assert os.listdir(folder) == []  # nothing of the refused run, and the holder's lock is released


# ----- folder names ---------------------------------------------------------------------------------


def test_default_run_folders_of_runs_started_together_differ():
    register_configs()
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        first, second = (compose("config", return_hydra_config=True) for _ in range(2))
        runs = {str(first.hydra.run.dir), str(second.hydra.run.dir)}
        sweeps = {str(first.hydra.sweep.dir), str(second.hydra.sweep.dir)}
    assert len(runs) == 2 and len(sweeps) == 2


# ----- what a run writes, and when --------------------------------------------------------------


def test_a_run_rejected_by_validation_leaves_no_folder(tmp_path, monkeypatch):
    assert command(monkeypatch, tmp_path, "method.threshold=-1") == 2
    assert not (tmp_path / "outputs").exists()


def test_a_run_rejected_by_validation_leaves_a_finished_folder_as_it_was(tmp_path, monkeypatch, finished_folder):
    before = contents(finished_folder)
    assert command(monkeypatch, tmp_path, "method.threshold=-1", f"hydra.run.dir={finished_folder}") == 2
    assert contents(finished_folder) == before


def test_a_new_run_into_a_folder_holding_a_run_is_refused_and_the_folder_kept(tmp_path, monkeypatch, capsys, finished_folder):
    before = contents(finished_folder)
    assert command(monkeypatch, tmp_path, f"hydra.run.dir={finished_folder}") == 2
    err = capsys.readouterr().err
    assert f"run folder {finished_folder} already holds a run" in err and f"resume={finished_folder}" in err
    assert "cannot resume" not in err  # no resume was asked, so none is tried
    assert contents(finished_folder) == before


def test_a_run_writes_its_hydra_record_and_no_lock_once_finished(tmp_path, monkeypatch, capsys):
    assert command(monkeypatch, tmp_path, "method.threshold=0.2") == 0
    (folder,) = (tmp_path / "outputs").glob("*/*")
    assert "- method.threshold=0.2" in (folder / ".hydra" / "overrides.yaml").read_text()
    assert "threshold: 0.2" in (folder / ".hydra" / "config.yaml").read_text()
    assert (folder / ".hydra" / "hydra.yaml").is_file() and not (folder / LOCK_NAME).exists()


# ----- resume= ----------------------------------------------------------------------------------


def test_resume_with_another_hydra_run_dir_is_refused_and_writes_nowhere(tmp_path, monkeypatch, capsys, finished_folder):
    before = contents(finished_folder)
    other = tmp_path / "other"
    assert command(monkeypatch, tmp_path, f"resume={finished_folder}", f"hydra.run.dir={other}") == 2
    assert "hydra.run.dir names another" in capsys.readouterr().err
    assert not other.exists() and contents(finished_folder) == before


def test_resume_of_a_gradient_method_says_it_keeps_no_checkpoint(tmp_path, monkeypatch, capsys, finished_folder):
    assert command(monkeypatch, tmp_path, "method=eap", f"resume={finished_folder}") == 2
    err = capsys.readouterr().err
    assert "method eap keeps no checkpoint" in err and "to resume" not in err  # not the missing-file refusal


def test_resume_continues_a_multirun_job_folder_given_unquoted(tmp_path, monkeypatch, capsys):
    assert command(monkeypatch, tmp_path, "-m", "method.threshold=0.05", "method.batch_size=4") == 0
    (job,) = (tmp_path / "outputs" / "multirun").glob("*/*/0_*")
    assert "=" in job.name
    finished = json.loads((job / "circuit.json").read_text())
    (job / "circuit.json").unlink()
    capsys.readouterr()
    assert command(monkeypatch, tmp_path, f"resume={job.relative_to(tmp_path)}", "method.threshold=0.05", "method.batch_size=4") == 0
    assert "resuming from" in capsys.readouterr().out
    resumed = json.loads((job / "circuit.json").read_text())
    assert resumed["edges"] == finished["edges"] and resumed["metric"] == finished["metric"]
