"""Run survival: ACDC checkpoints and resume, refusal on changed inputs, the stop on a non-finite
metric, and circuit files that are never half-written.

Kills are real SIGKILLs at deterministic points: a forked child (or, for the command line, a
subprocess) runs discovery with ``Checkpointer.save`` wrapped so that the process kills itself right
after the save the test names; the parent then resumes from the file left behind.
"""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import traceback

from operator import attrgetter
from pathlib import Path

import pytest
import torch
from factories import random_task, small_config, small_model

from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine import AcdcError, build_graph, discover
from acdc_engine.methods.checkpoint import Checkpointer, checkpoint_bytes, load_checkpoint
from acdc_engine.methods.fingerprint import fingerprint
from acdc_engine.formats.drawing import write_drawings
from acdc_engine.formats.atomic_files import atomic_write_bytes
from acdc_engine.methods.acdc import AcdcState, run_acdc, visiting_order, visiting_segments
from acdc_engine.models import load_model
from acdc_engine.measure.metrics import kl_divergence
from acdc_engine.patching import EdgePatcher
from acdc_engine.formats.circuit_file import circuit_to_dict, save_circuit

THRESHOLD = 0.005
RUN = dict(threshold=THRESHOLD, batch_size=5, progress=False)


def setting():
    return small_model(attn_only=False, seed=9), random_task(seed=9, positions=[4, 6])


def without_timing(circuit_dict):
    return {**circuit_dict, "run": {k: v for k, v in circuit_dict["run"].items() if k != "seconds"}}


@pytest.fixture(scope="module")
def uninterrupted_circuit():
    """The circuit of a run that nothing interrupts (and that saves no checkpoint)."""
    model, task = setting()
    circuit = discover(model, task, **RUN)
    assert 0 < int(circuit.kept.edges.sum()) < circuit.n_edges_total  # both decisions occur: comparisons mean something
    return circuit


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_circuit):
    """Its circuit file's contents."""
    return circuit_to_dict(uninterrupted_circuit)


def in_child_until_killed(body):
    """Run ``body()`` in a forked child that must end by SIGKILL; fail if it ends any other way."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            body()
        except BaseException:
            traceback.print_exc()
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the child was not killed where planned"


def kill_after_save(when):
    """Make ``Checkpointer.save`` SIGKILL the process after a save whose state satisfies ``when``
    (call in the child only)."""
    original = Checkpointer.save

    def save_then_die(self, state):
        original(self, state)
        if when(state):
            os.kill(os.getpid(), signal.SIGKILL)

    Checkpointer.save = save_then_die


def discover_killed_when(when, checkpoint, **overrides):
    def body():
        kill_after_save(when)
        model, task = setting()
        discover(model, task, **{**RUN, **overrides}, checkpoint=checkpoint, checkpoint_every=1)

    in_child_until_killed(body)


def layer1_head_edges() -> range:
    """Visiting-order indices strictly inside layer 1's segment of single edges into heads."""
    graph = build_graph(small_config(attn_only=False))
    start = 0
    for segment in visiting_segments(graph):
        end = start + len(segment.candidates)
        if segment.start_layer == 1 and segment.candidates[0].edge is not None and segment.candidates[0].name.endswith(">"):
            return range(start + 1, end)
        start = end
    raise AssertionError("no head-edge segment in layer 1")


N_CANDIDATES = len(visiting_order(build_graph(small_config(attn_only=False))))
MID_LAYER = layer1_head_edges()
KILL_POINTS = {
    "after the first checkpoint": lambda state: True,
    "mid-layer": lambda state: state.visited in MID_LAYER,
    "after ACDC's last decision": lambda state: state.visited == N_CANDIDATES,
}


@pytest.mark.parametrize("kill_point", list(KILL_POINTS))
def test_run_killed_and_resumed_ends_with_the_uninterrupted_circuit(tmp_path, uninterrupted, kill_point):
    checkpoint = tmp_path / "checkpoint.safetensors"
    discover_killed_when(KILL_POINTS[kill_point], checkpoint)
    assert load_checkpoint(checkpoint).state.visited > 0
    model, task = setting()
    resumed = discover(model, task, **RUN, checkpoint=checkpoint, checkpoint_every=1)
    assert without_timing(circuit_to_dict(resumed)) == without_timing(uninterrupted)


