"""The wheel holds the whole package: every module and every data file the source tree has (the
configs, shipped weights, reference circuits, compiled tracr programs), so an installed package
runs without the source tree. (.ci/run installs the wheel into a fresh environment and runs
acdc-discover from it.)"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools")
    source = tmp_path_factory.mktemp("source")  # a copy: building writes build/ into the tree it builds
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "acdc_engine", source / "acdc_engine", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", str(source), "-w", str(out), "--no-deps", "--no-build-isolation", "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("acdc_engine-*.whl")
    return zipfile.ZipFile(wheel)


@pytest.fixture(scope="module")
def wheel_files(wheel):
    return set(wheel.namelist())


def source_files(pattern: str) -> set[str]:
    return {
        str(path.relative_to(ROOT))
        for path in (ROOT / "acdc_engine").rglob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_every_data_file_of_the_package(wheel_files):
    data = {path for path in source_files("*") if not path.endswith(".py")}
    assert {"acdc_engine/conf/config.yaml", "acdc_engine/conf/hydra/launcher/slurm.yaml"} <= data  # nested groups
    assert any(path.startswith("acdc_engine/tracr/compiled/") for path in data)
    assert data - wheel_files == set()


def test_the_wheel_holds_every_module(wheel_files):
    assert source_files("*.py") - wheel_files == set()


def test_the_wheel_installs_every_console_script_of_pyproject(wheel):
    (name,) = [name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt")]
    installed = wheel.read(name).decode().split("[console_scripts]")[1].split("\n[")[0]
    declared = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
    scripts = {line.split("=")[0].strip(): line.split("=")[1].split("#")[0].strip().strip('"') for line in declared.strip().splitlines()}
    assert {line.split(" = ")[0]: line.split(" = ")[1] for line in installed.strip().splitlines()} == scripts
