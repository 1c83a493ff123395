"""Checkpoints: a running method's state on disk (ACDC's, a learned-mask run's), tied to its inputs
by a fingerprint.

A checkpoint is one safetensors file (no pickle), written atomically (temporary name, then rename),
so a kill at any moment leaves the previous checkpoint or the new one, never a mix. ACDC's:

    tensors   edge_kept [S, R] bool, head_input_kept [L, H, 3] bool,
              edge_scores [S, R] float64, head_input_scores [L, H, 3] float64 (NaN: not tested),
              metrics [2] float64: (cur, metric_full), the exact values later decisions compare with,
              cur_source_edges, cur_source_heads (only when ``cur`` came from a batch): its circuit,
              hint_positions [n] int64, hint_kept [n] bool (only when there are hints,
              ``AcdcState.hints``): visiting-order indices and their hinted decisions (a file
              without them resumes with none: the same circuit, perhaps after other passes)
    metadata  format "acdc-engine/checkpoint", version "1",
              state: JSON {position (``AcdcState.visited``), forward_passes, candidates_tested, window,
                           batch_size, seconds, cur_source_start_layer (null when cur came from a
                           lone evaluation)},
              fingerprint: JSON {config: {dotted key: value}, model: {architecture, weights, device},
                                 data: {clean, corrupted, positions, answers, wrong_answers}}

A learned-mask run's (``edge-pruning``, ``ugs``, ``subnetwork-probing``: a ``MaskTrainingState``,
whose tensors ``acdc_engine.methods.mask_training``'s docstring lists) has the metadata format
"acdc-engine/mask-checkpoint", version "1", state: JSON {method, step, optimizers, seconds}, and the
same fingerprint.

``seconds`` is the run time spent up to the save, so that a resumed run reports the time of all the
work its circuit is built from (work lost to the kill after the last save is not counted).

The fingerprint that ties a checkpoint to its run: ``acdc_engine.methods.fingerprint``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.core.errors import AcdcError
from acdc_engine.formats.atomic_files import atomic_write_bytes
from acdc_engine.methods.acdc import AcdcState
from acdc_engine.methods.fingerprint import Fingerprint
from acdc_engine.methods.mask_training import MaskTrainingState

FORMAT = "acdc-engine/checkpoint"
VERSION = "1"
MASK_FORMAT = "acdc-engine/mask-checkpoint"
MASK_VERSION = "1"
FILE_NAME = "checkpoint.safetensors"
"""The checkpoint's name in a command-line run folder."""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by ``signum`` (SIGTERM: slurm preemption, ``timeout``, ``kill``);
    raised by ``stop_on_signal`` at once, or, during a run with a ``Checkpointer``, right after that
    run has saved its state (``Checkpointer.save``)."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message)
        self.signum = signum


_running: list[Checkpointer] = []  # the Checkpointer of the run going on in this process, if any


def stop_on_signal(signum: int, frame: Any = None) -> None:
    """A signal handler (``signal.signal(signal.SIGTERM, stop_on_signal)``): a run whose
    Checkpointer is ``running`` saves its state at its next step (ACDC: its next batch of
    candidates; learned masks: the next training step) and then stops with ``Terminated``; with
    no such run, ``Terminated`` is raised at once."""
    if not _running:
        raise Terminated(signum)
    _running[-1].stop_signal = signum


