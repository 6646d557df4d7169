// attnlab head view: reads the JSON in #attn-data and draws one layer's heads as lines between
// the query tokens (left) and the key tokens (right). No dependencies, no network.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("attn-data").textContent);
  var COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var ROW = 18, TOP = 14, LEFT_X = 190, RIGHT_X = 470, SVG_NS = "http://www.w3.org/2000/svg";
  var layerSel = document.getElementById("layer");
  var headBox = document.getElementById("heads");
  var svg = document.getElementById("view");
  var status = document.getElementById("status");
  var note = document.getElementById("note");
  var state = { layer: 0, heads: [], byQ: [], byK: [], left: [], right: [] };

  function color(h) { return COLORS[h % COLORS.length]; }
  function el(name, attrs, text) {
    var e = document.createElementNS(SVG_NS, name);
    for (var a in attrs) { e.setAttribute(a, attrs[a]); }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function y(i) { return TOP + i * ROW; }

  D.layers.forEach(function (L, i) {
    var o = document.createElement("option");
    o.value = String(i);
    o.textContent = i + ": " + L.name + " (" + L.kind + ", " + L.mechanism + ")";
    layerSel.appendChild(o);
  });

  function buildHeads() {
    var L = D.layers[state.layer];
    headBox.innerHTML = "";
    state.heads = [];
    for (var h = 0; h < L.heads.length; h++) {
      state.heads.push(h);
      var lab = document.createElement("label");
      var box = document.createElement("input");
      box.type = "checkbox"; box.checked = true; box.id = "head-" + h; box.value = String(h);
      box.addEventListener("change", onHeads);
      var sw = document.createElement("span");
      sw.className = "swatch"; sw.style.background = color(h);
      lab.appendChild(box); lab.appendChild(sw);
      lab.appendChild(document.createTextNode("head " + h));
      headBox.appendChild(lab);
    }
  }

  function onHeads() {
    state.heads = [];
    headBox.querySelectorAll("input").forEach(function (b) {
      if (b.checked) { state.heads.push(Number(b.value)); }
    });
    draw();
  }

  function draw() {
    var L = D.layers[state.layer];
    var qTok = D.tokens[L.q], kTok = D.tokens[L.k];
    var n = Math.max(qTok.length, kTok.length);
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.setAttribute("height", String(TOP + n * ROW));
    svg.setAttribute("width", String(RIGHT_X + 200));
    svg.classList.remove("focus");
    var links = el("g", { id: "links" });
    svg.appendChild(links);
    state.byQ = qTok.map(function () { return []; });
    state.byK = kTok.map(function () { return []; });
    var shown = 0, total = 0;
    state.heads.forEach(function (h) {
      var H = L.heads[h];
      total += H.total;
      for (var t = 0; t < H.q.length; t++) {
        var w = Math.abs(H.w[t]);
        var line = el("line", {
          "class": "link", x1: LEFT_X + 6, y1: y(H.q[t]) - 4, x2: RIGHT_X - 6, y2: y(H.k[t]) - 4,
          stroke: color(h), "stroke-opacity": Math.min(1, 0.08 + w).toFixed(3),
          "stroke-width": (0.5 + 2.5 * w).toFixed(2), "data-h": h, "data-w": H.w[t]
        });
        line.dataset.q = H.q[t]; line.dataset.k = H.k[t];
        links.appendChild(line);
        state.byQ[H.q[t]].push(line);
        state.byK[H.k[t]].push(line);
        shown += 1;
      }
    });
    state.left = qTok.map(function (s, i) {
      var e = el("text", { "class": "tok left", x: LEFT_X, y: y(i), "text-anchor": "end",
                           "data-side": "left", "data-i": i }, s);
      svg.appendChild(e);
      return e;
    });
    state.right = kTok.map(function (s, i) {
      var e = el("text", { "class": "tok right", x: RIGHT_X, y: y(i), "text-anchor": "start",
                           "data-side": "right", "data-i": i }, s);
      svg.appendChild(e);
      return e;
    });
    var capped = shown < total ? " (each token's " + D.limits.per_query +
      " strongest links, at most " + D.limits.max_links + " per head)" : "";
    status.textContent = "layer " + L.name + ", heads [" + state.heads.join(", ") +
      "]: showing " + shown + " of " + total + " links" + capped +
      ". Hover a token to isolate it.";
    note.textContent = L.note;
  }

  function clearHover() {
    svg.classList.remove("focus");
    svg.querySelectorAll(".on, .hl, .active").forEach(function (e) {
      e.classList.remove("on", "hl", "active");
    });
  }

  function hover(side, i) {
    clearHover();
    var own = side === "left" ? state.left : state.right;
    var other = side === "left" ? state.right : state.left;
    var lines = side === "left" ? state.byQ[i] : state.byK[i];
    own[i].classList.add("active");
    svg.classList.add("focus");
    lines.forEach(function (line) {
      line.classList.add("on");
      var j = Number(side === "left" ? line.dataset.k : line.dataset.q);
      other[j].classList.add("hl");
    });
  }

  svg.addEventListener("mouseover", function (ev) {
    var t = ev.target;
    if (t.classList && t.classList.contains("tok")) {
      hover(t.getAttribute("data-side"), Number(t.getAttribute("data-i")));
    }
  });
  svg.addEventListener("mouseout", function (ev) {
    var t = ev.target;
    if (t.classList && t.classList.contains("tok")) { clearHover(); }
  });
  layerSel.addEventListener("change", function () {
    state.layer = Number(layerSel.value);
    buildHeads();
    draw();
  });
  var init = D.initial || { layer: 0, head: null };
  state.layer = init.layer;
  layerSel.value = String(init.layer);
  buildHeads();
  if (init.head !== null) {  // one head chosen on the command line: the others unchecked
    headBox.querySelectorAll("input").forEach(function (b) {
      b.checked = Number(b.value) === init.head;
    });
    state.heads = [init.head];
  }
  draw();
})();
