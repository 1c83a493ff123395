"""Hydra entry point ``acdc-discover``: a thin layer over ``acdc_engine.discover``.

    acdc-discover                                   # toy-induction-2l / induction / exact ACDC
    acdc-discover method.threshold=0.1 method.ablation=zero
    acdc-discover -m method.threshold=0.01,0.03,0.1 # one run folder per threshold
    acdc-discover resume=outputs/<date>/<time>      # continue a killed ACDC run (same overrides)

Each run writes circuit.json, circuit.html (the interactive view), circuit.dot (and .svg/.png when a
renderer exists and the drawing's size allows, ``acdc_engine.formats.drawing``) into its Hydra run folder,
``outputs/<date>/<time>/`` by default (the time to the microsecond); an ACDC run also keeps its
state there (checkpoint.safetensors, see ``acdc_engine.methods.checkpoint``). A resumed run writes into the
folder it resumes, and its record goes to ``.hydra/resumed-<date>_<time>/`` there. One run per
folder, nothing written before the config is valid, and finished files saved elsewhere when the
folder cannot take them: ``acdc_engine.commands.run_folder``. Ctrl-C prints the checkpoint and the command
that continues the run; SIGTERM (slurm preemption, ``timeout``) saves an ACDC run's state first.
In a multirun a failed job never stops the others; the sweep ends listing the failed ones.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from acdc_engine.methods.checkpoint import FILE_NAME as CHECKPOINT_FILE
from acdc_engine.methods.checkpoint import Terminated, stop_on_signal
from acdc_engine.commands.config_schema import register_configs
from acdc_engine.commands.hydra_help import CONF_DIR, print_help, wants_help
from acdc_engine.core.errors import AcdcError
from acdc_engine.commands.run_folder import (
    claim_run_folder,
    discard_run_record,
    failed_jobs,
    quote_resume_override,
    record_job_error,
    Refused,
    relative_to_cwd,
    remove_unused_folder,
    save_outputs,
    write_run_record,
)
from acdc_engine.formats.circuit_file import save_circuit

if TYPE_CHECKING:
    from acdc_engine.architecture import ModelSpec
    from acdc_engine.core.task_data import TaskData


OUTPUTS = ("circuit.json", "circuit.html", "circuit.dot", "circuit.svg", "circuit.png", CHECKPOINT_FILE)
"""The files a run writes into its folder; a new run is refused a folder that holds any of them."""


def run(cfg: DictConfig) -> Path:
    """Run discovery as ``cfg`` says and write the circuit files; returns the run folder.

    Nothing is written before ``cfg`` passes validation and the run folder is claimed
    (``acdc_engine.commands.run_folder``): locked, and holding no other run unless ``resume=`` names it."""
    from acdc_engine.commands.validation import validate_config

    validate_config(cfg)  # ranges and rules across fields, before the slow model load
    out_dir = Path(HydraConfig.get().runtime.output_dir)  # under resume=, the resumed run's folder
    _check_resume(cfg, out_dir)
    resumed = cfg.resume is not None
    record: list[Path] = []  # the run record, once written

    def started() -> None:  # the model, task and self-check are ready: the run starts
        record.append(write_run_record(out_dir, cfg, resumed=resumed))

    with claim_run_folder(out_dir, OUTPUTS, resume=resumed), _terminate_gracefully():
        try:
            return _discover_into(cfg, out_dir, started)
        except BaseException as failure:
            if record and not any((out_dir / name).exists() for name in OUTPUTS):
                discard_run_record(record[0])  # it saved nothing: the folder is as it was, for the same command
            if isinstance(failure, Terminated):
                raise Terminated(failure.signum, _how_to_resume(cfg, out_dir)) from None
            if isinstance(failure, KeyboardInterrupt):
                raise KeyboardInterrupt(_how_to_resume(cfg, out_dir)) from None
            raise


@contextmanager
def _terminate_gracefully() -> Iterator[None]:
    """While the block runs, SIGTERM (slurm preemption, ``timeout``) stops the run as Ctrl-C does,
    after a running ACDC has saved its state (``acdc_engine.methods.checkpoint.stop_on_signal``)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    previous = signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_resume(cfg: DictConfig, out_dir: Path) -> None:
    """AcdcError unless ``resume=`` is unset, or names an ACDC run's folder with a checkpoint, for
    an ACDC method, and is the folder this run writes into."""
    from acdc_engine.methods import METHODS, method_spec

    if cfg.resume is None:
        return
    checkpointing = [name for name, spec in METHODS.items() if spec.checkpoints]
    if not method_spec(cfg.method.name).checkpoints:
        raise AcdcError(
            f"resume={cfg.resume}: method {cfg.method.name} keeps no checkpoint, so it has no run to continue "
            f"(resume= continues a run of a method that checkpoints: method={' or method='.join(checkpointing)}); run it again without resume="
        )
    checkpoint = Path(cfg.resume) / CHECKPOINT_FILE
    if not checkpoint.is_file():
        raise AcdcError(f"resume={cfg.resume}: no checkpoint {checkpoint} to resume")
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        raise AcdcError(f"resume={cfg.resume} continues one run in its own folder; it cannot be part of a multirun (drop -m)")
    if not out_dir.samefile(cfg.resume):
        raise AcdcError(
            f"resume={cfg.resume} writes into the folder it resumes, but hydra.run.dir names another ({out_dir}); "
            "drop hydra.run.dir"
        )