class Checkpointer:
    """Saves a run's state (``AcdcState``, ``MaskTrainingState``) to ``path`` when a save is due:
    after ``every_decisions`` more steps (ACDC: candidates of the visiting order visited; learned
    masks: training steps), or ``every_seconds`` seconds after the last save, whichever comes first
    (None turns that trigger off). ``run_acdc`` and ``train_masks`` also save at the end and before
    stopping on a non-finite metric or loss.

    visited: where the run starts (a resumed state's ``visited``, else 0).
    started: ``time.perf_counter()`` when the run started; seconds_before: run time spent before
        this process (from the resumed checkpoint). Their sum is the ``seconds`` a save records.
    """

    def __init__(
        self,
        path: str | Path,
        fingerprint: Fingerprint,
        every_decisions: int | None = None,
        every_seconds: float | None = 60.0,
        visited: int = 0,
        started: float | None = None,
        seconds_before: float = 0.0,
    ) -> None:
        if every_decisions is not None and every_decisions < 1:
            raise AcdcError(f"checkpoint.every_decisions must be at least 1 or null, got {every_decisions}")
        if every_seconds is not None and not (math.isfinite(every_seconds) and every_seconds > 0):
            raise AcdcError(f"checkpoint.every_seconds must be a positive number or null, got {every_seconds}")
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.every_decisions = every_decisions
        self.every_seconds = every_seconds
        self.started = time.perf_counter() if started is None else started
        self.seconds_before = seconds_before
        self._last_visited = visited
        self._last_time = time.perf_counter()
        self._failures: set[str] = set()  # causes of failed saves already warned about
        self.stop_signal: int | None = None  # set by stop_on_signal: save at the next step, then stop

    @contextmanager
    def running(self) -> Iterator[None]:
        """While the block runs, ``stop_on_signal`` asks this Checkpointer's run to save and stop."""
        _running.append(self)
        try:
            yield
        finally:
            _running.remove(self)

    def due(self, visited: int) -> bool:
        """Whether the state after ``visited`` steps should be saved now
        (always, once a stop was asked for by ``stop_on_signal``)."""
        if self.stop_signal is not None:
            return True
        if self.every_decisions is not None and visited - self._last_visited >= self.every_decisions:
            return True
        return self.every_seconds is not None and time.perf_counter() - self._last_time >= self.every_seconds

    def save(self, state: AcdcState | MaskTrainingState) -> None:
        """Write ``state`` atomically to ``path``. A write that fails (a full disk, a folder gone)
        warns once per cause and leaves the previous checkpoint; the run goes on, and tries again
        at the next save that is due. Once a stop was asked for (``stop_on_signal``), raises
        ``Terminated`` after the write."""
        seconds = self.seconds_before + time.perf_counter() - self.started
        try:
            atomic_write_bytes(self.path, checkpoint_bytes(state, self.fingerprint, seconds))
        except OSError as error:
            cause = f"{error.strerror or error}"
            if cause not in self._failures:
                self._failures.add(cause)
                warnings.warn(
                    f"cannot save the checkpoint {self.path} ({cause}); the run goes on, and a resume would "
                    "start from the last checkpoint saved",
                    stacklevel=2,
                )
        self._last_visited, self._last_time = state.visited, time.perf_counter()
        if self.stop_signal is not None:
            raise Terminated(self.stop_signal)