def test_resumed_run_killed_again_and_resumed_ends_with_the_uninterrupted_circuit(tmp_path, uninterrupted):
    checkpoint = tmp_path / "checkpoint.safetensors"
    discover_killed_when(KILL_POINTS["after the first checkpoint"], checkpoint)
    first_stop = load_checkpoint(checkpoint).state.visited
    discover_killed_when(KILL_POINTS["mid-layer"], checkpoint)
    second_stop = load_checkpoint(checkpoint)
    assert second_stop.state.visited > first_stop and second_stop.seconds > 0
    model, task = setting()
    resumed = discover(model, task, **RUN, checkpoint=checkpoint)
    assert without_timing(circuit_to_dict(resumed)) == without_timing(uninterrupted)
    assert resumed.run["seconds"] >= round(second_stop.seconds, 3)  # the time spent before the kills counts


def test_resume_with_another_batch_size_makes_the_same_decisions(tmp_path, uninterrupted):
    checkpoint = tmp_path / "checkpoint.safetensors"
    discover_killed_when(KILL_POINTS["mid-layer"], checkpoint)
    model, task = setting()
    resumed = circuit_to_dict(discover(model, task, **{**RUN, "batch_size": 1}, checkpoint=checkpoint))
    assert resumed["nodes"] == uninterrupted["nodes"]
    for section in ("edges", "head_inputs"):
        for name, entry in resumed[section].items():
            expected = uninterrupted[section][name]
            assert (entry["kept"], entry["in_graph"]) == (expected["kept"], expected["in_graph"]), name
            # batches of another shape round differently in the last bits
            assert entry["score"] == (None if expected["score"] is None else pytest.approx(expected["score"], rel=1e-9, abs=1e-15)), name


def test_resume_without_a_batch_size_keeps_the_checkpoints_batching(tmp_path, uninterrupted):
    checkpoint = tmp_path / "checkpoint.safetensors"
    discover_killed_when(KILL_POINTS["mid-layer"], checkpoint)
    model, task = setting()
    resumed = discover(model, task, **{**RUN, "batch_size": None}, checkpoint=checkpoint)
    assert without_timing(circuit_to_dict(resumed)) == without_timing(uninterrupted)


@pytest.fixture
def finished_checkpoint(tmp_path):
    """A checkpoint left by a complete run of the standard setting."""
    checkpoint = tmp_path / "checkpoint.safetensors"
    model, task = setting()
    discover(model, task, **RUN, checkpoint=checkpoint)
    return checkpoint


def test_resume_with_another_threshold_is_refused_naming_it(finished_checkpoint):
    model, task = setting()
    with pytest.raises(AcdcError, match=r"config differs: threshold \(0.005 in the checkpoint, 0.01 now\)"):
        discover(model, task, **{**RUN, "threshold": 0.01}, checkpoint=finished_checkpoint)


def test_resume_with_other_weights_is_refused_naming_the_model(finished_checkpoint):
    _, task = setting()
    other = small_model(attn_only=False, seed=2)
    with torch.no_grad():
        other.blocks[0].attn.W_Q[0, 0, 0] += 1e-9
    with pytest.raises(AcdcError, match="model differs: its weights") as refusal:
        discover(other, task, **RUN, checkpoint=finished_checkpoint)
    assert "config" not in str(refusal.value) and "data" not in str(refusal.value)


def test_resume_with_other_prompts_is_refused_naming_the_data(finished_checkpoint):
    model, task = setting()
    task.corrupted[0, 0] = (task.corrupted[0, 0] + 1) % model.cfg.d_vocab
    with pytest.raises(AcdcError, match="data differs: the task's corrupted$"):
        discover(model, task, **RUN, checkpoint=finished_checkpoint)


def test_config_differences_name_the_dotted_key_and_both_values():
    model, task = setting()
    saved = fingerprint({"method": {"threshold": 0.05, "ablation": "resample"}, "seed": 0}, model, task)
    now = fingerprint({"method": {"threshold": 0.1, "ablation": "resample"}}, model, task)
    assert saved.differences(now) == ["config differs: method.threshold (0.05 in the checkpoint, 0.1 now); seed (0 in the checkpoint, absent now)"]


def test_fingerprint_leaves_out_settings_that_cannot_change_the_circuit():
    model, task = setting()
    base = {"method": {"threshold": 0.05, "batch_size": None}, "progress": True, "resume": None, "checkpoint": {"every_seconds": 60}, "device": "auto"}
    other = {"method": {"threshold": 0.05, "batch_size": 4}, "progress": False, "resume": "outputs/x", "checkpoint": {"every_seconds": 5}, "device": "cpu"}
    assert fingerprint(base, model, task) == fingerprint(other, model, task)


