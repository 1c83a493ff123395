"""Run folders of the Hydra commands: one run per folder, nothing written before the config is valid,
finished results never lost to a failed write.

- ``claim_run_folder(folder, outputs, resume)``: a lock per folder (``LOCK_NAME``, an ``flock`` on a
  file holding the holder's pid, host and start time) for as long as the run lasts; a second run
  into the folder fails at once naming the holder. A lock left by a dead process of this host is
  taken over; one naming another host is refused (this host cannot tell whether it still runs),
  saying which file to delete. A run that is not a resume is refused a folder that already holds
  a run (its ``.hydra`` record or one of the command's outputs), so it never overwrites one.
- ``write_run_record``: the run's ``.hydra/`` record (config.yaml, hydra.yaml, overrides.yaml, as
  Hydra writes them; a resumed run's in ``.hydra/resumed-<date>_<time>/``). The configs set
  ``hydra.output_subdir: null`` so that Hydra itself writes none: ``acdc-discover`` writes it once
  the run can start (model loaded, task built, self-check passed), and ``discard_run_record``
  removes it again when the run stops before saving anything, so that the same command can use
  the folder. A write that fails (a full disk) leaves no half record.
- ``FolderCreation`` (a Hydra callback) also refuses a multirun a sweep folder that already holds a
  sweep, before Hydra writes its ``multirun.yaml`` there, and at the sweep's end collects the jobs
  that failed (each left ``JOB_ERROR`` in its folder: ``record_job_error``) for ``failed_jobs``.
- ``FolderCreation`` (a Hydra callback) notes which folders Hydra is about to create for a run;
  ``remove_unused_folder`` removes them again when the run is rejected before writing anything.
- ``save_outputs``: writes a finished run's files; when that fails (a name taken by a folder, a full
  disk) it writes them into a fresh folder where it can (the temporary folder, the home folder, the
  working folder) and says where.
- ``quote_resume_override``: ``resume=FOLDER`` quoted for Hydra's parser when the folder's name holds
  characters the parser would read as syntax (a multirun job folder's ``=`` and ``,``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from acdc_engine.formats.atomic_files import atomic_write_bytes
from acdc_engine.core.errors import AcdcError

LOCK_NAME = ".acdc-run.lock"
RECORD = ".hydra"


# ----- the lock -------------------------------------------------------------------------------------


@contextmanager
def run_folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs (see the module docstring); AcdcError naming the
    holder when another run holds it."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path, folder)
    except OSError as error:  # a read-only or full filesystem, a file where the folder should be
        raise AcdcError(f"cannot use run folder {folder}: {_os_error(error)}") from None
    try:
        previous = _holder(fd)
        if previous:
            print(f"note: taking over {path} from {_describe(previous)}, which no longer runs", file=sys.stderr)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().astimezone().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except OSError as error:  # a full disk
            raise AcdcError(f"cannot use run folder {folder}: {_os_error(error)}") from None
        yield
    finally:
        Path(path).unlink(missing_ok=True)  # before unlocking: a run waiting on this file sees it is gone
        os.close(fd)


def _open_locked(path: Path, folder: Path) -> int:
    """An open descriptor of ``path`` holding its lock, the holder's record not yet replaced."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _try_flock(fd)
            holder = _holder(fd)
            if locked is False or (holder and not _stale(holder, locked)):
                raise AcdcError(_in_use(folder, path, holder, locked))
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed the file between our open and our lock: lock the new one


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another process holds the lock; None: the filesystem has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP, ENOSYS: e.g. a network filesystem mounted without locks
        return None
    return True


def _holder(fd: int) -> dict[str, Any] | None:
    raw = os.pread(fd, 4096, 0)
    if not raw.strip():
        return None
    try:
        holder = json.loads(raw)
    except ValueError:
        return {"unreadable": raw[:80].decode(errors="replace")}
    return holder if isinstance(holder, dict) else {"unreadable": str(holder)[:80]}