def checkpoint_bytes(state: AcdcState | MaskTrainingState, fingerprint: Fingerprint, seconds: float) -> bytes:
    """The checkpoint file's contents (see the module docstring)."""
    from safetensors.torch import save

    if isinstance(state, MaskTrainingState):
        counters = {"method": state.method, "step": state.step, "optimizers": len(state.optimizers), "seconds": seconds}
        metadata = {"format": MASK_FORMAT, "version": MASK_VERSION, "state": json.dumps(counters)}
        return save(state.to_tensors(), metadata={**metadata, "fingerprint": fingerprint.to_json()})
    tensors = {
        "edge_kept": state.kept.edges.detach().to("cpu").contiguous(),
        "head_input_kept": state.kept.head_inputs.detach().to("cpu").contiguous(),
        "edge_scores": state.scores.edges.detach().to("cpu", torch.float64).contiguous(),
        "head_input_scores": state.scores.head_inputs.detach().to("cpu", torch.float64).contiguous(),
        "metrics": torch.tensor([state.cur, state.metric_full], dtype=torch.float64),
    }
    if state.cur_source is not None:
        tensors["cur_source_edges"] = state.cur_source[0].edges.detach().to("cpu").clone()  # may share the circuit's memory
        tensors["cur_source_heads"] = state.cur_source[0].head_inputs.detach().to("cpu").clone()
    if state.hints:
        positions = sorted(state.hints)
        tensors["hint_positions"] = torch.tensor(positions, dtype=torch.int64)
        tensors["hint_kept"] = torch.tensor([state.hints[k] for k in positions], dtype=torch.bool)
    counters = {
        "position": state.visited,  # the file's name for it since version 1
        "forward_passes": state.forward_passes,
        "candidates_tested": state.candidates_tested,
        "window": state.window,
        "batch_size": state.batch_size,
        "seconds": seconds,
        "cur_source_start_layer": None if state.cur_source is None else state.cur_source[1],
    }
    metadata = {"format": FORMAT, "version": VERSION, "state": json.dumps(counters), "fingerprint": fingerprint.to_json()}
    return save(tensors, metadata=metadata)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back: the state, its fingerprint, and the run time spent up to it."""

    state: AcdcState | MaskTrainingState
    fingerprint: Fingerprint
    seconds: float


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint file (ACDC's or a learned-mask run's); AcdcError naming the file if it is
    missing or malformed."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise AcdcError(f"no checkpoint file {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise AcdcError(f"{path}: not a readable checkpoint file ({error})") from None
    kind = (metadata.get("format"), metadata.get("version"))
    if kind not in ((FORMAT, VERSION), (MASK_FORMAT, MASK_VERSION)):
        raise AcdcError(f"{path}: not an {FORMAT} version {VERSION} file (nor an {MASK_FORMAT} version {MASK_VERSION} one)")
    try:
        counters = json.loads(metadata["state"])
        saved = json.loads(metadata["fingerprint"])
        state = _acdc_state(tensors, counters) if kind[0] == FORMAT else _mask_state(tensors, counters)
        saved_fingerprint = Fingerprint(config=saved["config"], model=saved["model"], data=saved["data"])
        seconds = float(counters["seconds"])
    except (KeyError, TypeError, ValueError, IndexError, json.JSONDecodeError) as error:
        raise AcdcError(f"{path}: malformed checkpoint ({type(error).__name__}: {error})") from None
    return Checkpoint(state=state, fingerprint=saved_fingerprint, seconds=seconds)


def _acdc_state(tensors: dict[str, torch.Tensor], counters: dict[str, Any]) -> AcdcState:
    cur, metric_full = tensors["metrics"].tolist()
    return AcdcState(
        visited=int(counters["position"]),
        kept=CircuitMask(tensors["edge_kept"].bool(), tensors["head_input_kept"].bool()),
        scores=Scores(tensors["edge_scores"], tensors["head_input_scores"]),
        cur=cur,
        metric_full=metric_full,
        forward_passes=int(counters["forward_passes"]),
        candidates_tested=int(counters["candidates_tested"]),
        window=int(counters["window"]),
        batch_size=int(counters["batch_size"]),
        cur_source=_cur_source(tensors, counters.get("cur_source_start_layer")),
        hints=_hints(tensors),
    )


def _mask_state(tensors: dict[str, torch.Tensor], counters: dict[str, Any]) -> MaskTrainingState:
    return MaskTrainingState.from_tensors(str(counters["method"]), int(counters["step"]), int(counters["optimizers"]), tensors)


def _cur_source(tensors: dict[str, torch.Tensor], start_layer: int | None) -> tuple[CircuitMask, int] | None:
    if start_layer is None:
        return None
    return CircuitMask(tensors["cur_source_edges"].bool(), tensors["cur_source_heads"].bool()), int(start_layer)


def _hints(tensors: dict[str, torch.Tensor]) -> dict[int, bool]:
    if "hint_positions" not in tensors:
        return {}
    positions, kept = tensors["hint_positions"].tolist(), tensors["hint_kept"].tolist()
    if len(positions) != len(kept):
        raise ValueError("hint_positions and hint_kept differ in length")
    return {int(k): bool(v) for k, v in zip(positions, kept)}


def resume_state(path: str | Path, now: Fingerprint) -> Checkpoint:
    """The checkpoint at ``path`` if it was made from the same inputs as ``now``; else AcdcError
    saying what differs."""
    checkpoint = load_checkpoint(path)
    differences = checkpoint.fingerprint.differences(now)
    if differences:
        raise AcdcError(f"cannot resume from {path}: " + "; ".join(differences))
    return checkpoint