def _discover_into(cfg: DictConfig, out_dir: Path, started: Callable[[], None]) -> Path:
    from acdc_engine.api import discover
    from acdc_engine.formats.drawing import write_drawings
    from acdc_engine.resolve import resolve
    from acdc_engine.methods import RUN_KEYS, method_spec
    from acdc_engine.models import load_model
    from acdc_engine.viewer import write_circuit_html

    spec = method_spec(cfg.method.name)
    method_params = {k: v for k, v in OmegaConf.to_container(cfg.method, resolve=True).items() if k not in RUN_KEYS}
    torch.manual_seed(cfg.seed)
    checkpoint = (out_dir if cfg.resume is None else Path(cfg.resume)) / CHECKPOINT_FILE
    checkpointing = {}
    if spec.checkpoints:
        checkpointing = dict(
            checkpoint=checkpoint,
            checkpoint_every=cfg.checkpoint.every_decisions,
            checkpoint_seconds=cfg.checkpoint.every_seconds,
            run_config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        )
    if cfg.resume is not None:
        print(f"resuming from {checkpoint}")
    model_cfg = OmegaConf.to_container(cfg.model.config, resolve=True) if cfg.model.config else None
    model = load_model(
        cfg.model.name, device=cfg.device.value, dtype=cfg.model.dtype.value, config=model_cfg, path=cfg.model.path
    )
    task_params = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "name"}
    model_name = cfg.model.path if cfg.model.name == "local" else cfg.model.name
    resolved = resolve(
        model, cfg.task.name, task_params, model_name=model_name, split_input=cfg.model.split_input, memory=spec.memory
    )
    circuit = discover(
        resolved.model,
        resolved.task,
        method=spec.name,
        metric=cfg.method.metric.value if cfg.method.metric is not None else None,
        ablation=cfg.method.ablation.value,
        split_input=cfg.model.split_input,
        permute_corrupted_positions=cfg.model.permute_corrupted_positions,
        **method_params,
        **checkpointing,
        model_name=model_name,
        seed=cfg.seed, progress=cfg.progress, threads=cfg.threads, started=started,
    )
    notes: list[str] = []
    attention = first_prompt_attention(resolved.model, resolved.task)

    def write_all(folder: Path) -> list[Path]:
        written = [save_circuit(circuit, folder / "circuit.json"), *write_drawings(circuit, folder, notes=notes)]
        return [*written, write_circuit_html(circuit, folder / "circuit.html", attention=attention)]  # the interactive view

    saved = save_outputs(out_dir, write_all, "the circuit files")
    m = circuit.metric
    print(f"circuit files: {saved.paths[0]}, " + ", ".join(p.name for p in saved.paths[1:]))
    for note in notes:
        print(f"note: {note}")
    print(f"edges kept: {circuit.n_edges} / {circuit.n_edges_total} ({spec.selection(spec.parse(method_params))})")
    print(f"{m['name']}: circuit {m['circuit']:.6g} | full model {m['full']:.6g} | empty circuit {m['empty']:.6g}")
    print(f"seconds: {circuit.run['seconds']:.2f}, forward passes: {circuit.run['forward_passes']}")
    if saved.problem:
        raise AcdcError(saved.problem)
    return out_dir


LARGEST_ATTENTION = 1_000_000
"""Attention weights (layers x heads x positions²) above which a run's page shows no patterns (~8 MB of page)."""


