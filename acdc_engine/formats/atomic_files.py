"""Crash-safe file writing: a file is replaced whole or not at all, whatever kills the writer.

``atomic_write_bytes`` writes to a temporary file beside the target, flushes it to disk and renames
it into place, so a reader (or a resumed run) sees the old file or the new one, never a mix. A
writer killed mid-write leaves its temporary file behind; the next write into that folder removes
it (``remove_stale_temporaries``). Depends on nothing else in the package.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
from pathlib import Path


# A temporary file of atomic_write_bytes: .<name>.<host>-<pid>.<random>.tmp (host: a digest of the
# machine's name, so that a folder shared between machines never has a live writer's file removed).
_TEMP_NAME = re.compile(r"\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[a-z0-9_]+\.tmp")


def _host_tag() -> str:
    return hashlib.blake2s(socket.gethostname().encode(), digest_size=4).hexdigest()


def _process_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (alive, a zombie, or another user's)."""
    try:
        os.kill(pid, 0)  # signal 0: only the existence and permission checks
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):  # not a pid this system can have
        return False
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that ``atomic_write_bytes`` left in ``folder`` when its writer died
    mid-write (killed, or out of power): those made on this machine by a process that no longer
    exists. Another machine's, or a live writer's, are kept. Returns the paths removed."""
    host, removed = _host_tag(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no folder (yet), or one we cannot list: nothing of ours to remove
        return removed
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match and match["host"] == host and not _process_exists(int(match["pid"])) and entry.is_file(follow_symlinks=False):
            try:
                Path(entry.path).unlink(missing_ok=True)
            except OSError:  # another user's, say: cleaning up is best effort and never fails a write
                continue
            removed.append(Path(entry.path))
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place. The temporary
    file's name says whose it is (``_TEMP_NAME``), and every write first removes the stale ones of
    writers that died in the same folder (``remove_stale_temporaries``), so a run or resumed run
    that writes into a run folder clears what a killed one left there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    prefix = f".{path.name}.{_host_tag()}-{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it the usual permissions
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
