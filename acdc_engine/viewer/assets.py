"""The viewer page's stylesheet and script, inlined into every ``circuit.html`` (no network).

The script reads the view (``acdc_engine.viewer.data``) from the page's ``<script id="view">``
element and draws it as SVG: nodes ranked bottom (input) to top (logits), ordered within a rank by
Graphviz's layout when the view has one (``viewer.layout``), else by barycenter sweeps (each row
sorted by the mean place of each node's neighbours, a few passes up and down: fewer crossings),
then placed compactly near that mean; edges as curves with arrowheads, entering a head's q, k or v
side, width growing with |value|.

What a reader can do: pan by dragging, zoom with the wheel (or the buttons); hover an edge (its
line or a band around it) or a node for its details; filter edges by |value| with the slider, whose
steps are the |values| of the edges currently drawn (its middle shows about half of them); show or
hide edge states with the legend's boxes; search nodes by name; click a node for its incoming and
outgoing edges ranked by |value| (and, for a head, its attention pattern when the view has one);
pin nodes, show only the pinned subgraph, and download it as JSON.

When drawn it sets ``data-ready="1"`` and ``data-nodes``/``data-edges`` (what is visible) on
``<body>``; a script error sets ``data-error``. ``data-selected`` names the selected node and
``data-pinned`` counts pinned nodes.
"""

CSS = """
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; font: 13px/1.35 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; }
body { display: flex; flex-direction: column; }
header { padding: 8px 12px; border-bottom: 1px solid #ddd; background: #fafafa; }
header h1 { font-size: 15px; margin: 0 0 2px 0; font-weight: 600; }
header .sub { color: #555; }
.controls { display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: center; margin-top: 6px; }
.controls label { display: inline-flex; align-items: center; gap: 5px; }
.controls input[type=range] { width: 220px; }
.controls input[type=search] { width: 180px; padding: 2px 6px; }
button { padding: 1px 8px; font: inherit; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; margin-top: 6px; color: #333; }
.legend .swatch { display: inline-block; width: 22px; height: 0; border-top: 3px solid; vertical-align: middle; margin-right: 4px; }
.legend .swatch.faint { border-top-style: dashed; opacity: .6; }
.note { color: #a04000; margin-top: 4px; }
main { flex: 1; display: flex; min-height: 0; }
#stage { flex: 1; position: relative; overflow: hidden; background: #fff; }
svg#canvas { width: 100%; height: 100%; cursor: grab; display: block; }
svg#canvas.panning { cursor: grabbing; }
.edge { fill: none; stroke-linecap: round; pointer-events: visibleStroke; cursor: pointer; }
.edge.faint { stroke-dasharray: 5 4; opacity: .35; }
.edge.dim, .node.dim { opacity: .08; }
.hit { fill: none; stroke: transparent; stroke-width: 10px; pointer-events: stroke; cursor: pointer; }
.edge.hover { stroke-width: 4.5px; opacity: 1; }
.node { cursor: pointer; }
.node rect { stroke: #555; stroke-width: 1; }
.node text { font-size: 11px; text-anchor: middle; dominant-baseline: central; pointer-events: none; }
.node.hit-node rect { stroke: #000; stroke-width: 3; }
.node.pinned rect { stroke: #e08a00; stroke-width: 3; }
.node.selected rect { stroke: #000; stroke-width: 2; stroke-dasharray: 4 2; }
.node.idle { opacity: .25; }
.node.hidden, .edge.hidden, .hit.hidden { display: none; }
#tip { position: absolute; pointer-events: none; background: rgba(255,255,255,.96); border: 1px solid #999; border-radius: 4px;
       padding: 5px 8px; box-shadow: 0 1px 4px rgba(0,0,0,.2); display: none; white-space: nowrap; font-size: 12px; z-index: 2; }
#tip b { font-weight: 600; }
#panel { width: 360px; border-left: 1px solid #ddd; background: #fcfcfc; overflow-y: auto; padding: 8px 10px; }
#panel[hidden] { display: none; }
#panel .head { display: flex; align-items: center; gap: 8px; }
#panel .head b { font-size: 15px; }
#panel .head .kind { color: #666; flex: 1; }
#panel h3 { font-size: 12px; margin: 12px 0 4px 0; color: #444; font-weight: 600; }
#panel table { border-collapse: collapse; width: 100%; font-size: 12px; }
#panel td { padding: 1px 4px; border-bottom: 1px solid #eee; white-space: nowrap; }
#panel td.value { text-align: right; font-variant-numeric: tabular-nums; }
#panel tr.row { cursor: pointer; }
#panel tr.row:hover { background: #eef3fb; }
#panel tr.below { color: #999; }
#panel .swatch { display: inline-block; width: 14px; height: 0; border-top: 3px solid; vertical-align: middle; margin-right: 4px; }
#panel .caption { color: #666; font-size: 11px; margin: 2px 0 4px 0; }
#attention text { font-size: 9px; fill: #333; }
"""

