// The visloc server's page: plain JavaScript, no build step, nothing loaded from elsewhere.
// It asks the server (relative URLs, so it also works behind a reverse proxy under a prefix):
//   GET v1/health, GET v1/map, GET v1/images/NAME (thumbnails), POST v1/localize (details=true).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const state = {
  map: null,        // GET v1/map
  answer: null,     // the last POST v1/localize answer
  file: null,       // the photo
  queryUrl: null,   // its object URL
  querySize: null,  // [width, height] as displayed (EXIF orientation applied, as the server does)
  selected: null,   // the database image shown in the match view
  thumbs: new Map() // name -> Promise of an object URL
};

// --- HTTP --------------------------------------------------------------------------------------------
function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  } catch (e) {
    throw new Error("the server cannot be reached (" + e.message + ")");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON */ }
    const error = new Error("HTTP " + response.status + ": " + detail);
    error.status = response.status;
    throw error;
  }
  return response;
}

function thumbnail(name, size = 320) {
  const key = name + "@" + size;
  if (!state.thumbs.has(key)) {
    const url = "v1/images/" + name.split("/").map(encodeURIComponent).join("/") + "?size=" + size;
    const promise = api(url).then((r) => r.blob()).then((blob) => URL.createObjectURL(blob));
    promise.catch(() => state.thumbs.delete(key));
    state.thumbs.set(key, promise);
  }
  return state.thumbs.get(key);
}

// --- messages ----------------------------------------------------------------------------------------
function message(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = "message " + kind;
  box.hidden = !text;
}

function fmt(values, digits = 4) {
  return values.map((v) => v.toFixed(digits)).join(" ");
}

// --- health and map ----------------------------------------------------------------------------------
async function loadHealth() {
  const badge = $("health");
  let body = null;
  try {
    const response = await fetch("v1/health");
    body = await response.json();
  } catch (e) {
    badge.textContent = "server unreachable";
    badge.className = "badge error";
    setTimeout(loadHealth, 2000);
    return;
  }
  if (body.status === "ready") {
    const e = body.engine || {};
    badge.textContent = "map " + (e.map ?? "?") + " · " + (e.images ?? "?") + " images · " + (e.method ?? "");
    badge.className = "badge ok";
    loadMap();
  } else if (body.status === "loading") {
    badge.textContent = "map loading…";
    badge.className = "badge warn";
    setTimeout(loadHealth, 1000);
  } else {
    badge.textContent = "map failed to load: " + (body.detail || "");
    badge.className = "badge error";
  }
}

async function loadMap() {
  try {
    state.map = await (await api("v1/map")).json();
    $("map-info").textContent = state.map.images.length + " database cameras"
      + (state.map.has_poses ? "" : " (retrieval-only map: no poses)");
  } catch (e) {
    state.map = null;
    $("map-info").textContent = e.status === 401 ? "enter the server's token to see the map" : e.message;
  }
  drawTopView();
}

// --- the photo ---------------------------------------------------------------------------------------
function chooseFile(file) {
  if (!file) return;
  if (!/^image\/(jpeg|png)$/.test(file.type) && !/\.(jpe?g|png)$/i.test(file.name)) {
    message("not a JPEG or PNG file: " + file.name, "error");
    return;
  }
  state.file = file;
  if (state.queryUrl) URL.revokeObjectURL(state.queryUrl);
  state.queryUrl = URL.createObjectURL(file);
  const preview = $("query-preview");
  preview.onload = () => {
    state.querySize = [preview.naturalWidth, preview.naturalHeight];
    $("drop-text").textContent = file.name + " (" + preview.naturalWidth + "×" + preview.naturalHeight + ")";
    $("localize").disabled = false;
    localize();
  };
  preview.onerror = () => message("the browser cannot show this image: " + file.name, "error");
  preview.src = state.queryUrl;
  preview.hidden = false;
}

