"""README's two commands are the ones CI runs: they must not drift apart."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    return re.findall(r"```bash\n(python3 -m venv .*?)\n```", (ROOT / "README.md").read_text())


def test_readme_gives_a_run_command_and_a_test_command():
    run, test, _ = readme_commands()
    assert run.endswith("acdc-discover")
    assert "pytest" in test


def test_ci_runs_readmes_test_command():
    _, test, _ = readme_commands()
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_ci_runs_readmes_transformer_lens_3_command():
    _, _, tl3 = readme_commands()
    assert "transformer-lens==3.9.0" in tl3 and "-m tl3" in tl3
    assert tl3 in (ROOT / ".ci" / "run").read_text().splitlines()
