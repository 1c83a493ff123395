"""The body every plain (non-Hydra) command shares: one line on success, one ``error:`` line otherwise."""

from __future__ import annotations

import sys
from typing import Callable

from acdc_engine.core.errors import AcdcError


def run_command(prog: str, action: Callable[[], str]) -> int:
    """A plain command's body: ``action()`` returns the line to print on success (exit code 0); an
    AcdcError, or an OSError from writing, prints one line ``{prog}: error: ...`` to stderr instead
    (exit code 2)."""
    try:
        message = action()
    except AcdcError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        where = error.filename2 or error.filename or "a file"
        print(f"{prog}: error: cannot write {where}: {error.strerror}", file=sys.stderr)
        return 2
    print(message)
    return 0