def test_checkpoint_round_trips_the_state_exactly(tmp_path):
    graph = build_graph(small_config(attn_only=False))
    g = torch.Generator().manual_seed(0)
    state = AcdcState(
        visited=17,
        kept=CircuitMask((torch.rand(graph.edge_exists.shape, generator=g) < 0.5) & graph.edge_exists, torch.rand((2, 3, 3), generator=g) < 0.5),
        scores=Scores(torch.rand(graph.edge_exists.shape, generator=g, dtype=torch.float64), torch.full((2, 3, 3), math.nan, dtype=torch.float64)),
        cur=0.1 + 0.2,  # not a short decimal: must come back bit for bit
        metric_full=1e-300,
        forward_passes=9,
        candidates_tested=15,
        window=4,
        batch_size=8,
    )
    model, task = setting()
    print_ = fingerprint({"threshold": 0.05}, model, task)
    atomic_write_bytes(tmp_path / "c.safetensors", checkpoint_bytes(state, print_, seconds=1.5))
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    assert loaded.fingerprint == print_ and loaded.seconds == 1.5
    for name in ("visited", "cur", "metric_full", "forward_passes", "candidates_tested", "window", "batch_size"):
        assert getattr(loaded.state, name) == getattr(state, name), name
    for name in ("kept.edges", "kept.head_inputs", "scores.edges", "scores.head_inputs"):
        assert torch.equal(attrgetter(name)(loaded.state).nan_to_num(-1), attrgetter(name)(state).nan_to_num(-1)), name


def test_checkpoint_round_trips_the_speculation_hints(tmp_path):
    graph = build_graph(small_config(attn_only=False))
    full = graph.full_mask()
    state = AcdcState(visited=3, kept=full, scores=Scores.unscored(full), cur=0.5, metric_full=0.25, forward_passes=2,
                      candidates_tested=3, window=4, batch_size=8, hints={5: True, 7: False, 40: True})
    model, task = setting()
    path = tmp_path / "c.safetensors"
    atomic_write_bytes(path, checkpoint_bytes(state, fingerprint({}, model, task), seconds=0.0))
    assert load_checkpoint(path).state.hints == {5: True, 7: False, 40: True}
    atomic_write_bytes(path, checkpoint_bytes(dataclasses.replace(state, hints={}), fingerprint({}, model, task), seconds=0.0))
    assert load_checkpoint(path).state.hints == {}


class KeepEverySave:
    """A ``Checkpointing`` that is due after every batch and keeps each saved state's file contents."""

    def __init__(self, fingerprint_):
        self.path, self.fingerprint, self.files = Path("in memory"), fingerprint_, []

    def due(self, visited):
        return True

    def save(self, state):
        self.files.append(checkpoint_bytes(state, self.fingerprint, seconds=0.0))


def test_resumed_from_any_save_the_run_repeats_the_uninterrupted_ones_passes(tmp_path):
    """The speculation's hints travel in the checkpoint: a run resumed from any of its saves makes
    the uninterrupted run's decisions with the same scores in the same number of passes."""
    model, task = setting()
    graph = build_graph(model.cfg)
    patcher = EdgePatcher(model, task.clean, task.corrupted, task.positions)
    metric = kl_divergence(patcher.logits(graph.full_mask()))

    def evaluate(masks, start_layer):
        return metric(patcher.logits(masks, start_layer)).double()

    saves = KeepEverySave(fingerprint({}, model, task))
    straight = run_acdc(graph, evaluate, THRESHOLD, batch_size=8, progress=False, checkpointer=saves)
    states = []
    for n, contents in enumerate(saves.files[:-1]):
        (tmp_path / f"{n}.safetensors").write_bytes(contents)
        states.append(load_checkpoint(tmp_path / f"{n}.safetensors").state)
    with_hints = [state for state in states if state.hints]
    assert with_hints  # the speculation learned hints, so their saving is exercised
    for state in states:
        resumed = run_acdc(graph, evaluate, THRESHOLD, batch_size=8, progress=False, resume=state)
        assert torch.equal(resumed.kept.edges, straight.kept.edges) and torch.equal(resumed.kept.head_inputs, straight.kept.head_inputs)
        assert torch.equal(resumed.scores.edges.nan_to_num(-1), straight.scores.edges.nan_to_num(-1))
        assert torch.equal(resumed.scores.head_inputs.nan_to_num(-1), straight.scores.head_inputs.nan_to_num(-1))
        assert (resumed.forward_passes, resumed.candidates_tested, resumed.metric_final) == (
            straight.forward_passes, straight.candidates_tested, straight.metric_final)


def test_a_file_that_is_not_a_checkpoint_is_rejected_naming_it(tmp_path):
    path = tmp_path / "circuit.safetensors"
    path.write_text('{"format": "acdc-engine/circuit"}')
    with pytest.raises(AcdcError, match="circuit.safetensors: not a readable checkpoint file"):
        load_checkpoint(path)


