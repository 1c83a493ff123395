"""The viewer page's stylesheet and script, inlined into every ``circuit.html`` (no network).

The script reads the view (``acdc_engine.viewer.data``) from the page's ``<script id="view">``
element and draws it as SVG: nodes ranked bottom (input) to top (logits), edges as curves entering
a head's q, k or v side, width growing with |value|. Pan by dragging, zoom with the wheel (or the
buttons), hover an edge or node for its details, filter edges by |value| with the slider, show or
hide edge states with the legend's boxes, search nodes by name. When drawn it sets
``data-ready="1"`` and ``data-nodes``/``data-edges`` (what is visible) on ``<body>``; a script error
sets ``data-error``.
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
.controls button { padding: 1px 8px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; margin-top: 6px; color: #333; }
.legend .swatch { display: inline-block; width: 22px; height: 0; border-top: 3px solid; vertical-align: middle; margin-right: 4px; }
.legend .swatch.faint { border-top-style: dashed; opacity: .6; }
.note { color: #a04000; margin-top: 4px; }
main { flex: 1; position: relative; overflow: hidden; background: #fff; }
svg#canvas { width: 100%; height: 100%; cursor: grab; display: block; }
svg#canvas.panning { cursor: grabbing; }
.edge { fill: none; stroke-linecap: round; }
.edge.faint { stroke-dasharray: 5 4; opacity: .35; }
.edge.dim, .node.dim { opacity: .08; }
.hit { fill: none; stroke: transparent; stroke-width: 9; cursor: pointer; }
.hit:hover + .edge, .edge.hover { stroke-width: 4 !important; opacity: 1 !important; }
.node rect { stroke: #555; stroke-width: 1; }
.node text { font-size: 11px; text-anchor: middle; dominant-baseline: central; pointer-events: none; }
.node.hit-node rect { stroke: #000; stroke-width: 3; }
.node.idle { opacity: .25; }
#tip { position: absolute; pointer-events: none; background: rgba(255,255,255,.96); border: 1px solid #999; border-radius: 4px;
       padding: 5px 8px; box-shadow: 0 1px 4px rgba(0,0,0,.2); display: none; white-space: nowrap; font-size: 12px; }
#tip b { font-weight: 600; }
"""