JS = r"""
(function () {
  "use strict";
  window.addEventListener("error", function (e) { document.body.dataset.error = String(e.message || e); });
  var view = JSON.parse(document.getElementById("view").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var svg = document.getElementById("canvas"), port = document.getElementById("viewport");
  var edgeLayer = document.getElementById("edges"), nodeLayer = document.getElementById("nodes");
  var tip = document.getElementById("tip"), stage = document.getElementById("stage"), panel = document.getElementById("panel");
  var X = 76, Y = 66, H = 22;               // least column width, rank height, node height
  var shown = view.states.map(function (s) { return s.shown; });
  var minValue = 0, query = "", selected = null, pinned = {}, onlyPinned = false;
  var nodes = view.nodes.map(function (n, i) {
    return { i: i, name: n[0], kind: n[1], rank: n[2], order: n[3], state: n[4], gx: n[5], w: Math.max(40, 7 * n[0].length + 14) };
  });
  var edges = view.edges.map(function (e, i) {
    var values = [e[4], e[5]].filter(function (v) { return v !== null && v !== undefined; });
    var size = values.length ? Math.max.apply(null, values.map(Math.abs)) : null;
    return { i: i, s: nodes[e[0]], t: nodes[e[1]], input: e[2], state: e[3], a: e[4], b: e[5], size: size };
  });
  var largest = Math.max.apply(null, [0].concat(edges.map(function (e) { return e.size || 0; })));
  var valueName = view.values[0].split(" ")[0];

  function el(tag, attrs, parent) {
    var x = document.createElementNS(NS, tag);
    for (var k in attrs) x.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(x);
    return x;
  }
  function html(tag, text, parent, cls) {
    var x = document.createElement(tag);
    if (text !== null && text !== undefined) x.textContent = text;
    if (cls) x.className = cls;
    if (parent) parent.appendChild(x);
    return x;
  }
  function esc(text) { return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
  function fmt(v) { return v === null || v === undefined ? "not scored" : (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : +v.toPrecision(4)); }
  function edgeName(e) { return e.s.name + "->" + e.t.name + (e.input ? "<" + e.input + ">" : ""); }
  function colour(e) { return view.colourBy === "input" ? view.colours[e.input || "other"] : view.states[e.state].colour; }
  function bySize(a, b) { return (b.e.size === null ? -1 : b.e.size) - (a.e.size === null ? -1 : a.e.size); }  // drawn edges, largest |value| first

  // ----- arrowheads: one marker per edge colour ------------------------------------------------
  var defs = el("defs", {}, svg), markers = {};
  function marker(c) {
    if (!markers[c]) {
      markers[c] = "arrow" + Object.keys(markers).length;
      var m = el("marker", { id: markers[c], viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9,
                             markerUnits: "userSpaceOnUse", orient: "auto" }, defs);
      el("path", { d: "M0,1 L10,5 L0,9 z", fill: c }, m);
    }
    return "url(#" + markers[c] + ")";
  }

  // ----- layout: ranks bottom (input) to top (logits). Within a rank, Graphviz's order when the view
  // has one for all its nodes, else barycenter sweeps (sort by the mean x of each node's neighbours,
  // alternately top-down and bottom-up); then the same sweeps move each node towards that mean,
  // pack() keeping the order and the spacing (compact rows, edges as straight as they can be) --------
  var placed = [], SWEEPS = 12;
  function slot(n) { return Math.max(X, n.w + 12); }
  function pack(row, want) {                  // nearest places to `want` that keep the row's order and spacing
    var left = [], right = [], k = row.length;
    for (var i = 0; i < k; i++) left[i] = i ? Math.max(want[i], left[i - 1] + (slot(row[i - 1]) + slot(row[i])) / 2) : want[i];
    for (i = k - 1; i >= 0; i--) right[i] = i < k - 1 ? Math.min(want[i], right[i + 1] - (slot(row[i]) + slot(row[i + 1])) / 2) : want[i];
    row.forEach(function (n, j) { n.x = (left[j] + right[j]) / 2; });
  }
  function layout() {
    var drawn = {}, near = {};
    edges.forEach(function (e) {
      if (!shown[e.state]) return;
      drawn[e.s.i] = drawn[e.t.i] = true;
      (near[e.s.i] = near[e.s.i] || []).push(e.t); (near[e.t.i] = near[e.t.i] || []).push(e.s);
    });
    placed = nodes.filter(function (n) { return drawn[n.i]; });
    if (!placed.length) placed = nodes.slice();
    var ranks = {};
    placed.forEach(function (n) { (ranks[n.rank] = ranks[n.rank] || []).push(n); });
    var used = Object.keys(ranks).map(Number).sort(function (a, b) { return b - a; });  // top (logits) first; empty ranks take no room
    var rows = used.map(function (r, level) {
      var row = ranks[r], given = row.every(function (n) { return n.gx !== null && n.gx !== undefined; });
      row.sort(given ? function (a, b) { return a.gx - b.gx; } : function (a, b) { return a.order - b.order || (a.name < b.name ? -1 : 1); });
      var width = row.reduce(function (sum, n) { return sum + slot(n); }, 0), x = -width / 2;
      row.forEach(function (n) { n.x = x + slot(n) / 2; x += slot(n); n.y = level * Y; });
      row.given = given;
      return row;
    });
    for (var pass = 0; pass < SWEEPS; pass++) {
      (pass % 2 ? rows.slice().reverse() : rows).forEach(function (row) {
        row.forEach(function (n) {
          var around = near[n.i] || [];
          n.want = around.length ? around.reduce(function (sum, m) { return sum + m.x; }, 0) / around.length : n.x;
        });
        if (!row.given) row.sort(function (a, b) { return a.want - b.want || a.x - b.x; });
        pack(row, row.map(function (n) { return n.want; }));
      });
    }
  }

  // ----- drawing ---------------------------------------------------------------------------------
  var edgeEls = [], nodeEls = {};
  function entry(e) {                         // where an edge enters its receiver: q left, k middle, v right
    var dx = { q: -0.3, k: 0, v: 0.3 }[e.input] || 0;
    return [e.t.x + dx * e.t.w, e.t.y + H / 2];
  }
  function draw() {
    edgeLayer.textContent = ""; nodeLayer.textContent = ""; edgeEls = []; nodeEls = {};
    layout();
    var onPage = {};
    placed.forEach(function (n) { onPage[n.i] = true; });
    edges.forEach(function (e) {
      if (!shown[e.state] || !onPage[e.s.i] || !onPage[e.t.i]) return;
      var start = [e.s.x, e.s.y - H / 2], end = entry(e), mid = (start[1] + end[1]) / 2;
      var d = "M" + start[0] + "," + start[1] + " C" + start[0] + "," + mid + " " + end[0] + "," + mid + " " + end[0] + "," + end[1];
      var width = e.size === null || largest === 0 ? 1.2 : 0.8 + 4 * Math.abs(e.size) / largest;
      var hit = el("path", { d: d, "class": "hit", "vector-effect": "non-scaling-stroke", "data-i": e.i }, edgeLayer);
      var path = el("path", { d: d, "class": "edge" + (view.states[e.state].faint ? " faint" : ""), stroke: colour(e),
                              "stroke-width": width.toFixed(2), "marker-end": marker(colour(e)), "data-i": e.i }, edgeLayer);
      edgeEls.push({ e: e, path: path, hit: hit, on: true });
    });
    placed.forEach(function (n) {
      var g = el("g", { "class": "node", transform: "translate(" + n.x + "," + n.y + ")", "data-node": n.i }, nodeLayer);
      var fill = n.state >= 0 && view.states[n.state].fill ? view.states[n.state].fill : view.fills[n.kind];
      el("rect", { x: -n.w / 2, y: -H / 2, width: n.w, height: H, rx: n.kind === "head" ? 11 : 3, fill: fill }, g);
      el("text", {}, g).textContent = n.name;
      nodeEls[n.i] = g;
    });
    rescale();
    filter();
  }
  var hovered = null;
  function unhover() { if (hovered) hovered.path.classList.remove("hover"); hovered = null; hideTip(); }
  edgeLayer.addEventListener("mousemove", function (ev) {
    var i = ev.target.getAttribute("data-i");
    if (i === null) return;
    var x = byEdge[i];
    if (hovered !== x) { unhover(); hovered = x; x.path.classList.add("hover"); }
    showTip(ev, edgeTip(x.e));
  });
  edgeLayer.addEventListener("mouseleave", unhover);
  nodeLayer.addEventListener("mousemove", function (ev) { var n = nodeOf(ev.target); if (n) showTip(ev, nodeTip(n)); });
  nodeLayer.addEventListener("mouseleave", hideTip);
  nodeLayer.addEventListener("click", function (ev) { var n = nodeOf(ev.target); if (n && !moved) select(n); });
  function nodeOf(target) {
    var g = target.closest ? target.closest(".node") : null;
    return g ? nodes[+g.getAttribute("data-node")] : null;
  }
  var byEdge = {};

  // ----- filters: |value| slider over the drawn edges, states, search, pinned subgraph ---------------
  var sizes = [];
  var slider = document.getElementById("slider"), sliderText = document.getElementById("slider-text");
  function rescale() {                        // the slider's steps: the drawn edges' |values|, ascending
    byEdge = {};
    edgeEls.forEach(function (x) { byEdge[x.e.i] = x; });
    sizes = edgeEls.filter(function (x) { return x.e.size !== null; }).map(function (x) { return Math.abs(x.e.size); })
                   .sort(function (a, b) { return a - b; });
    slider.max = Math.max(0, sizes.length - 1);
    var at = 0;
    while (minValue > 0 && at < sizes.length - 1 && sizes[at] < minValue) at++;
    slider.value = at;
    minValue = at > 0 ? sizes[at] : 0;
  }
  function filter() {
    var visible = 0, live = {}, focus = {}, near = {}, count = 0, q = query.toLowerCase();
    placed.forEach(function (n) { if (q && n.name.toLowerCase().indexOf(q) >= 0) { focus[n.i] = near[n.i] = true; count++; } });
    if (selected) focus[selected.i] = near[selected.i] = true;
    var focusing = Object.keys(focus).length > 0;
    edgeEls.forEach(function (x) {
      var e = x.e;
      x.on = (e.size === null || e.size >= minValue) && (!onlyPinned || (pinned[e.s.i] && pinned[e.t.i]));
      x.path.classList.toggle("hidden", !x.on); x.hit.classList.toggle("hidden", !x.on);
      if (x.on) { visible++; live[e.s.i] = live[e.t.i] = true; }
      var touches = focus[e.s.i] || focus[e.t.i];
      if (touches && x.on) near[e.s.i] = near[e.t.i] = true;
      x.path.classList.toggle("dim", focusing && !touches);
    });
    placed.forEach(function (n) {
      var g = nodeEls[n.i];
      g.classList.toggle("hit-node", !!q && n.name.toLowerCase().indexOf(q) >= 0);
      g.classList.toggle("idle", !live[n.i]);
      g.classList.toggle("dim", focusing && !near[n.i]);
      g.classList.toggle("pinned", !!pinned[n.i]);
      g.classList.toggle("selected", selected === n);
      g.classList.toggle("hidden", onlyPinned && !pinned[n.i]);
    });
    sliderText.textContent = "|" + valueName + "| \u2265 " + fmt(minValue) + ": " + visible + " of " + edgeEls.length + " edges";
    document.getElementById("search-count").textContent = q ? count + " node" + (count === 1 ? "" : "s") : "";
    document.body.dataset.nodes = placed.length;
    document.body.dataset.edges = visible;
    document.body.dataset.drawn = edgeEls.length;
    if (selected) fillPanel();
  }
  slider.addEventListener("input", function () { minValue = +slider.value > 0 ? sizes[+slider.value] : 0; filter(); });
  var search = document.getElementById("search");
  search.addEventListener("input", function () { query = search.value.trim(); filter(); });
  search.addEventListener("keydown", function (ev) {
    if (ev.key !== "Enter") return;
    var hit = placed.filter(function (n) { return query && n.name.toLowerCase().indexOf(query.toLowerCase()) >= 0; })[0];
    if (hit) { centre(hit); select(hit); }
  });

  // ----- legend with a box per state ----------------------------------------------------------------
  var legend = document.getElementById("legend");
  function mark(c, faint, parent) {
    var line = html("span", null, parent, "swatch" + (faint ? " faint" : ""));
    line.style.borderColor = c;
    return line;
  }
  function swatch(c, faint, text) {
    var span = document.createElement("span");
    mark(c, faint, span);
    span.appendChild(document.createTextNode(text));
    return span;
  }
  if (view.colourBy === "input") {
    [["q", "query"], ["k", "key"], ["v", "value"], ["other", "MLP / logits"]].forEach(function (p) { legend.appendChild(swatch(view.colours[p[0]], false, "into " + p[1])); });
  }
  view.states.forEach(function (s, k) {
    var label = document.createElement("label"), box = document.createElement("input");
    box.type = "checkbox"; box.checked = shown[k];
    var n = edges.filter(function (e) { return e.state === k; }).length;
    box.addEventListener("change", function () { shown[k] = box.checked; draw(); fit(); });
    label.appendChild(box);
    label.appendChild(swatch(s.colour || "#888", s.faint, s.label + " (" + n + ")"));
    legend.appendChild(label);
  });

  // ----- tooltips ----------------------------------------------------------------------------------
  function edgeTip(e) {
    var rows = ["<b>" + esc(edgeName(e)) + "</b>", esc(view.states[e.state].label)];
    rows.push(esc(view.values[0]) + ": " + fmt(e.a));
    if (view.values[1]) rows.push(esc(view.values[1]) + ": " + fmt(e.b));
    return rows.join("<br>");
  }
  function degree(n) {
    var into = 0, out = 0;
    edgeEls.forEach(function (x) { if (x.on) { if (x.e.t === n) into++; if (x.e.s === n) out++; } });
    return into + " edges in, " + out + " out";
  }
  function nodeTip(n) {
    var rows = ["<b>" + esc(n.name) + "</b>", degree(n)];
    if (n.state >= 0) rows.push(esc(view.states[n.state].label));
    rows.push("click for its edges" + (attentionOf(n) ? " and attention" : ""));
    return rows.join("<br>");
  }
  function showTip(ev, text) {
    var box = stage.getBoundingClientRect();
    tip.innerHTML = text; tip.style.display = "block";
    tip.style.left = Math.max(0, Math.min(ev.clientX - box.left + 14, box.width - tip.offsetWidth - 4)) + "px";
    tip.style.top = (ev.clientY - box.top + 14) + "px";
  }
  function hideTip() { tip.style.display = "none"; }

  // ----- the node panel: ranked edges in and out, pin, attention pattern -----------------------------
  function select(n) {
    selected = n;
    panel.hidden = false;
    document.body.dataset.selected = n.name;
    filter();
    var x = zoom.x + n.x * zoom.k, y = zoom.y + n.y * zoom.k;  // the panel narrows the stage: keep the node in sight
    if (x < 20 || x > svg.clientWidth - 20 || y < 20 || y > svg.clientHeight - 20) {
      zoom.x = svg.clientWidth / 2 - n.x * zoom.k; zoom.y = svg.clientHeight / 2 - n.y * zoom.k; apply();
    }
  }
  function deselect() {
    selected = null; panel.hidden = true; delete document.body.dataset.selected; delete document.body.dataset.attention; filter();
  }
  function edgeTable(title, list, other) {
    html("h3", title + " (" + list.length + ")", panel);
    var table = html("table", null, panel, "ranked " + (other === "s" ? "incoming" : "outgoing"));
    list.sort(bySize).forEach(function (x) {
      var e = x.e, tr = html("tr", null, table, "row" + (x.on ? "" : " below"));
      var name = html("td", null, tr);
      mark(colour(e), view.states[e.state].faint, name);
      name.appendChild(document.createTextNode(e[other].name + (e.input ? " <" + e.input + ">" : "")));
      name.title = edgeName(e) + ": " + view.states[e.state].label;
      html("td", String(fmt(e.a)), tr, "value");
      if (view.values[1]) html("td", String(fmt(e.b)), tr, "value");
      tr.addEventListener("click", function () { select(e[other]); });
      tr.addEventListener("mouseenter", function () { x.path.classList.add("hover"); });
      tr.addEventListener("mouseleave", function () { x.path.classList.remove("hover"); });
    });
  }
  function fillPanel() {
    var n = selected;
    panel.textContent = "";
    var head = html("div", null, panel, "head");
    html("b", n.name, head);
    html("span", n.kind + (n.state >= 0 ? " \u00b7 " + view.states[n.state].label : ""), head, "kind");
    var pin = html("button", pinned[n.i] ? "unpin" : "pin", head);
    pin.id = "pin";
    pin.addEventListener("click", function () { if (pinned[n.i]) delete pinned[n.i]; else pinned[n.i] = true; pinsChanged(); });
    var close = html("button", "\u00d7", head);
    close.title = "close (Esc)";
    close.addEventListener("click", deselect);
    html("div", degree(n) + " shown; ranked by |" + valueName + "|; grey: hidden (below the slider, or outside the pinned subgraph)", panel, "caption");
    drawAttention(n);
    edgeTable("incoming", edgeEls.filter(function (x) { return x.e.t === n; }), "s");
    edgeTable("outgoing", edgeEls.filter(function (x) { return x.e.s === n; }), "t");
  }
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape" && selected) deselect(); });

  function attentionOf(n) {
    var m = /^a(\d+)\.h(\d+)$/.exec(n.name), a = view.attention;
    if (!m || !a || !a.patterns[+m[1]] || !a.patterns[+m[1]][+m[2]]) return null;
    return a.patterns[+m[1]][+m[2]];
  }
  function drawAttention(n) {
    var pattern = attentionOf(n), tokens = view.attention ? view.attention.tokens : [];
    delete document.body.dataset.attention;
    if (!pattern) return;
    html("h3", "attention pattern", panel);
    html("div", "on the task's first prompt: rows are queries, columns keys; hover a cell for its weight", panel, "caption");
    var P = tokens.length, label = 64, cell = Math.max(3, Math.min(22, Math.floor((330 - label) / Math.max(1, P))));
    var size = label + P * cell, box = el("svg", { id: "attention", width: size, height: size, viewBox: "0 0 " + size + " " + size }, panel);
    tokens.forEach(function (t, i) {
      var short = t.length > 9 ? t.slice(0, 8) + "\u2026" : t;
      el("text", { x: label - 3, y: label + (i + 0.5) * cell, "text-anchor": "end", "dominant-baseline": "central" }, box).textContent = short;
      el("text", { transform: "translate(" + (label + (i + 0.5) * cell) + "," + (label - 3) + ") rotate(-60)" }, box).textContent = short;
    });
    pattern.forEach(function (row, q) {
      row.forEach(function (v, k) {
        var shade = Math.round(255 * (1 - Math.min(1, Math.max(0, v))));
        var r = el("rect", { x: label + k * cell, y: label + q * cell, width: cell, height: cell, "class": "cell",
                             fill: "rgb(" + shade + "," + Math.round(shade * 0.9 + 20) + ",255)" }, box);
        r.addEventListener("mousemove", function (ev) {
          showTip(ev, "query " + esc(JSON.stringify(tokens[q])) + " (" + q + ") \u2192 key " + esc(JSON.stringify(tokens[k])) + " (" + k + "): " + v);
        });
        r.addEventListener("mouseleave", hideTip);
      });
    });
    document.body.dataset.attention = n.name;
  }

  // ----- pinned subgraph: show only it, download it as JSON ------------------------------------------
  function pinsChanged() {
    var count = Object.keys(pinned).length;
    document.getElementById("pin-count").textContent = count;
    document.body.dataset.pinned = count;
    filter();
  }
  document.getElementById("only-pinned").addEventListener("change", function (ev) { onlyPinned = ev.target.checked; filter(); });
  document.getElementById("clear-pins").addEventListener("click", function () { pinned = {}; pinsChanged(); });
  document.getElementById("export").addEventListener("click", function () {
    var names = nodes.filter(function (n) { return pinned[n.i]; }).map(function (n) { return n.name; });
    var kept = edgeEls.filter(function (x) { return x.on && pinned[x.e.s.i] && pinned[x.e.t.i]; }).map(function (x) {
      var row = { edge: edgeName(x.e), state: view.states[x.e.state].label };
      row[view.values[0]] = x.e.a;
      if (view.values[1]) row[view.values[1]] = x.e.b;
      return row;
    });
    var text = JSON.stringify({ title: view.title, nodes: names, edges: kept, filter: "|" + valueName + "| >= " + minValue }, null, 1);
    var link = document.createElement("a");
    link.href = "data:application/json;charset=utf-8," + encodeURIComponent(text);
    link.download = (view.title.replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^_+|_+$/g, "") || "circuit") + ".subgraph.json";
    document.body.appendChild(link); link.click(); link.remove();
  });

  // ----- pan and zoom ------------------------------------------------------------------------------
  var zoom = { x: 0, y: 0, k: 1 };
  function apply() { port.setAttribute("transform", "translate(" + zoom.x + "," + zoom.y + ") scale(" + zoom.k + ")"); }
  function fit() {
    var xs = placed.map(function (n) { return n.x; }), ys = placed.map(function (n) { return n.y; });
    var x0 = Math.min.apply(null, xs) - 60, x1 = Math.max.apply(null, xs) + 60, y0 = Math.min.apply(null, ys) - 30, y1 = Math.max.apply(null, ys) + 30;
    var w = svg.clientWidth || 800, h = svg.clientHeight || 600;
    zoom.k = Math.min(w / (x1 - x0), h / (y1 - y0), 2);
    zoom.x = (w - (x0 + x1) * zoom.k) / 2; zoom.y = (h - (y0 + y1) * zoom.k) / 2;
    apply();
  }
  function centre(n) { zoom.k = Math.max(zoom.k, 1.5); zoom.x = svg.clientWidth / 2 - n.x * zoom.k; zoom.y = svg.clientHeight / 2 - n.y * zoom.k; apply(); }
  function zoomAt(factor, cx, cy) {
    var k = Math.min(20, Math.max(0.05, zoom.k * factor));
    zoom.x = cx - (cx - zoom.x) * k / zoom.k; zoom.y = cy - (cy - zoom.y) * k / zoom.k; zoom.k = k; apply();
  }
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var box = svg.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - box.left, ev.clientY - box.top);
  }, { passive: false });
  var drag = null, moved = false;
  svg.addEventListener("mousedown", function (ev) { drag = [ev.clientX - zoom.x, ev.clientY - zoom.y, ev.clientX, ev.clientY]; moved = false; svg.classList.add("panning"); });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) return;
    if (Math.abs(ev.clientX - drag[2]) + Math.abs(ev.clientY - drag[3]) > 3) moved = true;
    if (moved) { zoom.x = ev.clientX - drag[0]; zoom.y = ev.clientY - drag[1]; apply(); }
  });
  window.addEventListener("mouseup", function () { drag = null; svg.classList.remove("panning"); });
  document.getElementById("fit").addEventListener("click", fit);
  document.getElementById("zoom-in").addEventListener("click", function () { zoomAt(1.25, svg.clientWidth / 2, svg.clientHeight / 2); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoomAt(0.8, svg.clientWidth / 2, svg.clientHeight / 2); });
  window.addEventListener("resize", fit);

  draw();
  fit();
  document.body.dataset.pinned = 0;
  document.body.dataset.ready = "1";
})();
"""
