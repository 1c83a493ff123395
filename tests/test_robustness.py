"""Bad input and failed writes end in one line naming the problem, never a traceback, and never lose
finished work: the Python API's arguments and the task's memory are checked before any work, a
finished run's files are saved elsewhere when their folder cannot take them, Ctrl-C says how to
resume, and smaller cases (dtype names, the offline hub's message)."""

import errno
import json
import os
import signal
import tempfile
import warnings

import pytest
import torch
from console_scripts import signal_at_line
from factories import random_task, small_model

import acdc_engine
from acdc_engine.patching import memory as memory_model
from acdc_engine import api
from acdc_engine.methods import arguments as argument_checks
from acdc_engine.core import choices
from acdc_engine.core.errors import AcdcError
from acdc_engine.commands import evaluate as evaluate_cli
from acdc_engine.commands.run_folder import save_outputs
from acdc_engine.commands.summary import main as acdc_summary
from acdc_engine.tasks import TaskData, induction
from test_run_folder import command
from acdc_engine.formats.circuit_file import save_circuit


@pytest.fixture(scope="module")
def model():
    return small_model(attn_only=True)


@pytest.fixture
def no_work(monkeypatch):
    """Any patched pass started fails the test: the arguments must be refused before."""

    def work_started(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(api, "Measurement", work_started)


def tokens(**kwargs):
    return torch.zeros(2, 5, dtype=torch.long, **kwargs)


class TransformerBridge:  # the class names the engine accepts without importing them
    pass


class ModelSpec:
    pass


# ----- the Python API: every argument checked before work starts -----------------------------------


@pytest.mark.parametrize(
    "arguments, complaint",
    [
        (dict(threshold=None), "threshold must be a number"),
        (dict(task={"clean": tokens(), "corrupted": tokens()}, task_params={"n_prompts": 3}), "task_params are for a built-in task name"),
        (dict(task="induction", task_params={"n_promps": 3}), "unknown task_params n_promps for task 'induction'; it takes n_prompts"),
        (dict(task={"clen": tokens(), "corrupted": tokens()}), "unknown task field(s) clen"),
        (dict(model=torch.nn.Linear(2, 2)), "model must be a TransformerLens HookedTransformer or TransformerBridge"),
        (dict(task=(tokens(device="meta"), tokens())), "task clean is on the meta device"),
        (dict(task=TaskData("t", clean=tokens(), corrupted=tokens()), checkpoint=os.devnull + "/x.safetensors"), "cannot be written"),
    ],
)
def test_bad_api_arguments_are_refused_by_name_before_any_work(model, no_work, arguments, complaint):
    arguments = {"model": model, "task": random_task(), "progress": False, **arguments}
    with pytest.raises(AcdcError) as error:
        acdc_engine.discover(arguments.pop("model"), arguments.pop("task"), **arguments)
    assert complaint in str(error.value)


def test_a_checkpoint_path_that_is_a_folder_is_refused_before_any_work(model, no_work, tmp_path):
    with pytest.raises(AcdcError, match=f"checkpoint={tmp_path} is a folder"):
        acdc_engine.discover(model, random_task(), checkpoint=tmp_path, progress=False)


@pytest.mark.parametrize("kind", [TransformerBridge, ModelSpec])
def test_models_of_other_supported_kinds_are_recognised_by_class_name(kind):
    argument_checks.check_discover_arguments(
        kind(), random_task(), task_params=None, checkpoint=None, threshold=0.1, uses_threshold=True
    )


def test_meta_weights_are_refused(no_work):
    meta_model = small_model(attn_only=True).to("meta")
    with pytest.raises(AcdcError, match="meta device"):
        acdc_engine.discover(meta_model, random_task(), progress=False)


# ----- memory -------------------------------------------------------------------------------------------


def test_a_task_too_large_for_memory_is_refused_before_it_is_built(toy_induction_model, monkeypatch):
    built = []
    build = induction.make_induction
    monkeypatch.setattr(induction, "make_induction", lambda d_vocab, **params: built.append(params["n_prompts"]) or build(d_vocab, **params))
    with pytest.raises(AcdcError, match=r"task.n_prompts=100000000: 100000000 prompts of 17 tokens need about [\d,.]+ GiB"):
        acdc_engine.discover(toy_induction_model, "induction", task_params={"n_prompts": 10**8}, progress=False)
    assert max(built) <= argument_checks.PROBE_PROMPTS


def test_task_data_beyond_the_available_memory_is_refused_naming_both_sizes(model, monkeypatch, no_work):
    task = random_task()
    needed = memory_model.patched_pass_bytes(model.cfg, n_prompts=6, n_tokens=7, n_positions=1, split_input=False)
    monkeypatch.setattr(argument_checks, "available_memory", lambda device: needed - 1)
    with pytest.raises(AcdcError, match=r"the task: 6 prompts of 7 tokens need about .* GiB .* cpu has .* GiB available"):
        acdc_engine.discover(model, task, progress=False)


def test_the_memory_estimate_grows_with_prompts_tokens_and_model_width(model):
    def estimate(cfg=model.cfg, n_prompts=10, n_tokens=8):
        return memory_model.patched_pass_bytes(cfg, n_prompts=n_prompts, n_tokens=n_tokens, n_positions=1, split_input=False)

    wider = small_model(attn_only=True, d_model=64).cfg
    assert estimate(n_prompts=30) - estimate(n_prompts=20) == pytest.approx(estimate(n_prompts=20) - estimate(), rel=0.01)
    assert estimate(n_prompts=20) > estimate() and estimate(n_tokens=16) > estimate() and estimate(wider) > estimate()


# ----- writes that fail after the work is done ------------------------------------------------------


def test_outputs_whose_name_is_taken_by_a_folder_are_saved_elsewhere_saying_where(small_circuit, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "run" / "circuit.json").mkdir(parents=True)
    saved = save_outputs(tmp_path / "run", lambda folder: [save_circuit(small_circuit, folder / "circuit.json")], "the circuit file")
    (rescued,) = saved.paths
    assert rescued.parent.parent == tmp_path / "tmp"
    assert f"cannot write the circuit file into {tmp_path / 'run'}" in saved.problem and str(rescued.parent) in saved.problem
    assert acdc_engine.load_circuit(rescued).edges() == small_circuit.edges()


def full_disk_under(folder, names):
    """os.replace that fails with ENOSPC for files under ``folder`` whose names start with ``names``."""
    replace = os.replace

    def replace_or_fail(src, dst, *args, **kwargs):
        if str(dst).startswith(str(folder)) and os.path.basename(dst).startswith(names):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return replace(src, dst, *args, **kwargs)

    return replace_or_fail


def test_a_full_disk_at_the_end_of_a_run_saves_the_circuit_elsewhere_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(os, "replace", full_disk_under(tmp_path / "outputs", "circuit"))
    assert command(monkeypatch, tmp_path) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert "No space left on device" in line and "they were saved to" in line
    (rescued,) = (tmp_path / "tmp").glob("acdc-rescued-*/circuit.json")
    assert str(rescued.parent) in line and f"circuit files: {rescued}" in out
    edges_kept = int(out.split("edges kept: ")[1].split(" /")[0])
    assert acdc_engine.load_circuit(rescued).n_edges == edges_kept
    assert not list((tmp_path / "outputs").rglob("circuit.json"))


def test_blocked_evaluation_outputs_are_saved_elsewhere_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(os, "replace", full_disk_under(tmp_path / "outputs", "faithfulness"))
    assert command(monkeypatch, tmp_path, "methods=[eap]", main=evaluate_cli.main, prog="acdc-evaluate") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot write the evaluation files" in line and "they were saved to" in line
    (rescued,) = (tmp_path / "tmp").glob("acdc-rescued-*/faithfulness.json")
    assert "eap" in json.loads(rescued.read_text())


def test_a_checkpoint_that_cannot_be_saved_warns_once_and_the_run_goes_on(model, tmp_path, monkeypatch):
    task = random_task()
    checkpoint = tmp_path / "checkpoint.safetensors"
    monkeypatch.setattr(os, "replace", full_disk_under(tmp_path, "checkpoint"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        circuit = acdc_engine.discover(model, task, threshold=0.01, checkpoint=checkpoint, checkpoint_every=1, progress=False)
    problems = [w for w in caught if "cannot save the checkpoint" in str(w.message)]
    assert len(problems) == 1 and "No space left on device" in str(problems[0].message)
    assert circuit.n_edges_total > 0 and not checkpoint.exists()


@pytest.mark.parametrize("target", ["folder", "under a file"])
def test_summary_csv_that_cannot_be_written_is_one_line(small_circuit, tmp_path, capsys, target):
    save_circuit(small_circuit, tmp_path / "runs" / "0_x" / "circuit.json")
    (tmp_path / "a-file").write_text("")
    csv = tmp_path / "runs" if target == "folder" else tmp_path / "a-file" / "runs.csv"
    assert acdc_summary([str(tmp_path / "runs"), "--csv", str(csv)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("acdc-summary: error:") and str(csv) in line


# ----- Ctrl-C --------------------------------------------------------------------------------------

INTERRUPTED_AFTER_A_SAVE = """
import sys, time
from acdc_engine.methods.checkpoint import Checkpointer
from acdc_engine.commands.discover import main
save = Checkpointer.save
def save_then_wait(self, state):
    save(self, state)
    print("checkpoint saved", flush=True)
    while True:  # until the test's Ctrl-C, however loaded the machine
        time.sleep(0.05)
Checkpointer.save = save_then_wait
sys.argv = ["acdc-discover", *sys.argv[1:]]
main()
"""


def test_ctrl_c_prints_one_line_with_the_checkpoint_and_the_command_that_resumes(tmp_path):
    args = ["checkpoint.every_decisions=1", "progress=false"]
    returncode, err = signal_at_line(INTERRUPTED_AFTER_A_SAVE, args, tmp_path, "checkpoint saved", signal.SIGINT)
    (folder,) = [p.parent for p in (tmp_path / "outputs").rglob("checkpoint.safetensors")]
    folder = folder.relative_to(tmp_path)
    assert returncode == 130
    (line,) = err.strip().splitlines()
    assert line.startswith("acdc-discover: interrupted; the last checkpoint is ")
    assert str(folder / "checkpoint.safetensors") in line
    assert f"acdc-discover resume={folder} checkpoint.every_decisions=1 progress=false" in line


# ----- smaller ones -----------------------------------------------------------------------------------


@pytest.mark.parametrize("given", [torch.float16, "float16"])
def test_a_dtype_is_read_as_a_name_or_a_torch_dtype(given):
    assert choices.dtype_name(given, ["float32", "float16"]) == "float16"


def test_an_unknown_dtype_is_refused_listing_the_choices():
    with pytest.raises(AcdcError, match=r"unknown dtype torch.int8; choose one of float32, float16"):
        choices.dtype_name(torch.int8, ["float32", "float16"])


def test_the_offline_hub_message_quotes_the_librarys_error_whole_on_one_line(monkeypatch):
    from huggingface_hub import constants

    from acdc_engine.models.hub import _download, load_pretrained, official_name

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError) as library:  # what TransformerLens / transformers raise without a hub
        _download(official_name("gpt2"), "cpu", torch.float32)
    with pytest.raises(AcdcError) as error:
        load_pretrained("gpt2", "cpu", torch.float32)
    message = str(error.value)
    assert " ".join(str(library.value).split()) in message and "\n" not in message