JS = r"""
(function () {
  "use strict";
  window.addEventListener("error", function (e) { document.body.dataset.error = String(e.message || e); });
  var view = JSON.parse(document.getElementById("view").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var svg = document.getElementById("canvas"), port = document.getElementById("viewport");
  var edgeLayer = document.getElementById("edges"), nodeLayer = document.getElementById("nodes");
  var tip = document.getElementById("tip");
  var X = 76, Y = 66, H = 22;               // column width, rank height, node height
  var shown = view.states.map(function (s) { return s.shown; });
  var minValue = 0, query = "";
  var nodes = view.nodes.map(function (n, i) {
    return { i: i, name: n[0], kind: n[1], rank: n[2], order: n[3], state: n[4], w: Math.max(40, 7 * n[0].length + 14) };
  });
  var edges = view.edges.map(function (e, i) {
    var values = [e[4], e[5]].filter(function (v) { return v !== null && v !== undefined; });
    var size = values.length ? Math.max.apply(null, values.map(Math.abs)) : null;
    return { i: i, s: nodes[e[0]], t: nodes[e[1]], input: e[2], state: e[3], a: e[4], b: e[5], size: size };
  });
  var largest = Math.max.apply(null, [0].concat(edges.map(function (e) { return e.size || 0; })));

  function el(tag, attrs, parent) {
    var x = document.createElementNS(NS, tag);
    for (var k in attrs) x.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(x);
    return x;
  }
  function fmt(v) { return v === null || v === undefined ? "not tested" : (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : +v.toPrecision(4)); }
  function edgeName(e) { return e.s.name + "->" + e.t.name + (e.input ? "<" + e.input + ">" : ""); }
  function colour(e) { return view.colourBy === "input" ? view.colours[e.input || "other"] : view.states[e.state].colour; }

  // ----- layout: ranks bottom (input) to top (logits), nodes of a rank side by side -------------
  var placed = [];
  function layout() {
    var drawn = {};
    edges.forEach(function (e) { if (shown[e.state]) { drawn[e.s.i] = true; drawn[e.t.i] = true; } });
    placed = nodes.filter(function (n) { return drawn[n.i]; });
    if (!placed.length) placed = nodes.slice();
    var ranks = {};
    placed.forEach(function (n) { (ranks[n.rank] = ranks[n.rank] || []).push(n); });
    var used = Object.keys(ranks).map(Number).sort(function (a, b) { return b - a; });  // top (logits) first; empty ranks take no room
    used.forEach(function (r, level) {
      var row = ranks[r].sort(function (a, b) { return a.order - b.order || (a.name < b.name ? -1 : 1); });
      var width = row.reduce(function (sum, n) { return sum + Math.max(X, n.w + 12); }, 0), x = -width / 2;
      row.forEach(function (n) { var w = Math.max(X, n.w + 12); n.x = x + w / 2; x += w; n.y = level * Y; });
    });
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
      var hit = el("path", { d: d, "class": "hit" }, edgeLayer);
      var path = el("path", { d: d, "class": "edge" + (view.states[e.state].faint ? " faint" : ""), stroke: colour(e), "stroke-width": width.toFixed(2) }, edgeLayer);
      hit.addEventListener("mousemove", function (ev) { showTip(ev, edgeTip(e)); });
      hit.addEventListener("mouseleave", hideTip);
      edgeEls.push({ e: e, path: path, hit: hit });
    });
    placed.forEach(function (n) {
      var g = el("g", { "class": "node", transform: "translate(" + n.x + "," + n.y + ")" }, nodeLayer);
      var fill = n.state >= 0 && view.states[n.state].fill ? view.states[n.state].fill : view.fills[n.kind];
      el("rect", { x: -n.w / 2, y: -H / 2, width: n.w, height: H, rx: n.kind === "head" ? 11 : 3, fill: fill }, g);
      el("text", {}, g).textContent = n.name;
      g.addEventListener("mousemove", function (ev) { showTip(ev, nodeTip(n)); });
      g.addEventListener("mouseleave", hideTip);
      nodeEls[n.i] = g;
    });
    filter();
  }

  // ----- filters: |value| slider, states, search -------------------------------------------------
  var sizes = edges.map(function (e) { return e.size; }).filter(function (v) { return v !== null; })
                   .map(Math.abs).sort(function (a, b) { return a - b; });
  var slider = document.getElementById("slider"), sliderText = document.getElementById("slider-text");
  slider.max = Math.max(0, sizes.length - 1);
  function filter() {
    var visible = 0, live = {}, hits = {}, near = {}, count = 0;
    var q = query.toLowerCase();
    placed.forEach(function (n) { if (q && n.name.toLowerCase().indexOf(q) >= 0) { hits[n.i] = near[n.i] = true; count++; } });
    edgeEls.forEach(function (x) {
      var on = x.e.size === null || Math.abs(x.e.size) >= minValue;
      x.path.style.display = x.hit.style.display = on ? "" : "none";
      if (on) { visible++; live[x.e.s.i] = live[x.e.t.i] = true; }
      var touches = hits[x.e.s.i] || hits[x.e.t.i];
      if (touches) near[x.e.s.i] = near[x.e.t.i] = true;
      x.path.classList.toggle("dim", !!q && !touches);
    });
    placed.forEach(function (n) {
      nodeEls[n.i].classList.toggle("hit-node", !!hits[n.i]);
      nodeEls[n.i].classList.toggle("idle", !live[n.i]);
      nodeEls[n.i].classList.toggle("dim", !!q && !near[n.i]);
    });
    sliderText.textContent = "|" + view.values[0].split(" ")[0] + "| \u2265 " + fmt(minValue) + ": " + visible + " of " + edgeEls.length + " edges";
    document.getElementById("search-count").textContent = q ? count + " node" + (count === 1 ? "" : "s") : "";
    document.body.dataset.nodes = placed.length;
    document.body.dataset.edges = visible;
  }
  slider.addEventListener("input", function () { minValue = sizes.length && +slider.value > 0 ? sizes[+slider.value] : 0; filter(); });
  var search = document.getElementById("search");
  search.addEventListener("input", function () { query = search.value.trim(); filter(); });
  search.addEventListener("keydown", function (ev) {
    if (ev.key !== "Enter") return;
    var hit = placed.filter(function (n) { return query && n.name.toLowerCase().indexOf(query.toLowerCase()) >= 0; })[0];
    if (hit) { zoom.k = Math.max(zoom.k, 1.5); zoom.x = svg.clientWidth / 2 - hit.x * zoom.k; zoom.y = svg.clientHeight / 2 - hit.y * zoom.k; apply(); }
  });

  // ----- legend with a box per state ----------------------------------------------------------------
  var legend = document.getElementById("legend");
  function swatch(c, faint, text) {
    var span = document.createElement("span");
    span.innerHTML = '<span class="swatch' + (faint ? " faint" : "") + '" style="border-color:' + c + '"></span>';
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
    var rows = ["<b>" + edgeName(e).replace(/</g, "&lt;") + "</b>", view.states[e.state].label];
    rows.push(view.values[0] + ": " + fmt(e.a));
    if (view.values[1]) rows.push(view.values[1] + ": " + fmt(e.b));
    return rows.join("<br>");
  }
  function nodeTip(n) {
    var into = 0, out = 0;
    edgeEls.forEach(function (x) { if (x.path.style.display !== "none") { if (x.e.t === n) into++; if (x.e.s === n) out++; } });
    var rows = ["<b>" + n.name + "</b>", into + " edges in, " + out + " out"];
    if (n.state >= 0) rows.push(view.states[n.state].label);
    return rows.join("<br>");
  }
  function showTip(ev, html) {
    var box = svg.getBoundingClientRect();
    tip.innerHTML = html; tip.style.display = "block";
    tip.style.left = Math.min(ev.clientX - box.left + 14, box.width - tip.offsetWidth - 4) + "px";
    tip.style.top = (ev.clientY - box.top + 14) + "px";
  }
  function hideTip() { tip.style.display = "none"; }

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
  function zoomAt(factor, cx, cy) {
    var k = Math.min(20, Math.max(0.05, zoom.k * factor));
    zoom.x = cx - (cx - zoom.x) * k / zoom.k; zoom.y = cy - (cy - zoom.y) * k / zoom.k; zoom.k = k; apply();
  }
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var box = svg.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - box.left, ev.clientY - box.top);
  }, { passive: false });
  var drag = null;
  svg.addEventListener("mousedown", function (ev) { drag = [ev.clientX - zoom.x, ev.clientY - zoom.y]; svg.classList.add("panning"); });
  window.addEventListener("mousemove", function (ev) { if (drag) { zoom.x = ev.clientX - drag[0]; zoom.y = ev.clientY - drag[1]; apply(); } });
  window.addEventListener("mouseup", function () { drag = null; svg.classList.remove("panning"); });
  document.getElementById("fit").addEventListener("click", fit);
  document.getElementById("zoom-in").addEventListener("click", function () { zoomAt(1.25, svg.clientWidth / 2, svg.clientHeight / 2); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoomAt(0.8, svg.clientWidth / 2, svg.clientHeight / 2); });
  window.addEventListener("resize", fit);

  draw();
  fit();
  document.body.dataset.ready = "1";
})();
"""