def _stale(holder: dict[str, Any], locked: bool | None) -> bool:
    """Whether the recorded holder is a dead process of this host. With the lock taken (``locked``)
    every holder of this host is dead (the kernel drops a dead process's lock); without flock, its
    pid must no longer run."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    return bool(locked) or not _pid_alive(holder["pid"])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "a run that has not yet recorded itself"
    if "unreadable" in holder:
        return f"an unreadable record {holder['unreadable']!r}"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"


def _in_use(folder: Path, path: Path, holder: dict[str, Any] | None, locked: bool | None) -> str:
    message = f"run folder {folder} is in use by another run ({_describe(holder)})"
    if locked is False:
        return message + "; wait for it to end, or choose another folder"
    return message + f", which this host cannot check; if that run has ended, delete {path}"


# ----- claiming a folder, and the run's record ---------------------------------------------------


@contextmanager
def claim_run_folder(folder: str | Path, outputs: tuple[str, ...], resume: bool = False) -> Iterator[Path]:
    """Lock ``folder`` for a run whose files are named ``outputs``; unless ``resume``, AcdcError when
    the folder already holds a run (its ``.hydra`` record or any of ``outputs``)."""
    folder = Path(folder)
    with run_folder_lock(folder):
        if not resume:
            held = [name for name in (RECORD, *outputs) if (folder / name).exists()]
            if held == [RECORD]:  # a run killed before it saved anything (an OOM kill, SIGKILL)
                raise AcdcError(
                    f"run folder {folder} holds the record of a run that saved no results ({RECORD}); a new run never "
                    f"writes over one: delete {folder / RECORD} to use the folder, or choose another (hydra.run.dir=...)"
                )
            if held:
                raise AcdcError(
                    f"run folder {folder} already holds a run ({', '.join(held)}); a new run never writes over one: "
                    "choose another folder (hydra.run.dir=...), or leave hydra.run.dir to its default"
                    + (f", or continue that run with resume={folder}" if "checkpoint.safetensors" in held else "")
                )
        yield folder


def write_run_record(folder: str | Path, cfg: DictConfig, resumed: bool = False) -> Path:
    """Write the run's record as Hydra writes it (config.yaml: ``cfg``; hydra.yaml: Hydra's config;
    overrides.yaml: the command-line overrides) into ``folder/.hydra``, or for a resumed run into
    ``folder/.hydra/resumed-<date>_<time>``; returns that folder."""
    from hydra.core.hydra_config import HydraConfig

    record = Path(folder) / RECORD
    if resumed:
        record = record / f"resumed-{datetime.now().strftime('%Y-%m-%d_%H-%M-%S-%f')}"
    hydra_cfg = HydraConfig.instance().cfg
    written: list[Path] = []
    try:
        for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
            written.append(atomic_write_bytes(record / name, OmegaConf.to_yaml(node).encode()))
    except OSError as error:  # a full disk: no half record is left to block the folder
        discard_run_record(record, written)
        raise AcdcError(f"cannot write the run's record into {record}: {_os_error(error)}") from None
    return record


@contextmanager
def run_record(folder: str | Path, cfg: DictConfig, outputs: tuple[str, ...]) -> Iterator[Path]:
    """``write_run_record`` for the block, which runs the command; if the block fails before any of
    ``outputs`` is in ``folder``, the record is discarded (``discard_run_record``), so that the same
    command can use the folder again."""
    record = write_run_record(folder, cfg)
    try:
        yield record
    except BaseException:
        if not any((Path(folder) / name).exists() for name in outputs):
            discard_run_record(record)
        raise


def discard_run_record(record: str | Path, files: list[Path] | None = None) -> None:
    """Remove a run record ``write_run_record`` wrote (``files``; None: the record folder's three
    files), and the record folder and ``.hydra`` above it when that leaves them empty: the folder is
    then as it was before the run, for a run that stopped before it saved anything."""
    record = Path(record)
    for path in files if files is not None else [record / name for name in ("config.yaml", "hydra.yaml", "overrides.yaml")]:
        Path(path).unlink(missing_ok=True)
    for folder in (record, record.parent) if record.parent.name == RECORD else (record,):
        try:
            folder.rmdir()  # fails, leaving it, unless empty
        except OSError:
            return


# ----- folders Hydra creates for a run that is then rejected -----------------------------------------

_created: dict[str, Path] = {}  # "top": the highest folder that Hydra is about to create for this run
_failed: list[str] = []  # the last sweep's failed jobs, "<job folder> (<error>)"
JOB_ERROR = "error.txt"
"""A multirun job that fails writes its one-line error here, in its job folder (``acdc-summary`` lists it)."""
SWEEP_RECORD = "multirun.yaml"


class Refused(BaseException):
    """A run refused by a Hydra callback: its ``args[0]`` is the AcdcError to report. A
    BaseException, because Hydra turns a callback's Exceptions into warnings and goes on."""