def first_prompt_attention(spec: ModelSpec, task: TaskData) -> dict[str, Any] | None:
    """Every head's attention pattern on the task's first clean prompt (its real tokens), for the run's page
    (``acdc_engine.viewer.attention_block``): one plain forward pass of ``spec`` caching each
    block's ``attn.hook_pattern``; tokens as the model's tokenizer decodes them, else the token ids.
    None when the patterns would exceed ``LARGEST_ATTENTION``."""
    from acdc_engine.viewer import attention_block

    tokens = task.clean[:1, : int(task.lengths[0])]
    n_pos = tokens.shape[1]
    if spec.cfg.n_layers * spec.cfg.n_heads * n_pos * n_pos > LARGEST_ATTENTION:
        return None
    with torch.no_grad():
        _, cache = spec.run_with_cache(tokens.to(spec.cfg.device), names_filter=lambda name: name.endswith("attn.hook_pattern"))
    patterns = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(spec.cfg.n_layers)])
    ids = tokens[0].tolist()
    words = [spec.tokenizer.decode([i]) for i in ids] if spec.tokenizer is not None else [str(i) for i in ids]
    return attention_block(patterns, words)


def _how_to_resume(cfg: DictConfig, out_dir: Path) -> str:
    """What an interrupted run leaves: its checkpoint and the command that continues it, or why none."""
    from acdc_engine.methods import method_spec

    if not method_spec(cfg.method.name).checkpoints:
        return f"method {cfg.method.name} keeps no checkpoint; run it again to finish"
    checkpoint = out_dir / CHECKPOINT_FILE
    if not checkpoint.is_file():
        return "no checkpoint was saved yet, so there is nothing to resume; run the same command again"
    folder = relative_to_cwd(out_dir)
    overrides = [o for o in HydraConfig.get().overrides.task if o.partition("=")[0].lstrip("+~") != "resume"]
    command = shlex.join(["acdc-discover", f"resume={folder}", *overrides])
    return f"the last checkpoint is {relative_to_cwd(checkpoint)}; continue the run with: {command}"


RAISED_IN_RUN = "_acdc_raised_in_run"  # marks an exception from a run (a bug), not from Hydra's composition


