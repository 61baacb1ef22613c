// The ChunkyGAN editor page: views and overlays, segment selection, a region brush, region projection
// with progress and cancel, direction and StyleSpace sliders, undo/redo, Poisson compositing, export,
// a new direction fitted to samples the user labels, and the StyleSpace channels acting on a segment.
// The session token travels in an HttpOnly cookie that the editor set when the printed address was
// opened: the page never sees it, and no URL carries it. State-changing requests send JSON (or, for an
// uploaded direction, octet-stream) and the browser adds their Origin, which the editor checks.
"use strict";

const $ = (id) => document.getElementById(id);

let S = null;                 // the server's state
let R = 0;                    // image resolution
let labels = null;            // Uint8Array [R*R]: segment with the largest mask at each pixel
let selected = new Set();     // selected base segments (empty: all)
let target = "base";          // "base" or a region layer id
let regionImages = {};        // layer id -> HTMLImageElement of its region
let masksImage = null;
let painting = false;
let polling = null;
let currentUrl = null;

// ------------------------------------------------------------------------------------------ requests
async function api(path, { method = "GET", json, body, as = "json" } = {}) {
  const headers = {};
  if (method !== "GET") {
    headers["Content-Type"] = body !== undefined ? "application/octet-stream" : "application/json";
    if (body === undefined) body = JSON.stringify(json === undefined ? {} : json);
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body });
  } catch (e) {
    throw new Error("the editor does not answer (was it stopped?)");
  }
  if (!resp.ok) {
    let msg = `${resp.status} ${resp.statusText}`;
    try {
      const err = await resp.json();
      if (err && err.error) msg = err.error;
    } catch (e) { /* not JSON: keep the status line */ }
    throw new Error(msg);
  }
  return as === "blob" ? resp.blob() : resp.json();
}

function say(text, kind = "info") {
  const m = $("message");
  m.textContent = text;
  m.className = kind;
}

function fail(e) { say(e && e.message ? e.message : String(e), "error"); }

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("could not load " + url.split("?")[0]));
    img.src = url;
  });
}

// ------------------------------------------------------------------------------------------ state
function targetJson() {
  if (target !== "base") return { layer: target };
  if (selected.size === 0 || selected.size === S.segments) return { segments: "all" };
  return { segments: [...selected].sort((a, b) => a - b) };
}

function sameTarget(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

function findStrength(edit) {
  for (const e of S.document.edits) {
    if (e.kind !== edit.kind || !sameTarget(e.target, edit.target)) continue;
    if (e.kind === "direction" && e.direction === edit.direction &&
        JSON.stringify(e.layers) === JSON.stringify(edit.layers)) return e.strength;
    if (e.kind === "style" && e.layer === edit.layer && e.channel === edit.channel) return e.strength;
  }
  return 0;
}

function describeTarget(t) {
  if (t.layer !== undefined) return `region layer ${t.layer}`;
  return t.segments === "all" ? "all segments" : `segments ${t.segments.join(", ")}`;
}

async function applyState(state) {
  S = state;
  document.body.dataset.version = String(S.version);
  if (target !== "base" && !S.document.layers.some((l) => l.id === target)) target = "base";
  renderLayers();
  renderEdits();
  syncSliders();
  $("undo").disabled = !S.can_undo;
  $("redo").disabled = !S.can_redo;
  $("poisson").disabled = !S.poisson;
  $("poisson").checked = S.document.blend === "poisson";
  await showView();
}

async function refresh() { await applyState(await api("api/state")); }

// ------------------------------------------------------------------------------------------ views
function viewName() { return document.querySelector("input[name=view]:checked").value; }

async function showView() {
  const view = $("view");
  const name = viewName();
  const url = `api/image/${name}.png?v=${name === "current" ? S.version : 0}`;
  try {
    await loadImage(url);
    view.src = url;
    $("stage").dataset.version = name === "current" ? String(S.version) : "still";
  } catch (e) { fail(e); }
}

function showBlob(blob) {
  if (currentUrl) URL.revokeObjectURL(currentUrl);
  currentUrl = URL.createObjectURL(blob);
  $("view").src = currentUrl;
  document.querySelector("input[name=view][value=current]").checked = true;
}

function drawOverlay() {
  const c = $("overlay");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, R, R);
  if ($("show-masks").checked && masksImage) {
    ctx.globalAlpha = parseFloat($("mask-opacity").value);
    ctx.drawImage(masksImage, 0, 0, R, R);
    ctx.globalAlpha = 1;
  }
  if (target === "base" && selected.size && labels) {
    // the selected segments stay as they are; everything else is dimmed
    const img = ctx.getImageData(0, 0, R, R);
    for (let p = 0; p < R * R; p++) {
      if (selected.has(labels[p])) continue;
      const q = 4 * p;
      const a = img.data[q + 3] / 255;
      const out = a + 0.4 * (1 - a);  // "source-over" of black at 40% on what is drawn
      for (let c = 0; c < 3; c++) img.data[q + c] = Math.round((img.data[q + c] * a) / out);
      img.data[q + 3] = Math.round(255 * out);
    }
    ctx.putImageData(img, 0, 0);
  }
  if (target !== "base" && regionImages[target]) {
    ctx.globalAlpha = 0.45;
    ctx.drawImage(regionImages[target], 0, 0, R, R);
    ctx.globalAlpha = 1;
  }
  const sel = target === "base" ? describeTarget(targetJson()) : `region layer ${target}`;
  $("selection").textContent = sel;
}

