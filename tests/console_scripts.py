"""Run a console script of this checkout as its installed script runs (its pyproject.toml target, in a
subprocess; conftest.py puts this checkout first on its path), and say whether it imported torch."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Calls the target, then writes on the last line of stderr whether torch was imported.
WRAPPER = """
import atexit, importlib, sys
atexit.register(lambda: print("torch imported:", "torch" in sys.modules, file=sys.stderr))
module, function = sys.argv[1].split(":")
sys.argv = sys.argv[2:]
sys.exit(getattr(importlib.import_module(module), function)())
"""


def console_script(name: str) -> str:
    """``module:function`` of console script ``name``, as pyproject.toml declares it."""
    (target,) = re.findall(rf'^{re.escape(name)} = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    return target


def script_command(name: str, *args: str) -> list[str]:
    return [sys.executable, "-c", WRAPPER, console_script(name), name, *args]


def script_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": ""}  # PYTHONPATH: conftest.py


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run console script ``name`` with ``args`` in ``cwd``; stderr's last line is ``torch imported: BOOL``."""
    return subprocess.run(script_command(name, *args), cwd=cwd, env=script_env(), capture_output=True, text=True, timeout=900)


def imported_torch(result: subprocess.CompletedProcess) -> bool:
    last = result.stderr.splitlines()[-1]
    assert last.startswith("torch imported: "), result.stderr
    return last == "torch imported: True"


def default_signals() -> None:
    """In the child before it starts: SIGINT and SIGTERM handled by default, as in a terminal, even
    when the tests themselves run where they are ignored (a shell's background job ignores SIGINT,
    and Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def signal_at_line(script: str, args: list[str], cwd: Path, marker: str, signum: int) -> tuple[int, str]:
    """Run Python source ``script`` with ``args`` in ``cwd``, send ``signum`` once a line of its
    standard output starts with ``marker``, and return (its exit code, its standard error). It waits
    on the process's own output, never on a clock."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], cwd=cwd, env=script_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    try:
        for line in process.stdout:
            if line.startswith(marker):
                process.send_signal(signum)
                break
        _, err = process.communicate()
    finally:
        process.kill()
    return process.returncode, err