def hydra_command(prog: str, run: Callable[[DictConfig], Any]) -> Callable[[DictConfig], None]:
    """``run`` as a Hydra task function: an AcdcError prints one line under ``prog`` and exits 2,
    removing the run's folder if the run left it empty (``remove_unused_folder``); in a multirun the
    job instead leaves its error in its folder (``record_job_error``) and returns, so that the
    sweep's other jobs run (``run_hydra_command`` lists the failed ones at the end). Ctrl-C prints
    one line (with what the interrupted ``run`` says, the message of its KeyboardInterrupt) and
    exits 130, SIGTERM 143; any other exception is marked as raised by the run (a bug, to keep its
    traceback)."""

    def task(cfg: DictConfig) -> None:
        try:
            run(cfg)
        except AcdcError as error:
            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode == RunMode.MULTIRUN:
                record_job_error(hydra_cfg.runtime.output_dir, str(error))
                print(f"{prog}: error in job {hydra_cfg.job.num}: {error}", file=sys.stderr)
                return
            remove_unused_folder(hydra_cfg.runtime.output_dir)
            print(f"{prog}: error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as interrupt:
            hydra_cfg = HydraConfig.get()
            remove_unused_folder(hydra_cfg.runtime.output_dir, job_folder=hydra_cfg.mode == RunMode.MULTIRUN)
            _interrupted(prog, interrupt)
        except Exception as error:
            setattr(error, RAISED_IN_RUN, True)  # an attribute survives the trip back from a launcher's worker process
            raise

    return task


def _interrupted(prog: str, interrupt: KeyboardInterrupt) -> None:
    said = f"; {interrupt}" if str(interrupt) else ""
    if isinstance(interrupt, Terminated):
        print(f"{prog}: terminated by {signal.Signals(interrupt.signum).name}{said}", file=sys.stderr)
        sys.exit(128 + interrupt.signum)
    print(f"{prog}: interrupted{said}", file=sys.stderr)
    sys.exit(130)


def _config_error(error: Exception) -> str:
    """One line for an error Hydra raised while reading the command line and composing the config:
    an unknown choice names its group and the group's choices, an unknown key its group and the
    group's keys; other Hydra and OmegaConf errors keep their message on one line. Some overrides,
    such as setting a key below a null node, surface as plain AssertionError/ValueError from Hydra."""
    if isinstance(error, MissingConfigException) and error.options and "/" in (error.missing_cfg_file or ""):
        group, choice = error.missing_cfg_file.rsplit("/", 1)
        return f"unknown choice {group}={choice}; {group} is one of: {', '.join(error.options)}"
    cause = error.__cause__ if isinstance(error, CompactHydraException) else error
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and isinstance(cause.parent_node, DictConfig) and cause.full_key:
        parent = cause.full_key.rpartition(".")[0]
        keys = ", ".join(str(key) for key in cause.parent_node.keys())
        return f"unknown key {cause.full_key}; {parent or 'the config'} has {keys}"
    if isinstance(error, (CompactHydraException, OmegaConfBaseException)):
        text = str(error) if cause is error or not isinstance(cause, OmegaConfBaseException) else f"{error}: {cause.msg}"
        return _one_line(text)
    return (
        f"cannot compose the config from the command line ({type(error).__name__}: {_one_line(str(error))}); "
        "set HYDRA_FULL_ERROR=1 for Hydra's traceback"
    )


def _one_line(text: str) -> str:
    """``text``'s lines joined into one, omitting OmegaConf's ``full_key:``/``object_type=`` detail lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(line for line in lines if not line.startswith(("full_key:", "object_type=")))


LAUNCHER_EXTRAS = {"local": ("hydra_plugins.hydra_joblib_launcher", "parallel"), "slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm")}
"""hydra/launcher=NAME: the launcher plugin it needs and the package extra that installs it."""


def require_extra(module: str, extra: str, needed_for: str) -> None:
    """AcdcError naming the extra to install when ``module``, which an optional extra provides, is missing."""
    if importlib.util.find_spec(module) is None:
        raise AcdcError(f"{needed_for} needs a package not installed: pip install 'acdc-engine[{extra}]'")


def check_launcher(overrides: list[str]) -> None:
    """AcdcError naming the extra when the command line picks a launcher whose plugin is not installed."""
    for override in overrides:
        name = override.split("=", 1)[1] if override.startswith("hydra/launcher=") else None
        if name in LAUNCHER_EXTRAS:
            require_extra(*LAUNCHER_EXTRAS[name], needed_for=f"hydra/launcher={name}")


def run_hydra_command(prog: str, config_name: str, run: Callable[[DictConfig], Any]) -> None:
    """Run ``run`` under Hydra with ``conf/<config_name>.yaml``. ``--help``/``-h`` prints
    ``hydra_help``'s text instead. Errors in the command line or the config composition print one
    line naming the key and exit 2 (``HYDRA_FULL_ERROR=1`` restores Hydra's own reports); errors in
    ``run`` as ``hydra_command`` says."""
    if not CONF_DIR.is_dir():
        sys.exit(f"{prog}: error: config folder {CONF_DIR} not found: the package is installed without its data files")
    if wants_help(sys.argv[1:]):
        print_help(prog, config_name, sys.argv[1:])
        return
    try:
        check_launcher(sys.argv[1:])
    except AcdcError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    entry = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(
        hydra_command(prog, run)
    )
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for Hydra's own reports
        entry()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors here instead of printing tracebacks
    try:
        entry()
    except KeyboardInterrupt as interrupt:  # while Hydra composes or launches
        _interrupted(prog, interrupt)
    except Refused as refused:  # by the run folder callback: a sweep folder that holds a sweep
        print(f"{prog}: error: {refused.args[0]}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # Hydra creating a run or sweep folder (a read-only or full disk), or a choice it cannot find
        if isinstance(error, MissingConfigException):  # an OSError to Hydra: a config error here
            message = _config_error(error)
        else:
            message = f"cannot create {error.filename or 'the run folder'}: {error.strerror or error}"
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:
        if getattr(error, RAISED_IN_RUN, False):  # not a config error: a bug, keep its traceback
            raise
        print(f"{prog}: error: {_config_error(error)}", file=sys.stderr)
        sys.exit(2)
    failed = failed_jobs()
    if failed:
        print(f"{prog}: error: {len(failed)} job(s) of the sweep failed: {'; '.join(failed)}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    register_configs()
    sys.argv[1:] = quote_resume_override(sys.argv[1:])  # resume= takes a multirun job folder (its '=') as written
    run_hydra_command("acdc-discover", "config", run)


if __name__ == "__main__":
    main()