// ------------------------------------------------------------------------------------------ layers, edits
function renderLayers() {
  const ul = $("layers");
  ul.textContent = "";
  const add = (value, text) => {
    const li = document.createElement("li");
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "target";
    input.value = String(value);
    input.checked = value === target;
    input.addEventListener("change", async () => {
      target = value;
      if (value !== "base") await loadRegion(value);
      syncSliders();
      drawOverlay();
    });
    label.append(input, " " + text);
    li.append(label);
    ul.append(li);
  };
  add("base", `Segments of the projection (${S.segments})`);
  for (const l of S.document.layers) {
    add(l.id, `${l.kind === "fill" ? "Filled holes" : "Region"} layer ${l.id} (${Math.round(100 * l.area)}% of the image, ${l.steps} steps, LPIPS ${l.lpips})`);
  }
}

async function loadRegion(id) {
  if (regionImages[id]) return;
  try {
    regionImages[id] = await loadImage(`api/image/region-${id}.png`);
  } catch (e) { fail(e); }
}

function renderEdits() {
  const ol = $("edits");
  ol.textContent = "";
  for (const e of S.document.edits) {
    const li = document.createElement("li");
    const what = e.kind === "direction"
      ? `${e.direction}${e.layers ? ` [${e.layers[0]}:${e.layers[1]}]` : ""}`
      : `S ${e.layer} ch ${e.channel}`;
    li.textContent = `${what} × ${e.strength} on ${describeTarget(e.target)}`;
    ol.append(li);
  }
  if (!S.document.edits.length) {
    const li = document.createElement("li");
    li.className = "hint";
    li.textContent = "no edits yet";
    ol.append(li);
  }
}

// ------------------------------------------------------------------------------------------ sliders
let inflight = false;
let pendingPreview = null;

async function preview(edit) {
  pendingPreview = edit;
  if (inflight) return;
  while (pendingPreview) {
    const e = pendingPreview;
    pendingPreview = null;
    inflight = true;
    try {
      showBlob(await api("api/preview", { method: "POST", json: { edit: e }, as: "blob" }));
    } catch (err) { fail(err); pendingPreview = null; }
    inflight = false;
  }
}

async function commit(edit) {
  pendingPreview = null;
  try {
    const state = await api("api/edits", { method: "POST", json: { edit } });
    say(`${edit.kind === "direction" ? edit.direction : "S " + edit.layer + " ch " + edit.channel} × ${edit.strength} on ${describeTarget(edit.target)}`);
    document.querySelector("input[name=view][value=current]").checked = true;
    await applyState(state);
  } catch (e) { fail(e); await refresh().catch(fail); }
}