function intrinsics(form) {
  const line = $("camera").value.trim();
  const focal = $("focal").value.trim();
  if (line) {
    form.append("camera", line);
  } else if (focal) {
    const [w, h] = state.querySize;
    form.append("model", "SIMPLE_PINHOLE");
    form.append("width", String(w));
    form.append("height", String(h));
    form.append("params", [focal, (w - 1) / 2, (h - 1) / 2].join(" "));
  }
}

async function localize() {
  if (!state.file || !state.querySize) return;
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  intrinsics(form);
  if ($("method").value) form.append("method", $("method").value);
  form.append("name", state.file.name);
  form.append("details", "true");
  document.body.dataset.state = "localizing";
  $("localize").disabled = true;
  message("localizing…", "info");
  try {
    const answer = await (await api("v1/localize", { method: "POST", body: form })).json();
    state.answer = answer;
    showAnswer(answer);
    document.body.dataset.state = "done";
  } catch (e) {
    state.answer = null;
    message(e.message, "error");
    $("pose").hidden = true;
    $("retrieved-panel").hidden = true;
    $("matches-panel").hidden = true;
    drawTopView();
    document.body.dataset.state = "error";
  } finally {
    $("localize").disabled = false;
  }
}

// --- the answer --------------------------------------------------------------------------------------
function showAnswer(a) {
  if (a.localized) {
    message("localized with " + a.num_inliers + " inliers, supported by " + a.support.length + " image(s)", "ok");
  } else {
    message("not localized: " + (a.reason || a.status), "warn");
  }
  $("pose").hidden = false;
  $("pose-status").textContent = a.localized ? "localized" : "not localized (" + (a.reason || a.status) + ")";
  $("pose-method").textContent = a.method;
  $("pose-qvec").textContent = a.pose ? fmt(a.pose.qvec) : "–";
  $("pose-tvec").textContent = a.pose ? fmt(a.pose.tvec) : "–";
  $("pose-center").textContent = a.pose ? fmt(a.pose.center) : "–";
  $("pose-inliers").textContent = a.num_inliers + " (support: " + a.support.length + " of " + a.retrieved.length + ")";
  const c = a.camera;
  $("pose-camera").textContent = [c.model, c.width, c.height, ...c.params.map((p) => +p.toFixed(3))].join(" ")
    + " (" + c.source + ")";
  $("pose-time").textContent = (a.timings.total * 1000).toFixed(0) + " ms";
  const withPairs = (a.details?.images || []).filter((d) => d.pairs.length);
  const best = withPairs.find((d) => d.support) || withPairs[0];
  state.selected = best ? best.name : (a.retrieved[0]?.name ?? null);
  showRetrieved(a);
  drawTopView();
  drawMatches();
}

function showRetrieved(a) {
  const box = $("retrieved");
  box.replaceChildren();
  const details = new Map((a.details?.images || []).map((d) => [d.name, d]));
  a.retrieved.forEach((r, i) => {
    const card = document.createElement("figure");
    card.className = "card" + (a.support.includes(r.name) ? " support" : "") + (r.name === state.selected ? " selected" : "");
    card.dataset.name = r.name;
    card.title = r.name;
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = r.name;
    thumbnail(r.name).then((url) => { img.src = url; }, (e) => { img.alt = e.message; card.classList.add("broken"); });
    const caption = document.createElement("figcaption");
    const parts = ["#" + (i + 1), "score " + r.score.toFixed(3)];
    if (r.matches != null) parts.push(r.matches + " matches");
    if (r.inliers != null) parts.push(r.inliers + " inliers");
    caption.append(parts.join(" · "), document.createElement("br"));
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = r.name;
    caption.append(name);
    card.append(img, caption);
    if (details.has(r.name)) {
      card.addEventListener("click", () => select(r.name));
    } else {
      card.classList.add("nomatch");
    }
    box.append(card);
  });
  $("retrieved-panel").hidden = a.retrieved.length === 0;
}

function select(name) {
  state.selected = name;
  for (const card of $("retrieved").children) card.classList.toggle("selected", card.dataset.name === name);
  drawTopView();
  drawMatches();
}

// --- top view ----------------------------------------------------------------------------------------
function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.append(node);
  return node;
}

