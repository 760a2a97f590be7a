// messnetz public page: the map, a device's values and charts, and the citizens' forms.
// Plain JavaScript, no libraries; the server-rendered tables work without it.
"use strict";
(function () {
  var cfg = JSON.parse(document.getElementById("page-data").textContent);
  var W = cfg.i18n.words, Q = cfg.i18n.quantities, lang = cfg.i18n.lang;
  var devices = cfg.devices;
  var SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fill(s, vars) { return s.replace(/\{(\w+)\}/g, function (_, k) { return vars[k] !== undefined ? vars[k] : ""; }); }
  function qname(q) { return (Q[q] || q + "|").split("|")[0]; }
  function qunit(q) { return (Q[q] || "|").split("|")[1]; }
  function num(v) {
    var s = String(Math.round(v * 100) / 100);
    return lang === "de" ? s.replace(".", ",") : s;
  }
  function withUnit(v, q) { var u = qunit(q); return num(v) + (u ? " " + u : ""); }
  function when(iso) { return iso.slice(0, 16).replace("T", " "); }
  function headline(d) {
    var r = d.readings.filter(function (r) { return r.quantity === "air_temperature"; })[0] || d.readings[0];
    return r ? withUnit(r.value, r.quantity) : "–";
  }
  function pointLabel(d) {
    return d.name + ", " + (d.source === "citizen" ? W.citizen : W.official) + ": " + headline(d) + (d.stale ? " (" + W.stale + ")" : "");
  }

  // ---- map: Web Mercator tiles (optional) with one button per device ----
  var map = document.getElementById("map");
  var points = {};
  function project(lat, lon, z) {
    var size = 256 * Math.pow(2, z), r = lat * Math.PI / 180;
    return { x: (lon + 180) / 360 * size, y: (1 - Math.log(Math.tan(r) + 1 / Math.cos(r)) / Math.PI) / 2 * size };
  }
  function drawMap() {
    map.textContent = "";
    var w = map.clientWidth || 600, h = map.clientHeight || 400;
    var placed = devices.filter(function (d) { return isFinite(d.lat) && isFinite(d.lon); });
    if (!placed.length) return;
    var z = 16;
    for (; z > 2; z--) {
      var ps = placed.map(function (d) { return project(d.lat, d.lon, z); });
      var xs = ps.map(function (p) { return p.x; }), ys = ps.map(function (p) { return p.y; });
      if (Math.max.apply(null, xs) - Math.min.apply(null, xs) < w - 80 && Math.max.apply(null, ys) - Math.min.apply(null, ys) < h - 60) break;
    }
    var all = placed.map(function (d) { return project(d.lat, d.lon, z); });
    var cx = (Math.min.apply(null, all.map(function (p) { return p.x; })) + Math.max.apply(null, all.map(function (p) { return p.x; }))) / 2;
    var cy = (Math.min.apply(null, all.map(function (p) { return p.y; })) + Math.max.apply(null, all.map(function (p) { return p.y; }))) / 2;
    var ox = cx - w / 2, oy = cy - h / 2;
    if (cfg.tiles) {
      var layer = el("div", { "aria-hidden": "true" });
      var n = Math.pow(2, z);
      for (var tx = Math.floor(ox / 256); tx <= Math.floor((ox + w) / 256); tx++) {
        for (var ty = Math.max(0, Math.floor(oy / 256)); ty <= Math.min(n - 1, Math.floor((oy + h) / 256)); ty++) {
          var img = el("img", { "class": "tile", alt: "", loading: "lazy", decoding: "async",
            src: cfg.tiles.replace("{z}", z).replace("{x}", ((tx % n) + n) % n).replace("{y}", ty) });
          img.style.left = (tx * 256 - ox) + "px";
          img.style.top = (ty * 256 - oy) + "px";
          img.onerror = function () { this.remove(); };
          layer.appendChild(img);
        }
      }
      map.appendChild(layer);
    }
    placed.forEach(function (d) {
      var p = project(d.lat, d.lon, z);
      var b = el("button", { type: "button", "class": "point" + (d.source === "citizen" ? " citizen" : "") + (d.stale ? " stale" : ""),
        "aria-label": pointLabel(d), "aria-pressed": "false", "data-device": d.id }, headline(d));
      b.style.left = (p.x - ox) + "px";
      b.style.top = (p.y - oy) + "px";
      b.addEventListener("click", function () { show(d.id, b); });
      points[d.id] = b;
      map.appendChild(b);
    });
  }

  // ---- a device: latest values, charts of 24 h / 7 d, downloads, licence ----
  var section = document.getElementById("device"), title = document.getElementById("device-title"), body = document.getElementById("device-body");
  var opener = null, current = null, range = "24h";

  function chartUrl(d, q, hours, format) {
    var last = Math.max.apply(null, d.readings.map(function (r) { return Date.parse(r.time); }));
    var to = new Date(Math.ceil((last + 1) / 3600000) * 3600000), from = new Date(to.getTime() - hours * 3600000);
    return "/v1/aggregates?device=" + encodeURIComponent(d.id) + "&quantity=" + q + "&interval=1h&from=" +
      from.toISOString().replace(".000", "") + "&to=" + to.toISOString().replace(".000", "") + (format ? "&format=" + format : "");
  }

  function drawChart(box, d, q, hours, data) {
    var pts = (data.points || []).filter(function (p) { return p.mean !== null; });
    var id = "c-" + q + "-" + hours;
    box.textContent = "";
    box.appendChild(el("h3", { id: id + "-h" }, qname(q) + (qunit(q) ? " (" + qunit(q) + ")" : "")));
    if (!pts.length) { box.appendChild(el("p", {}, W.nodata)); return; }
    var means = pts.map(function (p) { return p.mean; });
    var lo = Math.min.apply(null, pts.map(function (p) { return p.min; })), hi = Math.max.apply(null, pts.map(function (p) { return p.max; }));
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    var t0 = Date.parse(data.from), t1 = Date.parse(data.to), W0 = 600, H0 = 200, L = 56, R = 10, T = 10, B = 28;
    function x(t) { return L + (t - t0) / (t1 - t0) * (W0 - L - R); }
    function y(v) { return T + (hi - v) / (hi - lo) * (H0 - T - B); }
    var mean = means.reduce(function (a, b) { return a + b; }, 0) / means.length;
    var s = svg("svg", { viewBox: "0 0 " + W0 + " " + H0, role: "img", "aria-labelledby": id + "-t " + id + "-d" });
    s.appendChild(svg("title", { id: id + "-t" }, qname(q)));
    s.appendChild(svg("desc", { id: id + "-d" }, fill(W.chart, { q: qname(q), range: hours === 24 ? W.h24 : W.d7, to: when(data.to),
      mean: num(mean), min: num(lo), max: num(hi), unit: qunit(q) })));
    var half = 1800000;
    var band = pts.map(function (p) { return x(Date.parse(p.start) + half) + "," + y(p.max); })
      .concat(pts.slice().reverse().map(function (p) { return x(Date.parse(p.start) + half) + "," + y(p.min); }));
    s.appendChild(svg("polygon", { "class": "band", points: band.join(" ") }));
    var line = pts.map(function (p, i) { return (i ? "L" : "M") + x(Date.parse(p.start) + half).toFixed(1) + " " + y(p.mean).toFixed(1); }).join(" ");
    if (pts.length === 1) line += " h2";
    s.appendChild(svg("path", { "class": "line", d: line }));
    pts.forEach(function (p) { s.appendChild(svg("circle", { cx: x(Date.parse(p.start) + half), cy: y(p.mean), r: 2.5, fill: "#0b4f8a" })); });
    s.appendChild(svg("line", { "class": "axis", x1: L, y1: T, x2: L, y2: H0 - B }));
    s.appendChild(svg("line", { "class": "axis", x1: L, y1: H0 - B, x2: W0 - R, y2: H0 - B }));
    [hi, (hi + lo) / 2, lo].forEach(function (v) { s.appendChild(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, num(v))); });
    s.appendChild(svg("text", { x: L, y: H0 - 8 }, when(data.from)));
    s.appendChild(svg("text", { x: W0 - R, y: H0 - 8, "text-anchor": "end" }, when(data.to)));
    var fig = el("figure", { "class": "chart" });
    fig.appendChild(s);
    box.appendChild(fig);
    var links = el("p", {}, W.download + ": ");
    links.appendChild(el("a", { href: chartUrl(d, q, hours, "csv"), download: d.id + "-" + q + ".csv" }, "CSV"));
    links.appendChild(document.createTextNode(" · "));
    links.appendChild(el("a", { href: chartUrl(d, q, hours), type: "application/json" }, "JSON"));
    box.appendChild(links);
  }

  function charts(d) {
    var holder = document.getElementById("charts");
    holder.textContent = "";
    var hours = range === "24h" ? 24 : 168;
    d.readings.filter(function (r) { return r.quantity.indexOf("battery_") !== 0; }).forEach(function (r) {
      var box = el("div", { "class": "chart-box", "data-quantity": r.quantity });
      holder.appendChild(box);
      fetch(chartUrl(d, r.quantity, hours)).then(function (res) { return res.ok ? res.json() : { points: [] }; })
        .then(function (data) { drawChart(box, d, r.quantity, hours, data); })
        .catch(function () { drawChart(box, d, r.quantity, hours, { points: [] }); });
    });
  }

  function show(id, from) {
    var d = devices.filter(function (x) { return x.id === id; })[0];
    if (!d) return;
    opener = from || document.activeElement;
    current = d;
    Object.keys(points).forEach(function (k) { points[k].setAttribute("aria-pressed", k === id ? "true" : "false"); });
    title.textContent = d.name + (d.source === "citizen" ? " – " + W.citizen : "");
    body.textContent = "";
    var meta = el("p", {}, W.district + ": " + d.district + " · " + W.source + ": " + (d.source === "citizen" ? W.citizen : W.official) +
      " · " + (d.stale ? W.stale : W.current) + (d.last_seen ? " (" + when(d.last_seen) + " UTC)" : ""));
    body.appendChild(meta);
    var list = el("ul", { "class": "values" });
    d.readings.forEach(function (r) {
      var li = el("li", { "data-quantity": r.quantity });
      li.appendChild(document.createTextNode(qname(r.quantity) + ": "));
      li.appendChild(el("strong", {}, withUnit(r.value, r.quantity)));
      li.appendChild(document.createTextNode(" (" + (W[r.quality] || r.quality) + ", " + when(r.time) + " UTC)"));
      list.appendChild(li);
    });
    body.appendChild(list);
    var controls = el("div", { "class": "controls", role: "group", "aria-label": W.range });
    ["24h", "7d"].forEach(function (k) {
      var b = el("button", { type: "button", "aria-pressed": String(range === k), "data-range": k }, k === "24h" ? W.h24 : W.d7);
      b.addEventListener("click", function () {
        range = k;
        controls.querySelectorAll("button[data-range]").forEach(function (o) { o.setAttribute("aria-pressed", String(o === b)); });
        charts(d);
      });
      controls.appendChild(b);
    });
    var close = el("button", { type: "button", id: "device-close" }, W.close);
    close.addEventListener("click", hide);
    controls.appendChild(close);
    body.appendChild(controls);
    body.appendChild(el("div", { id: "charts", "aria-live": "polite" }));
    var lic = el("p", {}, W.licence + ": ");
    lic.appendChild(d.licence_uri ? el("a", { href: d.licence_uri }, d.licence) : document.createTextNode(d.licence));
    body.appendChild(lic);
    section.hidden = false;
    charts(d);
    title.focus();
  }

  function hide() {
    section.hidden = true;
    Object.keys(points).forEach(function (k) { points[k].setAttribute("aria-pressed", "false"); });
    if (opener && opener.focus) opener.focus();
    current = null;
  }
  document.addEventListener("keydown", function (e) { if (e.key === "Escape" && current) hide(); });
  document.querySelectorAll("a.device-link").forEach(function (a) {
    a.addEventListener("click", function (e) { e.preventDefault(); show(a.getAttribute("data-device"), a); });
  });

  // ---- citizens: register and delete without leaving the page ----
  function report(box, ok, nodes) {
    box.textContent = "";
    var p = el("p", { "class": ok ? "" : "q-bad" });
    nodes.forEach(function (n) { p.appendChild(typeof n === "string" ? document.createTextNode(n) : n); });
    box.appendChild(p);
  }
  var reg = document.getElementById("register-form");
  if (reg) {
    reg.addEventListener("submit", function (e) {
      e.preventDefault();
      var f = new FormData(reg), out = document.getElementById("register-result");
      var n = function (k) { return parseFloat(String(f.get(k)).replace(",", ".")); };
      fetch("/v1/citizens/sensors", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name: f.get("name"), lat: n("lat"), lon: n("lon"), district: f.get("district") || null }) })
        .then(function (res) { return res.json().then(function (j) { return [res.ok, j]; }); })
        .then(function (r) {
          if (r[0]) report(out, true, [W.registered + ". " + W.sensor_id + ": ", el("code", {}, r[1].id), ". " + W.token + ": ", el("code", {}, r[1].token), ". " + W.token_note]);
          else report(out, false, [W.failed + " " + r[1].error]);
        })
        .catch(function (err) { report(out, false, [W.failed + " " + err]); });
    });
  }
  var del = document.getElementById("delete-form");
  if (del) {
    del.addEventListener("submit", function (e) {
      e.preventDefault();
      var f = new FormData(del), out = document.getElementById("delete-result");
      fetch("/v1/citizens/sensors/" + encodeURIComponent(f.get("id")), { method: "DELETE", headers: { Authorization: "Bearer " + f.get("token") } })
        .then(function (res) { return res.json().then(function (j) { return [res.ok, j]; }); })
        .then(function (r) { report(out, r[0], [r[0] ? W.deleted : W.failed + " " + r[1].error]); })
        .catch(function (err) { report(out, false, [W.failed + " " + err]); });
    });
  }

  drawMap();
  var resized = null;
  window.addEventListener("resize", function () { clearTimeout(resized); resized = setTimeout(drawMap, 200); });
})();
