"""Learned-mask runs that survive: edge-pruning, ugs and subnetwork-probing share ``mask_training``'s
loop, so each of them checkpoints, resumes bit for bit, is refused a checkpoint of other settings,
saves and stops on SIGTERM, and keeps its masks when the loss stops being finite.

Kills are real SIGKILLs at deterministic points, as in test_resume.py: a forked child (or, for the
command line, a subprocess) runs discovery with ``Checkpointer.save`` wrapped so that the process
kills itself right after the save the test names; the parent then resumes from the file left behind.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from factories import random_task, small_model
from test_resume import CLI_KILLED_AFTER_SAVES, in_child_until_killed, kill_after_save, without_timing

from acdc_engine import AcdcError, discover
from acdc_engine.formats.circuit_file import circuit_to_dict
from acdc_engine.measure.measurement import Measurement
from acdc_engine.methods.checkpoint import Checkpointer, Terminated, load_checkpoint, stop_on_signal
from acdc_engine.methods.edge_pruning import EdgePruningParams, train_edge_masks
from acdc_engine.methods.fingerprint import fingerprint
from acdc_engine.methods.mask_training import NonFiniteLoss
from acdc_engine.methods.subnetwork_probing import SubnetworkProbingParams, train_subnetwork_probing
from acdc_engine.methods.ugs import UgsParams, train_ugs
from acdc_engine.models import load_model

STEPS = 8
RUNS = {
    "edge-pruning": dict(method="edge-pruning", steps=STEPS, target_sparsity=0.5, samples=2, progress=False),
    "ugs": dict(method="ugs", steps=STEPS, samples=2, sparsity_weight=0.05, progress=False),
    "subnetwork-probing": dict(method="subnetwork-probing", steps=STEPS, sparsity_weight=0.5, lr=0.05, progress=False),
}
KILL_POINTS = {
    "after the first step": lambda state: state.step == 1,
    "mid-run": lambda state: state.step == 5,
    "after the last step": lambda state: state.step == STEPS,
}


def setting():
    return small_model(attn_only=False, seed=9), random_task(seed=9, positions=[4, 6])


@pytest.fixture(scope="module")
def uninterrupted():
    """method -> the circuit file (without its timing) of a run that nothing interrupts (and that
    saves no checkpoint)."""
    files = {}

    def circuit_file(method):
        if method not in files:
            files[method] = without_timing(circuit_to_dict(discover(*setting(), **RUNS[method])))
        return files[method]

    return circuit_file


def discover_killed_when(method, when, checkpoint):
    def body():
        kill_after_save(when)
        discover(*setting(), **RUNS[method], checkpoint=checkpoint, checkpoint_every=1)

    in_child_until_killed(body)


def resumed_file(method, checkpoint, **checkpointing):
    return without_timing(circuit_to_dict(discover(*setting(), **RUNS[method], checkpoint=checkpoint, **checkpointing)))


@pytest.mark.parametrize("kill_point", list(KILL_POINTS))
@pytest.mark.parametrize("method", list(RUNS))
def test_run_killed_and_resumed_ends_with_the_uninterrupted_circuit_and_scores(tmp_path, uninterrupted, method, kill_point):
    checkpoint = tmp_path / "checkpoint.safetensors"
    discover_killed_when(method, KILL_POINTS[kill_point], checkpoint)
    assert KILL_POINTS[kill_point](load_checkpoint(checkpoint).state)
    assert resumed_file(method, checkpoint, checkpoint_every=1) == uninterrupted(method)


def test_resumed_run_killed_again_and_resumed_ends_with_the_uninterrupted_circuit(tmp_path, uninterrupted):
    checkpoint = tmp_path / "checkpoint.safetensors"
    discover_killed_when("edge-pruning", lambda state: state.step == 2, checkpoint)
    discover_killed_when("edge-pruning", lambda state: state.step == 5, checkpoint)  # resumes from step 2
    assert load_checkpoint(checkpoint).state.step == 5
    assert resumed_file("edge-pruning", checkpoint) == uninterrupted("edge-pruning")


def test_resume_with_other_settings_is_refused_naming_what_differs(tmp_path):
    checkpoint = tmp_path / "checkpoint.safetensors"
    discover(*setting(), **RUNS["edge-pruning"], checkpoint=checkpoint)
    with pytest.raises(AcdcError, match=r"^cannot resume from .*: config differs: lr \(0.1 in the checkpoint, 0.05 now\)$"):
        discover(*setting(), **{**RUNS["edge-pruning"], "lr": 0.05}, checkpoint=checkpoint)


def test_resuming_a_finished_run_leaves_its_checkpoint_as_it_was(tmp_path):
    checkpoint = tmp_path / "checkpoint.safetensors"
    discover(*setting(), **RUNS["ugs"], checkpoint=checkpoint)
    finished = checkpoint.read_bytes()
    discover(*setting(), **RUNS["ugs"], checkpoint=checkpoint)
    assert checkpoint.read_bytes() == finished


class Kept:
    """A ``Checkpointing`` that keeps the states it is given in memory."""

    path = "memory"

    def __init__(self):
        self.states = []

    def due(self, visited):
        return False

    def save(self, state):
        self.states.append(state)


def test_a_saved_state_of_another_graph_is_refused_naming_the_parameter():
    attn_only, with_mlps = Measurement(small_model(attn_only=True, seed=9), random_task(seed=9)), Measurement(*setting())
    kept = Kept()
    train_ugs(attn_only.patcher, attn_only.metric, UgsParams(steps=1, samples=1), lr=0.01, checkpointer=kept)
    with pytest.raises(AcdcError, match=r"^ugs: the saved state's log_alpha does not fit this run's"):
        train_ugs(with_mlps.patcher, with_mlps.metric, UgsParams(steps=1, samples=1), lr=0.01, resume=kept.states[-1])


# ----- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_saves_the_next_steps_state_and_stops_and_the_resumed_run_ends_uninterrupted(tmp_path, uninterrupted, monkeypatch):
    due = Checkpointer.due

    def terminated_after_step_three(self, visited):
        if visited == 3 and self.stop_signal is None:
            os.kill(os.getpid(), signal.SIGTERM)
            while self.stop_signal is None:  # until the handler has run
                time.sleep(0.01)
        return due(self, visited)

    checkpoint = tmp_path / "checkpoint.safetensors"
    monkeypatch.setattr(Checkpointer, "due", terminated_after_step_three)
    previous = signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        with pytest.raises(Terminated):
            discover(*setting(), **RUNS["ugs"], checkpoint=checkpoint, checkpoint_every=None, checkpoint_seconds=None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert load_checkpoint(checkpoint).state.step == 3  # no periodic save: SIGTERM's
    monkeypatch.setattr(Checkpointer, "due", due)
    assert resumed_file("ugs", checkpoint) == uninterrupted("ugs")


# ----- a loss that stops being finite --------------------------------------------------------------


def poisoned_from_call(metric, call):
    """``metric``, but NaN from its ``call``-th call on (one call per training step)."""
    calls = []

    def poisoned(logits):
        calls.append(None)
        value = metric(logits)
        return value * math.nan if len(calls) >= call else value

    return poisoned


def test_non_finite_loss_stops_naming_the_checkpoint_of_the_step_before_which_resumes_exactly(tmp_path):
    measurement = Measurement(*setting())
    params = EdgePruningParams(steps=STEPS, target_sparsity=0.5, samples=2)
    path = tmp_path / "checkpoint.safetensors"
    checkpointer = Checkpointer(path, fingerprint({}, *setting()), every_seconds=None)
    with pytest.raises(NonFiniteLoss) as error:
        train_edge_masks(measurement.patcher, poisoned_from_call(measurement.metric, 4), params, checkpointer=checkpointer)
    message = str(error.value)
    assert message.startswith("edge-pruning: the loss is not finite at step 4 of 8 (metric nan, lambdas [")
    assert message.endswith(f"try a smaller lr; the masks after step 3, the last finite one, are saved with the run's state in {path}")
    saved = load_checkpoint(path).state
    assert saved.step == error.value.state.step == 3
    # the saved state is exact: resumed once the metric is fixed, it ends as a run that never failed
    resumed = train_edge_masks(measurement.patcher, measurement.metric, params, resume=saved)
    straight = train_edge_masks(measurement.patcher, measurement.metric, params)
    assert torch.equal(resumed.edge_log_alpha, straight.edge_log_alpha) and torch.equal(resumed.head_log_alpha, straight.head_log_alpha)
    assert resumed.loss == straight.loss and resumed.metric == straight.metric


def test_non_finite_gradient_stops_before_the_update_keeping_the_masks_on_the_error():
    measurement = Measurement(*setting())
    params = SubnetworkProbingParams(steps=3)

    def finite_with_an_infinite_gradient(logits):
        return (logits.sum((1, 2, 3)) * 0).sqrt()  # sqrt(0) = 0; its gradient 0 * inf = nan

    with pytest.raises(NonFiniteLoss, match=r"^subnetwork-probing: the loss's gradient is not finite at step 1 of 3 \(metric 0\); try a smaller lr$") as error:
        train_subnetwork_probing(measurement.patcher, finite_with_an_infinite_gradient, params)
    kept = error.value.state
    assert kept.step == 0
    assert all(bool((value == params.init_log_alpha).all()) for value in kept.parameters.values())  # not updated


# ----- the command line ----------------------------------------------------------------------------


def test_cli_edge_pruning_killed_and_resumed_writes_the_uninterrupted_circuit_into_its_folder(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""}
    args = ["method=edge-pruning", "method.steps=12", "checkpoint.every_decisions=3", "progress=false"]

    def cli(*command):
        return subprocess.run([sys.executable, *command], cwd=tmp_path, env=env, capture_output=True, text=True)

    killed = cli("-c", CLI_KILLED_AFTER_SAVES, "2", *args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (folder,) = [p.parent for p in (tmp_path / "outputs").rglob("checkpoint.safetensors")]
    assert load_checkpoint(folder / "checkpoint.safetensors").state.step == 6 and not (folder / "circuit.json").exists()
    resumed = cli("-m", "acdc_engine.commands.discover", f"resume={folder}", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {folder / 'checkpoint.safetensors'}" in resumed.stdout

    # the uninterrupted run, through the API the command line is a thin layer over (conf/ defaults)
    task_params = {"n_prompts": 32, "half_length": 8, "bos_token": 0, "seed": 0}  # conf/task/induction.yaml
    uninterrupted = discover(
        load_model("toy-induction-2l"), "induction", method="edge-pruning", steps=12, score_threshold=0.5,
        task_params=task_params, model_name="toy-induction-2l", progress=False,
    )
    resumed_file = json.loads((folder / "circuit.json").read_text())
    assert without_timing(resumed_file) == without_timing(circuit_to_dict(uninterrupted))