function dot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
function cross(a, b) { return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]; }
function unit(a) { const n = Math.hypot(...a) || 1; return a.map((v) => v / n); }

// The horizontal axes (e1, e2) of a view looking down the map's up axis (+z: e1 = x, e2 = y).
function planeAxes(up) {
  up = unit(up);
  const a = Math.abs(up[0]) < 0.9 ? [1, 0, 0] : [0, 1, 0];
  const e1 = unit(a.map((v, i) => v - dot(a, up) * up[i]));
  return [e1, cross(up, e1)];
}

// The camera's viewing direction (its +z) in the world from a world-to-camera quaternion: R's third row.
function viewingDirection(q) {
  const [w, x, y, z] = q;
  return [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)];
}

function drawTopView() {
  const svg = $("topview");
  svg.replaceChildren();
  const W = 640, H = 480, pad = 28;
  const map = state.map;
  if (!map) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent = "no map to show";
    return;
  }
  const [e1, e2] = planeAxes(map.up);
  const cams = map.images.filter((m) => m.center);
  const a = state.answer;
  const query = a && a.pose ? { center: a.pose.center, direction: viewingDirection(a.pose.qvec) } : null;
  const pts = cams.map((m) => [dot(m.center, e1), dot(m.center, e2)]);
  const qpt = query ? [dot(query.center, e1), dot(query.center, e2)] : null;
  const all = qpt ? [...pts, qpt] : pts;
  if (!all.length) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent =
      "the map's images have no poses";
    return;
  }
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [x, y] of all) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const span = Math.max(x1 - x0, y1 - y0, 1e-6);
  const scale = Math.min((W - 2 * pad) / Math.max(x1 - x0, span * 0.05), (H - 2 * pad) / Math.max(y1 - y0, span * 0.05));
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const X = (x) => W / 2 + (x - cx) * scale;
  const Y = (y) => H / 2 - (y - cy) * scale;  // the second axis points up on the screen
  const tick = 14;

  // a scale bar: the largest power of ten under a quarter of the width
  const metres = Math.pow(10, Math.floor(Math.log10((W / 4) / scale)));
  const bar = el("g", { class: "scalebar" }, svg);
  el("line", { x1: pad, y1: H - 10, x2: pad + metres * scale, y2: H - 10 }, bar);
  el("text", { x: pad + metres * scale + 6, y: H - 6 }, bar).textContent = metres + " m";
  el("text", { x: W - 8, y: H - 6, "text-anchor": "end", class: "axes" }, svg).textContent =
    (map.up[2] > 0.9 ? "x →  y ↑" : "top view") + " (looking down)";

  const retrieved = new Map((a?.retrieved || []).map((r, i) => [r.name, i + 1]));
  const support = new Set(a?.support || []);
  const layer = el("g", { id: "db-cameras" }, svg);
  const front = el("g", {}, svg);
  cams.forEach((m, i) => {
    const [px, py] = [X(pts[i][0]), Y(pts[i][1])];
    const d = [dot(m.direction, e1), dot(m.direction, e2)];
    const classes = ["db-camera"];
    if (retrieved.has(m.name)) classes.push("retrieved");
    if (support.has(m.name)) classes.push("support");
    if (m.name === state.selected) classes.push("selected");
    const g = el("g", { class: classes.join(" "), "data-name": m.name }, retrieved.has(m.name) ? front : layer);
    el("title", {}, g).textContent = m.name + (retrieved.has(m.name) ? " (retrieved #" + retrieved.get(m.name) + ")" : "");
    el("line", { class: "tick", x1: px, y1: py, x2: px + d[0] * tick, y2: py - d[1] * tick }, g);
    el("circle", { cx: px, cy: py, r: retrieved.has(m.name) ? 4.5 : 3 }, g);
    if (retrieved.has(m.name)) g.addEventListener("click", () => select(m.name));
  });

  if (query) {
    const [qx, qy] = [X(qpt[0]), Y(qpt[1])];
    for (const name of support) {
      const i = cams.findIndex((m) => m.name === name);
      if (i >= 0) el("line", { class: "support-link", x1: qx, y1: qy, x2: X(pts[i][0]), y2: Y(pts[i][1]) }, front);
    }
    const d = [dot(query.direction, e1), dot(query.direction, e2)];
    const n = Math.hypot(d[0], d[1]) || 1;
    const ang = Math.atan2(-d[1] / n, d[0] / n), half = 0.45, len = 34 * Math.max(n, 0.3);
    const g = el("g", { id: "query-camera" }, svg);
    el("title", {}, g).textContent = "the photo: centre " + fmt(a.pose.center, 3);
    el("path", {
      class: "frustum",
      d: `M ${qx} ${qy} L ${qx + len * Math.cos(ang - half)} ${qy + len * Math.sin(ang - half)} `
        + `L ${qx + len * Math.cos(ang + half)} ${qy + len * Math.sin(ang + half)} Z`
    }, g);
    el("circle", { cx: qx, cy: qy, r: 6 }, g);
  }
}

