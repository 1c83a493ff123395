"""The console scripts of the Hydra commands (``pyproject.toml``'s ``acdc-discover``, ``acdc-evaluate``).

Each answers ``--help``/``-h`` from ``hydra_help`` before importing its command, whose module imports
the engine and torch; anything else goes to the command's ``main``.
"""

from __future__ import annotations

import sys

from acdc_engine.commands.hydra_help import print_help, wants_help


def discover_main() -> None:
    """``acdc-discover``: help from ``hydra_help``, else ``acdc_engine.commands.discover.main``."""
    if wants_help(sys.argv[1:]):
        print_help("acdc-discover", "config", sys.argv[1:])
        return
    from acdc_engine.commands.discover import main

    main()


def evaluate_main() -> None:
    """``acdc-evaluate``: help from ``hydra_help``, else ``acdc_engine.commands.evaluate.main``."""
    if wants_help(sys.argv[1:]):
        print_help("acdc-evaluate", "evaluate", sys.argv[1:])
        return
    from acdc_engine.commands.evaluate import main

    main()