function directionEdit(row) {
  const d = row.dataset;
  let layers = null;
  if (S.num_ws) {
    const lo = parseInt(row.querySelector(".lo").value, 10);
    const hi = parseInt(row.querySelector(".hi").value, 10);
    if (!(lo === 0 && hi === S.num_ws)) layers = [lo, hi];
  }
  return { kind: "direction", direction: d.direction, layers, target: targetJson(),
           strength: parseFloat(row.querySelector("input[type=range]").value) };
}

function styleEdit() {
  return { kind: "style", layer: $("style-layer").value, channel: parseInt($("style-channel").value, 10),
           target: targetJson(), strength: parseFloat($("style-strength").value) };
}

function buildSliders() {
  const box = $("directions");
  box.textContent = "";
  if (!S.num_ws) $("directions-hint").textContent = "Each slider moves the edit target along a direction.";
  if (!S.editable) {
    const p = document.createElement("p");
    p.className = "hint";
    p.textContent = "Editing is not available for this result: " + S.why_not;
    box.append(p);
  } else if (!S.directions.length) {
    const p = document.createElement("p");
    p.className = "hint";
    p.textContent = "No directions yet: start the editor with --directions=FOLDER of .npy files, or add one below.";
    box.append(p);
  }
  for (const d of S.directions) {
    const row = document.createElement("div");
    row.className = "slider-row direction";
    row.dataset.direction = d.id;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = d.name;
    name.title = d.id;
    const slider = document.createElement("input");
    slider.type = "range";
    slider.min = "-10"; slider.max = "10"; slider.step = "0.1"; slider.value = "0";
    slider.setAttribute("aria-label", d.name);
    slider.disabled = !S.editable;
    const out = document.createElement("output");
    out.textContent = "0";
    row.append(name, slider, out);
    if (S.num_ws) {
      for (const [cls, value, title] of [["lo", 0, "first ws row"], ["hi", S.num_ws, "end ws row (exclusive)"]]) {
        const n = document.createElement("input");
        n.type = "number"; n.className = cls; n.min = "0"; n.max = String(S.num_ws); n.value = String(value);
        n.title = title;
        n.addEventListener("change", syncSliders);
        row.append(n);
      }
    }
    slider.addEventListener("input", () => { out.textContent = slider.value; preview(directionEdit(row)); });
    slider.addEventListener("change", () => commit(directionEdit(row)));
    box.append(row);
  }
  const errors = S.direction_errors || [];
  $("direction-errors").textContent = errors.length ? "skipped: " + errors.join("; ") : "";
  // StyleSpace
  $("style-section").hidden = !S.styles.length;
  const sel = $("style-layer");
  if (S.styles.length && sel.options.length !== S.styles.length) {
    sel.textContent = "";
    for (const s of S.styles) {
      const o = document.createElement("option");
      o.value = s.name;
      o.textContent = `${s.name} (${s.channels})`;
      sel.append(o);
    }
  }
}

function syncSliders() {
  if (!S) return;
  for (const row of document.querySelectorAll("#directions .direction")) {
    const s = findStrength(directionEdit(row));
    row.querySelector("input[type=range]").value = String(s);
    row.querySelector("output").textContent = String(s);
  }
  if (S.styles.length) {
    const st = S.styles.find((x) => x.name === $("style-layer").value);
    if (st) $("style-channel").max = String(st.channels - 1);
    const s = findStrength(styleEdit());
    $("style-strength").value = String(s);
    $("style-value").textContent = String(s);
  }
}

// ------------------------------------------------------------------------------------------ stage
function pixelAt(ev) {
  const rect = $("stage").getBoundingClientRect();
  const x = Math.floor(((ev.clientX - rect.left) / rect.width) * R);
  const y = Math.floor(((ev.clientY - rect.top) / rect.height) * R);
  return [Math.min(Math.max(x, 0), R - 1), Math.min(Math.max(y, 0), R - 1),
          ((ev.clientX - rect.left) / rect.width) * R, ((ev.clientY - rect.top) / rect.height) * R];
}

function tool() { return document.querySelector("input[name=tool]:checked").value; }

