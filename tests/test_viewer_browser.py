"""The viewer in a real browser: headless Chromium loads circuit.html without script errors, draws
its nodes and edges, and its screenshot shows a drawing (q/k/v colours on a white page)."""

import re
import shutil
import subprocess

import pytest

from acdc_engine.evaluation.overlap import compare_circuits
from acdc_engine.formats.drawing import EDGE_COLOURS
from acdc_engine.viewer import write_circuit_html, write_diff_html

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium found (Debian: apt-get install chromium; .ci/run installs it)")


def chromium(tmp_path, *args):
    command = [
        BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=3000", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def pages(tmp_path_factory, small_circuit):
    folder = tmp_path_factory.mktemp("pages")
    circuit = write_circuit_html(small_circuit, folder / "circuit.html")
    diff = write_diff_html(compare_circuits([small_circuit, small_circuit]), folder / "diff.html")
    return folder, circuit, diff


def body_of(tmp_path, page):
    result = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, re.search(r"<body([^>]*)>", result.stdout).group(1)


@pytest.mark.parametrize("which", [1, 2], ids=["circuit", "diff"])
def test_the_page_loads_without_script_errors_and_draws_every_node(pages, tmp_path, small_circuit, which):
    dom, body = body_of(tmp_path, pages[which])
    assert 'data-ready="1"' in body and "data-error" not in body
    assert f'data-nodes="{len(small_circuit.nodes())}"' in body and f'data-edges="{small_circuit.n_edges}"' in body
    assert dom.count('class="node') == len(small_circuit.nodes())


def test_the_screenshot_shows_the_drawing(pages, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,700", pages[1].as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 700)
    colours = image.getcolors(maxcolors=1_000_000)
    assert len(colours) > 50  # not blank
    present = {rgb for _, rgb in colours}
    qkv = [tuple(int(EDGE_COLOURS[x][i : i + 2], 16) for i in (1, 3, 5)) for x in "qkv"]
    assert all(any(max(abs(a - b) for a, b in zip(c, p)) < 30 for p in present) for c in qkv)