// --- match view --------------------------------------------------------------------------------------
async function drawMatches() {
  const svg = $("match-view");
  const a = state.answer;
  const panel = $("matches-panel");
  const detail = (a?.details?.images || []).find((d) => d.name === state.selected);
  if (!a || !state.queryUrl) { panel.hidden = true; return; }
  panel.hidden = false;
  svg.replaceChildren();
  if (!detail) {
    $("match-info").textContent = a.details && a.details.images.length === 0
      ? "(the server gave no matches for this query)" : "";
    svg.setAttribute("viewBox", "0 0 800 40");
    el("text", { x: 10, y: 24, class: "empty" }, svg).textContent = "no matches to show";
    return;
  }
  const drawn = state.selected;
  const url = await thumbnail(detail.name, 640).catch(() => null);
  if (state.selected !== drawn) return;  // another image was chosen meanwhile
  const H = 300, gap = 16;
  const [qw, qh] = state.querySize;
  const [dw, dh] = detail.size;
  const sq = H / qh, sd = H / dh;
  const Wq = qw * sq, Wd = dw * sd;
  svg.setAttribute("viewBox", `0 0 ${Wq + gap + Wd} ${H}`);
  el("image", { href: state.queryUrl, x: 0, y: 0, width: Wq, height: H, preserveAspectRatio: "none" }, svg);
  if (url) el("image", { href: url, x: Wq + gap, y: 0, width: Wd, height: H, preserveAspectRatio: "none" }, svg);
  const all = $("show-all").checked;
  const lines = el("g", { class: "lines" }, svg);
  let shown = 0;
  for (const [x0, y0, x1, y1, agree] of detail.pairs) {
    if (agree === 0 && !all) continue;
    const kind = agree === 1 ? "agree" : agree === 0 ? "disagree" : "unknown";
    el("line", {
      class: "match " + kind,
      x1: (x0 + 0.5) * sq, y1: (y0 + 0.5) * sq, x2: Wq + gap + (x1 + 0.5) * sd, y2: (y1 + 0.5) * sd
    }, lines);
    shown += 1;
  }
  const agreeing = detail.agree == null ? "" : ", " + detail.agree + " agree with the pose";
  $("match-info").textContent = "the photo ↔ #" + detail.rank + " " + detail.name + ": " + detail.matches
    + " matches" + agreeing + "; " + shown + " drawn (at most " + a.details.max_pairs + ")";
}

// --- wiring ------------------------------------------------------------------------------------------
function init() {
  const saved = sessionStorage.getItem("visloc-token");
  if (saved) $("token").value = saved;
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("visloc-token", $("token").value.trim());
    state.thumbs.clear();
    loadMap();
  });
  $("file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
  $("localize").addEventListener("click", localize);
  $("show-all").addEventListener("change", drawMatches);
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); chooseFile(e.dataTransfer.files[0]); });
  // a photo dropped next to the zone must not make the browser navigate away
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  drawTopView();
  loadHealth();
}

init();