function brush(ev) {
  const [, , fx, fy] = pixelAt(ev);
  const ctx = $("paint").getContext("2d");
  const radius = (parseFloat($("brush").value) * R) / 100;
  ctx.globalCompositeOperation = tool() === "erase" ? "destination-out" : "source-over";
  ctx.fillStyle = "rgb(255, 40, 40)";
  ctx.beginPath();
  ctx.arc(fx, fy, Math.max(radius, 0.5), 0, 2 * Math.PI);
  ctx.fill();
}

function onDown(ev) {
  if (!S) return;
  if (tool() === "select") {
    const [x, y] = pixelAt(ev);
    const seg = labels[y * R + x];
    target = "base";
    if (selected.has(seg)) selected.delete(seg); else selected.add(seg);
    renderLayers();
    syncSliders();
    drawOverlay();
    say(`selected ${describeTarget(targetJson())}`);
    return;
  }
  painting = true;
  $("stage").setPointerCapture(ev.pointerId);
  brush(ev);
}

function regionEmpty() {
  const data = $("paint").getContext("2d").getImageData(0, 0, R, R).data;
  for (let i = 3; i < data.length; i += 4) if (data[i]) return false;
  return true;
}

// ------------------------------------------------------------------------------------------ tasks
function setBusy(busy) {
  for (const id of ["project", "fill", "undo", "redo", "export", "poisson"]) $(id).disabled = busy;
  for (const el of document.querySelectorAll("aside input[type=range]")) el.disabled = busy || !S.editable;
  $("cancel").disabled = !busy;
  if (!busy && S) {
    $("undo").disabled = !S.can_undo;
    $("redo").disabled = !S.can_redo;
    $("poisson").disabled = !S.poisson;
  }
}

async function startTask(kind) {
  if (regionEmpty()) { say(kind === "project" ? "paint a region first" : "paint the holes to fill first", "error"); return; }
  const body = { region: $("paint").toDataURL("image/png"), steps: parseInt($("steps").value, 10) };
  if (kind === "fill") body.target = targetJson();
  try {
    const task = await api(`api/task/${kind}`, { method: "POST", json: body });
    setBusy(true);
    showTask(task);
    polling = setInterval(poll, 250);
  } catch (e) { fail(e); }
}

function showTask(t) {
  $("progress").max = t.steps;
  $("progress").value = t.step;
  const verb = t.kind === "project" ? "projecting the region" : "filling holes";
  $("task-status").textContent = t.state === "running"
    ? `${verb}: step ${t.step} of ${t.steps} (${t.seconds} s)`
    : `${verb}: ${t.state}${t.message ? " — " + t.message : ""}`;
  $("task-status").dataset.state = t.state;
}

async function poll() {
  let r;
  try { r = await api("api/task"); } catch (e) { clearInterval(polling); polling = null; setBusy(false); fail(e); return; }
  const t = r.task;
  if (!t) return;
  showTask(t);
  if (t.state === "running") return;
  clearInterval(polling);
  polling = null;
  setBusy(false);
  if (t.state === "done") {
    const state = await api("api/state");
    const layers = state.document.layers;
    target = layers.length ? layers[layers.length - 1].id : "base";
    $("paint").getContext("2d").clearRect(0, 0, R, R);
    document.querySelector("input[name=view][value=current]").checked = true;
    if (target !== "base") await loadRegion(target);
    await applyState(state);
    drawOverlay();
    say(`${t.kind === "project" ? "region projected" : "holes filled"}: ${t.message}`);
  } else if (t.state === "cancelled") {
    say(t.message, "info");
  } else {
    say(t.message, "error");
  }
}

// ------------------------------------------------------------------------------------------ export, upload
async function doExport() {
  try {
    const r = await api("api/export", { method: "POST", json: { name: $("export-name").value } });
    const ul = $("exported");
    ul.textContent = "";
    for (const f of r.files) {
      const li = document.createElement("li");
      if (f.endsWith(".png")) {
        const a = document.createElement("a");
        a.href = `api/files/${encodeURIComponent(f)}`;
        a.textContent = f;
        a.download = f;
        li.append(a);
      } else {
        li.textContent = `${f}/ (a result folder for bin/edit)`;
      }
      ul.append(li);
    }
    $("workdir").textContent = `in ${r.workdir}`;
    say(`exported ${r.files.join(", ")}${r.notes.length ? " — " + r.notes.join("; ") : ""}`, r.notes.length ? "error" : "info");
  } catch (e) { fail(e); }
}