# --- a metric that stops being finite --------------------------------------------------------------


def removal_costs(graph, threshold):
    """What removing each edge adds to ``additive_metric``: 2 * threshold (so it is kept) for edges
    into logits and every third other edge of the visiting order, threshold / 4 for the rest."""
    costs = torch.zeros(graph.edge_exists.shape, dtype=torch.float64)
    for n, candidate in enumerate(visiting_order(graph)):
        if candidate.edge is not None:
            into_logits = graph.receivers[candidate.edge[1]] == "logits"
            costs[candidate.edge] = 2 * threshold if into_logits or n % 3 == 0 else threshold / 4
    return costs


def additive_metric(graph, threshold, poisoned=None):
    """An evaluate function in which each removal adds a fixed cost (``removal_costs``; 2 * threshold
    for head inputs). No sender dies and no head input goes, so every candidate is tested.
    poisoned: an edge name; circuits without it measure NaN."""
    costs = removal_costs(graph, threshold)

    def evaluate(masks, start_layer):
        edge_masks, head_input_masks = masks.edges, masks.head_inputs
        values = ((~edge_masks & graph.edge_exists) * costs).sum(dim=(1, 2))
        values = values + 2 * threshold * (~head_input_masks).sum(dim=(1, 2, 3))
        if poisoned is not None:
            s, r = graph.parse_edge(poisoned)
            values = torch.where(edge_masks[:, s, r], values, torch.tensor(math.nan, dtype=torch.float64))
        return values

    return evaluate


def stop_on_nan(tmp_path, graph, poisoned, batch_size):
    """Run ACDC into the NaN at ``poisoned``; returns (the error, the state saved before it)."""
    model, task = setting()
    path = tmp_path / f"state-{batch_size}.safetensors"
    checkpointer = Checkpointer(path, fingerprint({}, model, task), every_seconds=None)
    with pytest.raises(AcdcError) as error:
        run_acdc(graph, additive_metric(graph, 0.1, poisoned), 0.1, batch_size=batch_size, progress=False, checkpointer=checkpointer)
    return str(error.value), load_checkpoint(path).state


@pytest.mark.parametrize("batch_size", [1, 8])
def test_non_finite_metric_stops_naming_the_edge_after_saving_the_circuit_before_it(tmp_path, batch_size):
    graph = build_graph(small_config(attn_only=False))
    poisoned = "a0.h1->a1.h2<k>"
    message, state = stop_on_nan(tmp_path, graph, poisoned, batch_size)
    assert message.startswith(f"the metric is nan (not finite) while testing '{poisoned}'; the state before it is saved in ")
    edge = graph.parse_edge(poisoned)
    assert bool(state.kept.edges[edge]) and math.isnan(state.scores.edges[edge])
    assert [c.name for c in visiting_order(graph)][state.visited] == poisoned  # no candidate is moot here
    # the saved state is exact: resumed once the metric is fixed, it ends as a run that never failed
    clean = additive_metric(graph, 0.1)
    resumed = run_acdc(graph, clean, 0.1, batch_size=batch_size, progress=False, resume=state)
    straight = run_acdc(graph, clean, 0.1, batch_size=batch_size, progress=False)
    assert torch.equal(resumed.kept.edges, straight.kept.edges) and torch.equal(resumed.kept.head_inputs, straight.kept.head_inputs)
    assert torch.equal(resumed.scores.edges.nan_to_num(-1), straight.scores.edges.nan_to_num(-1))


def test_non_finite_metric_saves_the_same_state_whatever_the_batch_size(tmp_path):
    graph = build_graph(small_config(attn_only=False))
    states = [stop_on_nan(tmp_path, graph, "m0->a1.h0<q>", batch_size)[1] for batch_size in (1, 3, 32)]
    for state in states[1:]:
        assert (state.visited, state.cur, state.candidates_tested) == (states[0].visited, states[0].cur, states[0].candidates_tested)
        assert torch.equal(state.kept.edges, states[0].kept.edges) and torch.equal(state.kept.head_inputs, states[0].kept.head_inputs)