class FolderCreation(Callback):
    """Hydra callback: notes, before Hydra makes the run's folder, the highest folder it will create;
    refuses a multirun a sweep folder that holds a sweep already (before Hydra writes into it), and
    collects the sweep's failed jobs at its end (``failed_jobs``)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _note_new_folders(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        if (sweep / SWEEP_RECORD).exists():
            raise Refused(AcdcError(
                f"sweep folder {sweep} already holds a sweep ({SWEEP_RECORD}); a new sweep never writes over one: "
                "choose another folder (hydra.sweep.dir=...), or leave hydra.sweep.dir to its default"
            ))
        _failed.clear()
        _note_new_folders(sweep)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        errors = sorted(sweep.glob(f"*/{JOB_ERROR}"), key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p.parent.name)])
        _failed[:] = [f"{relative_to_cwd(path.parent)} ({_read_error(path)})" for path in errors]


def record_job_error(job_folder: str | Path, message: str) -> None:
    """Leave ``message`` in a failed multirun job's folder (``JOB_ERROR``), where the sweep's end and
    ``acdc-summary`` find it; a folder that cannot take it is left as it is."""
    try:
        atomic_write_bytes(Path(job_folder) / JOB_ERROR, (message + "\n").encode())
    except OSError:
        pass


def failed_jobs() -> list[str]:
    """The failed jobs of the sweep that ended last in this process, each "<job folder> (<error>)";
    forgotten once read, so that a later command in the same process does not report them again."""
    failed = list(_failed)
    _failed.clear()
    return failed


def _read_error(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError as error:
        return f"its {JOB_ERROR} cannot be read: {error.strerror}"


def _note_new_folders(folder: Path) -> None:
    folder = Path(os.path.abspath(folder))
    _created.pop("top", None)
    for candidate in (*reversed(folder.parents), folder):
        if not candidate.exists():
            _created["top"] = candidate
            return


def remove_unused_folder(folder: str | Path, job_folder: bool = False) -> None:
    """Remove ``folder`` if it is empty and was made for this run, with the empty folders above it
    made for it too (noted by ``FolderCreation``). ``job_folder``: a multirun job's own folder,
    made for this job by Hydra."""
    folder = Path(os.path.abspath(folder))
    top = _created.get("top")
    made = [p for p in (folder, *folder.parents) if top is not None and p.is_relative_to(top)]
    if job_folder and folder not in made:
        made.insert(0, folder)
    for path in made:
        try:
            path.rmdir()  # fails, leaving it, unless empty
        except OSError:
            return


# ----- writing a finished run's files --------------------------------------------------------------


@dataclass(frozen=True)
class Saved:
    """Where a run's files went: ``paths``; ``problem``: None, or why they are not in the run folder."""

    paths: list[Path]
    problem: str | None = None


def save_outputs(folder: str | Path, write: Callable[[Path], list[Path]], what: str = "the results") -> Saved:
    """``write(folder)``, returning the paths it wrote. If it fails with OSError, ``write`` runs
    again on a new folder in the first place that takes it (the temporary folder, the home folder,
    the working folder), and ``problem`` says what failed and where ``what`` went instead;
    AcdcError if no place takes them."""
    folder = Path(folder)
    try:
        return Saved(write(folder))
    except OSError as error:
        failure = _os_error(error)
    tried = []
    for place in (tempfile.gettempdir(), Path.home(), Path.cwd()):
        try:
            rescue = Path(tempfile.mkdtemp(prefix=f"acdc-rescued-{folder.name}-", dir=place))
            paths = write(rescue)
        except OSError as error:
            tried.append(f"{place} ({_os_error(error)})")
            continue
        return Saved(paths, f"cannot write {what} into {folder} ({failure}); they were saved to {rescue} instead")
    raise AcdcError(f"cannot write {what} into {folder} ({failure}), nor into a new folder in " + ", ".join(tried))


def _os_error(error: OSError) -> str:
    where = f": {error.filename}" if error.filename else ""
    return f"{error.strerror or error}{where}"


# ----- the command line ----------------------------------------------------------------------------

_PLAIN_VALUE = re.compile(r"[\w/\-+.$%*@?|:~]*")  # what Hydra's override parser reads as one plain string


def quote_resume_override(arguments: list[str]) -> list[str]:
    """``arguments`` with a ``resume=FOLDER`` whose folder name Hydra would parse as syntax (``=``,
    ``,``, brackets, spaces) quoted, so that ``resume=`` takes any folder as it is written."""
    quoted = []
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if equals and key.lstrip("+") == "resume" and value[:1] not in ("'", '"') and not _PLAIN_VALUE.fullmatch(value):
            quote = '"' if "'" in value else "'"
            argument = f"{key}={quote}{value}{quote}"
        quoted.append(argument)
    return quoted


def relative_to_cwd(path: str | Path) -> str:
    """``path`` relative to the working folder when it lies inside it, else as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
