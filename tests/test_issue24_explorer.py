"""The circuit explorer in a real browser, driven like a reader: headless Chromium under the
DevTools protocol (over ``--remote-debugging-pipe``: no network, no extra package), with pointer
events dispatched at screen points. Set ACDC_SHOTS=folder to keep screenshots of what it tests."""

import base64
import json
import math
import os
import re
import shutil
import subprocess
import time

import pytest
import torch

from acdc_engine.core.circuit import Circuit
from acdc_engine.core.mask import CircuitMask, Scores
from acdc_engine.core.graph import GraphShape, build_graph
from acdc_engine.core.pruning import on_input_to_logits_paths
from acdc_engine.viewer import attention_block, write_circuit_html
from acdc_engine.viewer import layout
from acdc_engine.viewer.data import circuit_view
from acdc_engine.viewer.page import page

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium found (Debian: apt-get install chromium; .ci/run installs it)")
PATIENCE = 120  # seconds a page may take to get ready on a loaded machine (a bound, not a timing)


class Browser:
    """One headless Chromium page under the DevTools protocol (JSON messages ended by NUL on fds 3/4)."""

    def __init__(self, folder, width=1400, height=900):
        to_chrome_read, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_write = os.pipe()

        def wire():  # in the child: the protocol's pipes on fds 3 and 4
            read, write = os.dup(to_chrome_read), os.dup(from_chrome_write)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-pipe",
             f"--user-data-dir={folder / 'profile'}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=wire, pass_fds=(3, 4),
        )
        os.close(to_chrome_read)
        os.close(from_chrome_write)
        self._buffer, self._id = b"", 0
        self.target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=self.target, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method, session=None, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_chrome, 1 << 16)
                assert chunk, "Chromium closed the DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                assert "error" not in reply, reply["error"]
                return reply.get("result", {})

    def send(self, method, **params):
        """A command to the page."""
        return self.call(method, session=self.session, **params)

    def js(self, expression):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def open(self, path):
        self.send("Page.navigate", url=path.as_uri())
        deadline = time.monotonic() + PATIENCE
        while self.js("document.readyState === 'complete' && document.body.dataset.ready === '1'") is not True:
            assert time.monotonic() < deadline, "the page never got ready"
            assert self.js("document.body && document.body.dataset.error || null") is None
            time.sleep(0.1)
        assert self.js("document.body.dataset.error || null") is None

    def open_plain(self, path):
        """Open a page that is not a view (it sets no data-ready)."""
        self.send("Page.navigate", url=path.as_uri())
        deadline = time.monotonic() + PATIENCE
        while self.js("document.readyState") != "complete":
            assert time.monotonic() < deadline, "the page never loaded"
            time.sleep(0.1)

    def frames(self):
        """The page's iframes (sandboxed ones run in their own process: each is its own target)."""
        targets = self.call("Target.getTargets")["targetInfos"]
        return [t["targetId"] for t in targets if t["type"] == "iframe" and t.get("parentId") == self.target]

    def js_in(self, frame, expression):
        """``expression``'s value in one of ``frames()``; None if it throws."""
        session = self.call("Target.attachToTarget", targetId=frame, flatten=True)["sessionId"]
        result = self.call("Runtime.evaluate", session=session, expression=expression, returnByValue=True)
        self.call("Target.detachFromTarget", sessionId=session)
        return None if "exceptionDetails" in result else result["result"].get("value")

    def move(self, x, y):
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def click(self, x, y):
        self.move(x, y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def click_element(self, selector):
        box = self.js(f"(function () {{ var r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                      " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        self.click(*box)

    def screenshot(self, name):
        folder = os.environ.get("ACDC_SHOTS")
        if folder:
            os.makedirs(folder, exist_ok=True)
            data = self.send("Page.captureScreenshot", format="png")["data"]
            with open(os.path.join(folder, name), "wb") as file:
                file.write(base64.b64decode(data))

    def close(self):
        self.process.kill()
        self.process.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path)
    yield b
    b.close()


def gpt2_shaped_circuit(kept_fraction=0.055, seed=0, method="eap-ig"):
    """A scored circuit on GPT-2's graph (12 layers x 12 heads, MLPs: 32,491 edges) with about 750
    edges in the circuit; scores random, larger on the kept edges (as a top-n cut makes them)."""
    graph = build_graph(GraphShape(12, 12, True))
    generator = torch.Generator().manual_seed(seed)
    kept = graph.edge_exists & (torch.rand(graph.edge_exists.shape, generator=generator) < kept_fraction)
    scores = torch.randn(graph.edge_exists.shape, generator=generator, dtype=torch.float64) * torch.where(kept, 3.0, 1.0)
    scores = scores.where(graph.edge_exists, torch.tensor(0.0, dtype=torch.float64))
    heads = graph.full_head_input_mask()
    in_graph = on_input_to_logits_paths(graph, CircuitMask(kept, heads))
    return Circuit(
        graph=graph, kept=CircuitMask(kept, heads), in_graph=in_graph,
        scores=Scores(scores, torch.full(heads.shape, math.nan, dtype=torch.float64)), metric={},
        model={"name": "gpt2"}, task={"name": "ioi"}, method={"name": method, "top_n": int(in_graph.edges.sum())},
    )


TOKENS = ["<|endoftext|>", "When", " Mary", " and", " John", " went", " to", " the", " store", ",", " John", " gave"]


def causal_patterns(n_layers, n_heads, seed=0):
    scores = torch.randn(n_layers, n_heads, len(TOKENS), len(TOKENS), generator=torch.Generator().manual_seed(seed))
    return scores.masked_fill(torch.ones(len(TOKENS), len(TOKENS)).triu(1).bool(), -math.inf).softmax(-1)


@pytest.fixture(scope="module")
def gpt2_page(tmp_path_factory):
    circuit = gpt2_shaped_circuit()
    path = tmp_path_factory.mktemp("gpt2") / "circuit.html"
    write_circuit_html(circuit, path, attention=attention_block(causal_patterns(12, 12), TOKENS))
    return circuit, path


@pytest.fixture(scope="module")
def small_page(tmp_path_factory, small_circuit):
    path = tmp_path_factory.mktemp("small") / "circuit.html"
    return write_circuit_html(small_circuit, path)


POINTS_ALONG = """(function (count) {  // screen points along every drawn edge's line, away from its ends
  var out = [];
  document.querySelectorAll("#edges path.edge").forEach(function (path) {
    if (path.classList.contains("hidden")) return;
    var length = path.getTotalLength(), m = path.getScreenCTM();
    for (var k = 0; k < count; k++) {
      var p = path.getPointAtLength(length * (0.15 + 0.7 * k / (count - 1)));
      out.push([p.x * m.a + p.y * m.c + m.e, p.x * m.b + p.y * m.d + m.f, path.getAttribute("data-i")]);
    }
  });
  return out;
})"""


def test_pointing_anywhere_along_a_drawn_edge_shows_its_tooltip(browser, small_page):
    browser.open(small_page)
    points = browser.js(POINTS_ALONG + "(11)")
    on_nodes = [p for p in points if browser.js(f"!!document.elementFromPoint({p[0]}, {p[1]}).closest('.node')")]
    points = [p for p in points if p not in on_nodes]  # an edge passing behind a node: the node's tooltip
    assert len(points) >= 66
    shown = 0
    for x, y, _ in points:
        browser.move(x, y)
        shown += browser.js("document.getElementById('tip').style.display === 'block' && document.getElementById('tip').textContent.indexOf('->') >= 0")
    assert shown == len(points)


def test_the_edge_under_the_pointer_is_the_one_its_tooltip_names(browser, small_page):
    browser.open(small_page)
    x, y, i = browser.js(POINTS_ALONG + "(3)")[1]  # the middle of the first edge
    browser.move(x, y)
    under = browser.js(f"document.elementFromPoint({x}, {y}).getAttribute('data-i')")
    assert browser.js("document.querySelector('#edges path.edge.hover').getAttribute('data-i')") == under
    assert browser.js("document.getElementById('tip').textContent").startswith(
        browser.js(f"(function () {{ var v = JSON.parse(document.getElementById('view').textContent), e = v.edges[{under}];"
                   " return v.nodes[e[0]][0] + '->' + v.nodes[e[1]][0]; })()")
    )


def drawn_and_visible(browser):
    return int(browser.js("document.body.dataset.drawn")), int(browser.js("document.body.dataset.edges"))


def test_the_score_sliders_middle_shows_about_half_of_the_drawn_edges_of_a_gpt2_sized_circuit(browser, gpt2_page):
    circuit, path = gpt2_page
    browser.open(path)
    drawn, visible = drawn_and_visible(browser)
    assert drawn == visible == circuit.n_edges and 700 <= drawn <= 800
    browser.click_element("#slider")  # the pointer on the track's middle
    drawn, visible = drawn_and_visible(browser)
    assert 0.35 * drawn <= visible <= 0.65 * drawn


def test_the_slider_spans_the_edges_drawn_after_a_state_is_ticked(browser, gpt2_page):
    circuit, path = gpt2_page
    browser.open(path)
    browser.click_element("#legend label:nth-of-type(2) input")  # "selected, but off every input-to-logits path"
    drawn, _ = drawn_and_visible(browser)
    assert drawn > circuit.n_edges
    assert int(browser.js("document.getElementById('slider').max")) == drawn - 1
    browser.click_element("#slider")
    drawn, visible = drawn_and_visible(browser)
    assert 0.35 * drawn <= visible <= 0.65 * drawn


def node_centre(browser, name):
    return browser.js(f"""(function () {{
      var g = Array.prototype.find.call(document.querySelectorAll('#nodes .node'), function (g) {{ return g.textContent === {json.dumps(name)}; }});
      var r = g.querySelector('rect').getBoundingClientRect();
      return [r.left + r.width / 2, r.top + r.height / 2];
    }})()""")


def busiest_head(circuit):
    names = [n for n in circuit.nodes() if n.startswith("a")]
    return max(names, key=lambda n: sum(n in e for e in circuit.edges()))


def test_clicking_a_node_lists_its_incoming_and_outgoing_edges_ranked_by_score(browser, gpt2_page):
    circuit, path = gpt2_page
    browser.open(path)
    head = busiest_head(circuit)
    browser.click(*node_centre(browser, head))
    assert browser.js("document.body.dataset.selected") == head
    g = circuit.graph
    into = [e for e in circuit.edges() if e.split("->")[1].split("<")[0] == head]
    out = [e for e in circuit.edges() if e.split("->")[0] == head]
    for side, expected in (("incoming", into), ("outgoing", out)):
        values = browser.js(f"Array.prototype.map.call(document.querySelectorAll('#panel table.{side} td.value'), function (td) {{ return +td.textContent; }})")
        assert len(values) == len(expected)
        assert [abs(v) for v in values] == sorted((abs(v) for v in values), reverse=True)
        largest = max(abs(float(circuit.scores.edges[g.parse_edge(e)])) for e in expected)
        assert abs(values[0]) == pytest.approx(largest, rel=1e-3)
    browser.screenshot("explorer-node-selected.png")


def test_pinned_nodes_are_downloaded_as_a_json_subgraph(browser, gpt2_page, tmp_path):
    circuit, path = gpt2_page
    browser.open(path)
    downloads = tmp_path / "downloads"
    browser.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    head = busiest_head(circuit)
    sender = next(e.split("->")[0] for e in circuit.edges() if e.split("->")[1].split("<")[0] == head)
    browser.click(*node_centre(browser, head))
    browser.click_element("#pin")
    row = browser.js(f"Array.prototype.findIndex.call(document.querySelectorAll('#panel table.incoming tr'), function (tr) {{ return tr.textContent.split(' ')[0] === {json.dumps(sender)}; }})")
    browser.click_element(f"#panel table.incoming tr:nth-child({row + 1})")  # a row goes to its other node
    assert browser.js("document.body.dataset.selected") == sender
    browser.click_element("#pin")
    assert browser.js("document.body.dataset.pinned") == "2"
    browser.click_element("#only-pinned")
    assert int(browser.js("document.body.dataset.edges")) >= 1
    browser.screenshot("explorer-pinned.png")
    browser.click_element("#export")
    deadline = time.monotonic() + PATIENCE
    while not list(downloads.glob("*.json")):
        assert time.monotonic() < deadline, "no download"
        time.sleep(0.1)
    (file,) = downloads.glob("*.json")
    assert file.name == "gpt2_ioi_EAP-IG_top_" + str(circuit.n_edges) + ".subgraph.json"
    subgraph = json.loads(file.read_text())
    assert sorted(subgraph["nodes"]) == sorted([head, sender])
    expected = {e for e in circuit.edges() if e.split("->")[0] == sender and e.split("->")[1].split("<")[0] == head}
    assert {row["edge"] for row in subgraph["edges"]} == expected


def test_a_heads_attention_pattern_is_one_click_away(browser, gpt2_page):
    circuit, path = gpt2_page
    browser.open(path)
    head = busiest_head(circuit)
    browser.click(*node_centre(browser, head))
    assert browser.js("document.body.dataset.attention") == head
    assert browser.js("document.querySelectorAll('#attention rect.cell').length") == len(TOKENS) ** 2
    layer, index = map(int, re.match(r"a(\d+)\.h(\d+)", head).groups())
    expected = causal_patterns(12, 12)[layer, index].half().float()
    drawn = browser.js(f"JSON.parse(document.getElementById('view').textContent).attention.patterns[{layer}][{index}]")
    assert torch.tensor(drawn) == pytest.approx(expected, abs=1e-3)
    browser.screenshot("explorer-attention.png")


def crossings(browser):
    """Pairs of drawn edges whose straight chords cross, from the nodes' places on the page."""
    chords = browser.js("""Array.prototype.map.call(document.querySelectorAll('#edges path.edge'), function (p) {
        var n = p.getAttribute('d').match(/-?[\\d.e+-]+/g).map(Number); return [n[0], n[1], n[6], n[7]]; })""")

    def cross(a, b):
        def side(p, q, r):
            return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
        p1, p2, q1, q2 = a[:2], a[2:], b[:2], b[2:]
        return side(p1, p2, q1) * side(p1, p2, q2) < 0 and side(q1, q2, p1) * side(q1, q2, p2) < 0

    return sum(cross(a, b) for k, a in enumerate(chords) for b in chords[k + 1:])


def test_without_graphviz_the_nodes_are_ordered_to_cross_fewer_edges_than_by_head_index(browser, tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "find_renderer", lambda: None)
    view = circuit_view(gpt2_shaped_circuit(kept_fraction=0.03))
    assert all(node[5] is None for node in view["nodes"])
    (tmp_path / "swept.html").write_text(page(view))
    for node in view["nodes"]:
        node[5] = 100 * node[3]  # Graphviz's place, as the page takes it: here the head index
    (tmp_path / "by-index.html").write_text(page(view))
    browser.open(tmp_path / "by-index.html")
    by_index = crossings(browser)
    browser.open(tmp_path / "swept.html")
    assert crossings(browser) < 0.8 * by_index


def test_with_graphviz_every_node_of_the_circuit_has_its_place(gpt2_page):
    circuit, _ = gpt2_page
    view = circuit_view(circuit)
    placed = {node[0] for node in view["nodes"] if node[5] is not None}
    assert placed == set(circuit.nodes())


def test_two_notebook_views_in_one_page_each_draw_their_own_circuit(browser, tmp_path, small_circuit):
    from acdc_engine.viewer import notebook_html

    other = gpt2_shaped_circuit(kept_fraction=0.01)
    notebook = tmp_path / "notebook.html"
    notebook.write_text(f"<!DOCTYPE html><html><body>{notebook_html(small_circuit)}{notebook_html(other)}</body></html>")
    browser.open_plain(notebook)
    deadline, drawn = time.monotonic() + PATIENCE, None
    while drawn is None or len(drawn) != 2 or None in drawn:
        assert time.monotonic() < deadline, "a notebook view never got ready"
        time.sleep(0.1)
        drawn = [browser.js_in(frame, "document.body.dataset.ready ? +document.body.dataset.edges : null") for frame in browser.frames()]
    assert sorted(drawn) == sorted([small_circuit.n_edges, other.n_edges])
