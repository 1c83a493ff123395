"""README's two commands are the ones CI runs: they must not drift apart."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    return re.findall(r"```bash\n(python3 -m venv .*?)\n```", (ROOT / "README.md").read_text())


def test_readme_gives_a_run_command_and_a_test_command():
    run, test = readme_commands()
    assert run.endswith("acdc-discover")
    assert "pytest" in test


def test_ci_runs_readmes_test_command():
    _, test = readme_commands()
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()