async function upload(ev) {
  const file = ev.target.files[0];
  if (!file) return;
  try {
    const data = await file.arrayBuffer();
    const state = await api(`api/directions?name=${encodeURIComponent(file.name)}`, { method: "POST", body: data });
    S = state;
    buildSliders();
    await applyState(state);
    say(`added direction ${file.name}`);
  } catch (e) { fail(e); }
  ev.target.value = "";
}

async function undoRedo(which) {
  try {
    await applyState(await api(`api/${which}`, { method: "POST" }));
    say(which === "undo" ? "undone" : "redone");
  } catch (e) { fail(e); }
}

// ------------------------------------------------------------------------------------------ new direction
let nextPosition = 0;  // the panel's samples are spread over the generator's span: the server picks the seeds
let samplesAdded = Promise.resolve();  // one request at a time, so tiles keep the panel's order
const sampleLabels = new Map();  // seed -> 1 (has the attribute) or 0; skipped samples are absent

function addSamples(count = 12) {
  samplesAdded = samplesAdded.then(async () => {
    try {
      const seeds = (await api(`api/samples?start=${nextPosition}&count=${count}`)).seeds;
      nextPosition += count;
      seeds.forEach(addSample);
    } catch (e) { fail(e); }
  });
  return samplesAdded;
}

function addSample(seed) {
  const tile = document.createElement("div");
  tile.className = "sample";
  tile.dataset.seed = String(seed);
  const img = document.createElement("img");
  img.src = `api/sample/${seed}.png`;
  img.alt = `sample ${seed}`;
  img.draggable = false;
  tile.append(img);
  for (const [text, value] of [["yes", 1], ["no", 0], ["skip", null]]) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.dataset.label = text;
    b.addEventListener("click", () => {
      if (value === null) sampleLabels.delete(seed); else sampleLabels.set(seed, value);
      tile.dataset.label = text;
      const yes = [...sampleLabels.values()].filter((v) => v === 1).length;
      $("fit-status").textContent = `${yes} yes, ${sampleLabels.size - yes} no`;
    });
    tile.append(b);
  }
  $("samples").append(tile);
}

async function fitLabels(save) {
  try {
    const r = await api("api/labelled", { method: "POST", json: {
      labels: [...sampleLabels.entries()], name: $("direction-name").value, save } });
    const status = $("fit-status");
    status.textContent = `held-out accuracy ${r.accuracy.toFixed(2)} (${r.folds}-fold cross-validation; ` +
      `${r.positives} yes, ${r.negatives} no)`;
    status.dataset.accuracy = String(r.accuracy);
    $("fit-preview").src = r.preview;
    $("fit-preview").hidden = false;
    $("save-direction").disabled = false;
    if (save) {
      S = r.state;
      buildSliders();
      await applyState(r.state);
      say(`saved ${r.files.join(", ")}; its slider is under Directions`);
    }
  } catch (e) { fail(e); }
}

// ------------------------------------------------------------------------------------------ localized channels
async function findChannels() {
  let body;
  if (!regionEmpty()) body = { region: $("paint").toDataURL("image/png") };
  else if (selected.size === 1) body = { segment: [...selected][0] };
  else { say("select one segment, or paint a region, first", "error"); return; }
  try {
    say("ranking the StyleSpace channels…");
    const r = await api("api/localized", { method: "POST", json: body });
    const ol = $("localized");
    ol.textContent = "";
    for (const c of r.channels) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.layer = c.layer;
      b.dataset.channel = String(c.channel);
      b.textContent = `${c.layer} #${c.channel}: ${(100 * c.locality).toFixed(0)}% inside, ×${c.ratio.toFixed(1)}`;
      b.addEventListener("click", () => {
        $("style-layer").value = c.layer;
        $("style-channel").value = String(c.channel);
        syncSliders();
      });
      li.append(b);
      ol.append(li);
    }
    say(`${r.channels.length} channels ranked`);
  } catch (e) { fail(e); }
}

