"""Issue 23, probes 4, 5, 7, 8 and 10: a run writes nothing into its folder before it can start, a
failed start leaves a folder the same command can use, start-up write failures are one line, a
failing sweep job never stops the others, a used sweep folder is refused before anything is
written, SIGTERM saves a checkpoint, and resuming (refused or finished) changes nothing."""

import errno
import json
import os
import signal
import subprocess
import sys

from console_scripts import script_env, signal_at_line

from acdc_engine.methods import arguments as argument_checks
from acdc_engine.commands import run_folder
from acdc_engine.methods.checkpoint import load_checkpoint
from acdc_engine.methods import acdc as acdc_module
from acdc_engine.commands.summary import main as acdc_summary
from test_run_folder import command, contents


def one_error_line(capsys, prog="acdc-discover"):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error:") and "Traceback" not in err, err
    return lines[0]


# ----- a failed start writes nothing, and the same command can run again ---------------------------


def test_a_bad_model_path_leaves_the_folder_for_the_same_command(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    args = ("model=local", f"model.path={tmp_path / 'no-such-model'}", f"hydra.run.dir={folder}")
    for _ in range(2):  # the second time fails for the same reason, not "already holds a run"
        assert command(monkeypatch, tmp_path, *args) == 2
        line = one_error_line(capsys)
        assert "no-such-model" in line and "already holds" not in line
        assert not folder.exists()


def test_a_memory_refusal_writes_nothing_into_an_existing_folder(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.setattr(argument_checks, "available_memory", lambda device: 1)
    for _ in range(2):
        assert command(monkeypatch, tmp_path, f"hydra.run.dir={folder}") == 2
        assert "available" in one_error_line(capsys)
        assert os.listdir(folder) == []


def test_ctrl_c_before_the_first_checkpoint_leaves_a_folder_the_same_command_uses(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    start = acdc_module._start

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(acdc_module, "_start", interrupted)
    assert command(monkeypatch, tmp_path, f"hydra.run.dir={folder}") == 130
    assert "run the same command again" in capsys.readouterr().err
    assert not folder.exists() or os.listdir(folder) == []
    monkeypatch.setattr(acdc_module, "_start", start)
    assert command(monkeypatch, tmp_path, f"hydra.run.dir={folder}") == 0
    assert (folder / "circuit.json").is_file() and (folder / ".hydra" / "config.yaml").is_file()


def test_a_full_disk_while_writing_the_record_is_one_line_and_leaves_no_half_record(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    write = run_folder.atomic_write_bytes
    calls = []

    def disk_fills_up(path, data):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write(path, data)

    monkeypatch.setattr(run_folder, "atomic_write_bytes", disk_fills_up)
    assert command(monkeypatch, tmp_path, f"hydra.run.dir={folder}") == 2
    line = one_error_line(capsys)
    assert "No space left on device" in line and ".hydra" in line
    assert not (folder / ".hydra").exists()
    monkeypatch.setattr(run_folder, "atomic_write_bytes", write)
    assert command(monkeypatch, tmp_path, f"hydra.run.dir={folder}") == 0


def test_a_read_only_folder_is_one_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()

    def read_only(path, folder):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(run_folder, "_open_locked", read_only)
    assert command(monkeypatch, tmp_path, f"hydra.run.dir={folder}") == 2
    line = one_error_line(capsys)
    assert f"cannot use run folder {folder}" in line and "Read-only file system" in line


def test_a_folder_holding_only_a_killed_runs_record_says_what_to_delete(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    assert command(monkeypatch, tmp_path, f"hydra.run.dir={folder}") == 2
    line = one_error_line(capsys)
    assert "saved no results" in line and f"delete {folder / '.hydra'}" in line


# ----- sweeps --------------------------------------------------------------------------------------


def test_a_bad_value_in_a_sweep_fails_its_job_only_and_the_sweep_lists_it(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    assert command(monkeypatch, tmp_path, "-m", f"hydra.sweep.dir={sweep}", "method.threshold=0.2,-1,0.3") == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("acdc-discover: error: 1 job(s) of the sweep failed:") and "1_method.threshold=-1" in last
    assert "method.threshold must be" in last
    finished = sorted(p.parent.name.partition(",")[0] for p in sweep.glob("*/circuit.json"))
    assert finished == ["0_method.threshold=0.2", "2_method.threshold=0.3"]
    assert acdc_summary([str(sweep)]) == 0
    table = capsys.readouterr().out
    assert "failed or unfinished): 1_method.threshold=-1,progress=False (method.threshold must be" in table
    assert command(monkeypatch, tmp_path, "method.threshold=0.3") == 0  # the sweep's failures stay its own


def test_a_bad_value_in_a_joblib_sweep_fails_its_job_only(tmp_path):
    env = script_env()
    args = [sys.executable, "-m", "acdc_engine.commands.discover", "-m", "hydra/launcher=local", "hydra.sweep.dir=sweep",
            "method.threshold=0.2,-1,0.3", "progress=false"]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "1 job(s) of the sweep failed: sweep/1_method.threshold=-1" in result.stderr
    finished = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/circuit.json"))
    assert finished == ["0_method.threshold=0.2,progress=False", "2_method.threshold=0.3,progress=False"]


def test_a_second_sweep_into_a_used_sweep_folder_is_refused_before_writing(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    assert command(monkeypatch, tmp_path, "-m", f"hydra.sweep.dir={sweep}", "method.threshold=0.3") == 0
    before = contents(sweep)
    capsys.readouterr()
    assert command(monkeypatch, tmp_path, "-m", f"hydra.sweep.dir={sweep}", "method.threshold=0.2") == 2
    line = one_error_line(capsys)
    assert "hydra.sweep.dir" in line and "hydra.run.dir" not in line and "multirun.yaml" in line
    assert contents(sweep) == before


# ----- SIGTERM -------------------------------------------------------------------------------------

TERMINATED_WHILE_DECIDING = """
import sys, time
from acdc_engine.methods.checkpoint import Checkpointer
from acdc_engine.commands.discover import main
due = Checkpointer.due
def due_once_terminated(self, visited):
    if visited >= 8 and not getattr(Checkpointer, "told", False):
        Checkpointer.told = True
        print("deciding", flush=True)
        while self.stop_signal is None:  # until the test's SIGTERM arrives, however loaded the machine
            time.sleep(0.05)
    return due(self, visited)
Checkpointer.due = due_once_terminated
sys.argv = ["acdc-discover", *sys.argv[1:]]
main()
"""


def test_sigterm_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, monkeypatch, capsys):
    args = ["hydra.run.dir=run", "checkpoint.every_seconds=null", "method.batch_size=1", "progress=false"]
    returncode, err = signal_at_line(TERMINATED_WHILE_DECIDING, args, tmp_path, "deciding", signal.SIGTERM)
    assert returncode == 128 + signal.SIGTERM, err
    (line,) = err.strip().splitlines()
    assert line.startswith("acdc-discover: terminated by SIGTERM; the last checkpoint is run/checkpoint.safetensors")
    assert "acdc-discover resume=run checkpoint.every_seconds=null method.batch_size=1 progress=false" in line
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")  # no periodic save: SIGTERM's
    assert saved.state.visited >= 8 and not (tmp_path / "run" / "circuit.json").exists()

    assert command(monkeypatch, tmp_path, "resume=run", *args[1:]) == 0
    assert command(monkeypatch, tmp_path, "hydra.run.dir=plain", *args[1:]) == 0
    resumed, plain = (json.loads((tmp_path / name / "circuit.json").read_text()) for name in ("run", "plain"))
    assert resumed["edges"] == plain["edges"] and resumed["metric"] == plain["metric"]


# ----- resume ----------------------------------------------------------------------------------------


def test_a_refused_resume_leaves_no_record_and_a_finished_resume_changes_no_checkpoint(tmp_path, monkeypatch, capsys):
    assert command(monkeypatch, tmp_path, "hydra.run.dir=run") == 0
    checkpoint = (tmp_path / "run" / "checkpoint.safetensors").read_bytes()
    assert command(monkeypatch, tmp_path, "resume=run", "method.threshold=0.3") == 2
    assert "cannot resume" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "run" / ".hydra").iterdir() if p.name.startswith("resumed-")] == []
    assert command(monkeypatch, tmp_path, "resume=run") == 0
    assert (tmp_path / "run" / "checkpoint.safetensors").read_bytes() == checkpoint


def test_a_run_folder_hydra_cannot_create_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    assert command(monkeypatch, tmp_path, f"hydra.run.dir={tmp_path / 'a-file' / 'run'}") == 2
    line = one_error_line(capsys)
    assert f"cannot create {tmp_path / 'a-file' / 'run'}" in line and "compose the config" not in line


def test_a_full_disk_while_recording_the_lock_is_one_line_and_leaves_no_lock(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    write = os.pwrite

    def disk_full(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(run_folder.os, "pwrite", disk_full)
    code = command(monkeypatch, tmp_path, f"hydra.run.dir={folder}")
    monkeypatch.setattr(run_folder.os, "pwrite", write)
    assert code == 2
    line = one_error_line(capsys)
    assert f"cannot use run folder {folder}" in line and "No space left on device" in line
    assert os.listdir(folder) == []


def test_acdc_evaluate_failing_at_start_leaves_the_folder_for_the_same_command(tmp_path, monkeypatch, capsys):
    from acdc_engine.commands import evaluate as evaluate_cli

    folder = tmp_path / "evaluation"
    folder.mkdir()
    args = ("methods=[eap]", "model=local", f"model.path={tmp_path / 'no-such-model'}", f"hydra.run.dir={folder}")
    for _ in range(2):
        assert command(monkeypatch, tmp_path, *args, main=evaluate_cli.main, prog="acdc-evaluate") == 2
        line = one_error_line(capsys, prog="acdc-evaluate")
        assert "no-such-model" in line and "already holds" not in line
        assert os.listdir(folder) == []


def test_a_value_hydra_cannot_merge_is_one_line(tmp_path, monkeypatch, capsys):
    assert command(monkeypatch, tmp_path, "method.batch_size=1.5") == 2
    line = one_error_line(capsys)
    assert "method.batch_size=1.5" in line and "could not be converted to Integer" in line


def test_a_sweep_whose_jobs_all_failed_is_summarised_by_its_errors(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    assert command(monkeypatch, tmp_path, "-m", f"hydra.sweep.dir={sweep}", "method.threshold=-1,-2") == 2
    assert "2 job(s) of the sweep failed" in capsys.readouterr().err
    assert acdc_summary([str(sweep)]) == 2
    line = one_error_line(capsys, prog="acdc-summary")
    assert "no circuit.json under" in line and "0_method.threshold=-1,progress=False (method.threshold must be" in line
