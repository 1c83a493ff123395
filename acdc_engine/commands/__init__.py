"""Every console script, one module each (``pyproject.toml``'s ``[project.scripts]``).

Hydra commands (``discover``: ``acdc-discover``, ``evaluate``: ``acdc-evaluate``) compose a config
from ``acdc_engine/conf`` (schemas: ``config_schema``; ranges: ``validation``) and write into a run
folder (``run_folder``). Plain commands (``compare``, ``convert``, ``view``, ``mib``, ``summary``)
parse their arguments with argparse and report through ``plain.run_command``: one line on success,
one ``error:`` line and exit code 2 otherwise. Each ``main(argv)`` returns the exit code.
"""
