"""Progress bars: on by default in a terminal, never in logs or under CI.

Every long loop of the engine (ACDC's candidates, EAP-IG's steps, a threshold sweep's thresholds,
``acdc-evaluate``'s methods) draws its bar through ``progress_bar``, so one rule, ``show_progress``,
decides for all of them: a bar is drawn when the caller asks for one (``progress=True``, the
default of ``discover`` and of both Hydra commands), stderr is a terminal, and the environment
variable ``CI`` is unset or empty. Bars do not stay on screen when done (``leave=False``); nested
bars stack.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable

from tqdm.auto import tqdm


def show_progress(progress: bool = True) -> bool:
    """Whether a progress bar is drawn: asked for, stderr is a terminal, and ``CI`` is not set."""
    return bool(progress) and sys.stderr.isatty() and not os.environ.get("CI")


def progress_bar(iterable: Iterable[Any] | None = None, *, progress: bool, desc: str, unit: str, **options: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (or one updated by hand, given ``total=``), drawn when
    ``show_progress(progress)``; otherwise a bar that draws nothing."""
    return tqdm(iterable, desc=desc, unit=unit, disable=not show_progress(progress), leave=False, **options)