// ------------------------------------------------------------------------------------------ start
async function start() {
  try {
    S = await api("api/state");
    R = S.resolution;
    for (const id of ["overlay", "paint"]) { $(id).width = R; $(id).height = R; $(id).getContext("2d", { willReadFrequently: true }); }
    masksImage = await loadImage("api/image/masks.png");
    $("masks-image").src = masksImage.src;
    const lab = await loadImage("api/image/labels.png");
    const c = document.createElement("canvas");
    c.getContext("2d", { willReadFrequently: true });
    c.width = R; c.height = R;
    const cx = c.getContext("2d");
    cx.drawImage(lab, 0, 0);
    const px = cx.getImageData(0, 0, R, R).data;
    labels = new Uint8Array(R * R);
    for (let p = 0; p < R * R; p++) labels[p] = px[4 * p];
    $("steps").value = String(S.region_steps);
    $("workdir").textContent = `exports go to ${S.workdir}`;
    buildSliders();
    await applyState(S);
    drawOverlay();
    if (S.editable) addSamples(); else $("label-section").hidden = true;
    if (S.task && S.task.state === "running") { setBusy(true); polling = setInterval(poll, 250); }
    say(S.editable ? `${S.segments} segments, ${R} px. Click the image to select segments.` : S.why_not,
        S.editable ? "info" : "error");
    document.body.dataset.ready = "1";
  } catch (e) { fail(e); }
}

window.addEventListener("DOMContentLoaded", () => {
  const stage = $("stage");
  stage.className = "select";
  stage.addEventListener("pointerdown", onDown);
  stage.addEventListener("pointermove", (ev) => { if (painting) brush(ev); });
  stage.addEventListener("pointerup", () => { painting = false; });
  stage.addEventListener("pointercancel", () => { painting = false; });
  for (const r of document.querySelectorAll("input[name=tool]")) {
    r.addEventListener("change", () => { stage.className = tool(); });
  }
  for (const r of document.querySelectorAll("input[name=view]")) r.addEventListener("change", showView);
  $("show-masks").addEventListener("change", drawOverlay);
  $("mask-opacity").addEventListener("input", drawOverlay);
  $("clear-region").addEventListener("click", () => $("paint").getContext("2d").clearRect(0, 0, R, R));
  $("clear-selection").addEventListener("click", () => { selected.clear(); syncSliders(); drawOverlay(); });
  $("project").addEventListener("click", () => startTask("project"));
  $("fill").addEventListener("click", () => startTask("fill"));
  $("cancel").addEventListener("click", async () => {
    try { await api("api/cancel", { method: "POST" }); say("cancelling after the current steps…"); } catch (e) { fail(e); }
  });
  $("undo").addEventListener("click", () => undoRedo("undo"));
  $("redo").addEventListener("click", () => undoRedo("redo"));
  $("poisson").addEventListener("change", async (ev) => {
    try { await applyState(await api("api/blend", { method: "POST", json: { blend: ev.target.checked ? "poisson" : "mask" } })); }
    catch (e) { fail(e); await refresh().catch(fail); }
  });
  $("export").addEventListener("click", doExport);
  $("more-samples").addEventListener("click", () => addSamples());
  $("find-channels").addEventListener("click", findChannels);
  $("fit").addEventListener("click", () => fitLabels(false));
  $("save-direction").addEventListener("click", () => fitLabels(true));
  $("upload").addEventListener("change", upload);
  $("style-layer").addEventListener("change", syncSliders);
  $("style-channel").addEventListener("change", syncSliders);
  $("style-strength").addEventListener("input", () => {
    $("style-value").textContent = $("style-strength").value;
    preview(styleEdit());
  });
  $("style-strength").addEventListener("change", () => commit(styleEdit()));
  document.addEventListener("keydown", (ev) => {
    if (!(ev.ctrlKey || ev.metaKey) || ev.key.toLowerCase() !== "z" || ev.target.tagName === "INPUT" && ev.target.type === "text") return;
    ev.preventDefault();
    undoRedo(ev.shiftKey ? "redo" : "undo");
  });
  start();
});