def test_non_finite_metric_of_a_discarded_speculative_circuit_does_not_stop_the_run():
    """Batch element i assumes candidates 1..i-1 removed; when one of them is kept, element i is
    discarded unread (the sequential run never evaluates that circuit), so its value cannot matter."""
    graph = build_graph(small_config(attn_only=False))
    order = torch.full(graph.edge_exists.shape, -1)
    for n, candidate in enumerate(visiting_order(graph)):
        if candidate.edge is not None:
            order[candidate.edge] = n
    costly = removal_costs(graph, 0.1) > 0.1
    plain, non_finite = additive_metric(graph, 0.1), []

    def infinite_past_a_kept_candidate(masks, start_layer):
        """inf for circuits that lack a costly edge and an edge visited after it: the speculative
        circuits beyond a kept candidate, and only those."""
        removed = ~masks.edges & graph.edge_exists
        latest = torch.where(removed, order, -1).flatten(1).max(dim=1).values
        earliest_costly = torch.where(removed & costly, order, 10**9).flatten(1).min(dim=1).values
        values = plain(masks, start_layer)
        values = torch.where(latest > earliest_costly, torch.tensor(math.inf, dtype=torch.float64), values)
        non_finite.append(int(values.isinf().sum()))
        return values

    batched = run_acdc(graph, infinite_past_a_kept_candidate, 0.1, batch_size=8, progress=False)
    sequential = run_acdc(graph, plain, 0.1, batch_size=1, progress=False)
    assert sum(non_finite) > 0  # the batched run did compute such circuits
    assert torch.equal(batched.kept.edges, sequential.kept.edges) and torch.equal(batched.kept.head_inputs, sequential.kept.head_inputs)


# --- circuit files are written whole or not at all -------------------------------------------------


def kill_in_the_middle_of_writing():
    """Make the next file write SIGKILL the process after half its bytes (call in the child only)."""
    original = os.fdopen

    class HalfThenDie:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            os.fsync(self.handle.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

    os.fdopen = lambda fd, mode="r", *args, **kwargs: HalfThenDie(original(fd, mode, *args, **kwargs))


WRITERS = {
    "circuit.json": lambda circuit, folder: save_circuit(circuit, folder / "circuit.json"),
    "circuit.dot": lambda circuit, folder: write_drawings(circuit, folder),  # its first file
}


@pytest.mark.parametrize("before", ["no file", "an older file"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_kill_while_writing_an_output_leaves_the_old_file_or_none(tmp_path, uninterrupted_circuit, name, before):
    folder = tmp_path / "run"
    folder.mkdir()
    old = b"an older file\n"
    if before == "an older file":
        (folder / name).write_bytes(old)

    def body():
        kill_in_the_middle_of_writing()
        WRITERS[name](uninterrupted_circuit, folder)

    in_child_until_killed(body)
    (partial,) = [p for p in folder.iterdir() if p.name != name]  # the killed write's temporary
    assert partial.name.startswith(f".{name}.") and partial.stat().st_size > 0
    if before == "no file":
        assert not (folder / name).exists()
    else:
        assert (folder / name).read_bytes() == old


# --- the command line -----------------------------------------------------------------------------

CLI_KILLED_AFTER_SAVES = """
import os, signal, sys
from acdc_engine.methods.checkpoint import Checkpointer
from acdc_engine.commands.discover import main
saves, original, limit = [], Checkpointer.save, int(sys.argv[1])
def save_then_die(self, state):
    original(self, state)
    saves.append(state.visited)
    if len(saves) == limit:
        os.kill(os.getpid(), signal.SIGKILL)
Checkpointer.save = save_then_die
sys.argv = ["acdc-discover", *sys.argv[2:]]
main()
"""


def test_cli_run_killed_and_resumed_writes_the_uninterrupted_circuit_into_its_folder(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""}
    args = ["checkpoint.every_decisions=5", "progress=false", "method.batch_size=4"]

    def cli(*command):
        return subprocess.run([sys.executable, *command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    killed = cli("-c", CLI_KILLED_AFTER_SAVES, "3", *args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (folder,) = [p.parent for p in (tmp_path / "outputs").rglob("checkpoint.safetensors")]
    assert not (folder / "circuit.json").exists()
    resumed = cli("-m", "acdc_engine.commands.discover", f"resume={folder}", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {folder / 'checkpoint.safetensors'}" in resumed.stdout
    assert sorted(p.parent for p in (tmp_path / "outputs").rglob("circuit.json")) == [folder]
    assert list((folder / ".hydra").glob("resumed-*/overrides.yaml"))  # the original record is kept beside it

    # the uninterrupted run, through the API the command line is a thin layer over
    model = load_model("toy-induction-2l")
    task_params = {"n_prompts": 32, "half_length": 8, "bos_token": 0, "seed": 0}  # conf/task/induction.yaml
    uninterrupted = discover(model, "induction", threshold=0.05, batch_size=4, task_params=task_params, model_name="toy-induction-2l", progress=False)
    resumed_file = json.loads((folder / "circuit.json").read_text())
    assert without_timing(resumed_file) == without_timing(circuit_to_dict(uninterrupted))
