// spade-tf studio: paint a layout of class indices, get the model's image back.
// The layout lives in `studio.labels` (one class index per pixel, at the model's resolution); the
// canvas only shows it. It is sent to the web server as a palette PNG whose pixel values are the
// class indices. `window.studio` is there for the browser console (and the tests). What goes to the
// web server and back (that PNG, synthesis, uploads) is in requests.js, loaded first.
"use strict";

const $ = (id) => document.getElementById(id);
const UNKNOWN_COLOUR = [0, 0, 0];
const MAX_UNDO = 50;
const DEBOUNCE_MS = 200;

const studio = {
  model: null,
  width: 0,
  height: 0,
  labels: null,       // Uint8Array [height * width]
  current: 0,         // class index the brush and fill paint with
  tool: "brush",
  undoStack: [],
  version: 0,         // bumped on every change of layout, seed or style
  z: null,            // style code from a style photo (VAE models)
  resultUrl: null,
};
window.studio = studio;

// ---------- messages and state ----------

function setState(state) {
  document.body.dataset.state = state;
  $("busy").hidden = state !== "pending";
}

function showMessage(text, detail = "") {
  const box = $("message");
  box.textContent = text;
  box.title = detail;
  box.hidden = false;
}

function hideMessage() {
  $("message").hidden = true;
}

async function errorBody(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body;
  } catch (e) { /* not JSON */ }
  return { error: `The studio answered ${response.status} ${response.statusText}.` };
}

function setServerStatus(ok, title) {
  const badge = $("server-status");
  badge.textContent = ok ? "model server: ready" : "model server: unreachable";
  badge.className = "badge " + (ok ? "ok" : "down");
  badge.title = title || "";
}

async function checkServer() {
  try {
    const response = await fetch("api/status");
    const body = await response.json();
    const versions = (body.versions || []).filter((v) => v.state === "AVAILABLE").map((v) => v.version);
    setServerStatus(body.ok, body.ok ? `versions available: ${versions.join(", ") || "none"}` : body.detail || body.error);
  } catch (e) {
    setServerStatus(false, "the studio itself is not reachable");
  }
}

// ---------- drawing ----------

const canvas = $("layout");
const context = canvas.getContext("2d");
let colourTable = null;  // Uint8Array [256 * 3]: colour of each index
let renderQueued = false;

function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    const image = context.createImageData(studio.width, studio.height);
    const pixels = image.data;
    for (let i = 0; i < studio.labels.length; i++) {
      const c = studio.labels[i] * 3;
      pixels[4 * i] = colourTable[c];
      pixels[4 * i + 1] = colourTable[c + 1];
      pixels[4 * i + 2] = colourTable[c + 2];
      pixels[4 * i + 3] = 255;
    }
    context.putImageData(image, 0, 0);
  });
}

function setSize(height, width) {
  studio.height = height;
  studio.width = width;
  canvas.width = width;
  canvas.height = height;
  const frame = parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--frame"));
  const scale = frame / Math.max(height, width);
  for (const element of [canvas, $("result")]) {
    element.style.width = `${Math.round(width * scale)}px`;
    element.style.height = `${Math.round(height * scale)}px`;
  }
  const size = $("brush-size");
  size.max = Math.max(4, Math.round(Math.max(height, width) / 2));
  size.value = Math.max(1, Math.round(Math.max(height, width) / 12));
  $("brush-size-value").textContent = size.value;
}

function pushUndo() {
  studio.undoStack.push({ labels: studio.labels.slice(), height: studio.height, width: studio.width });
  if (studio.undoStack.length > MAX_UNDO) studio.undoStack.shift();
}

function changed(delay = DEBOUNCE_MS) {
  render();
  studio.version++;
  setState("pending");
  scheduleSynthesis(delay);
}

function pixelAt(event) {
  const rect = canvas.getBoundingClientRect();
  return [Math.floor((event.clientX - rect.left) / rect.width * studio.width),
          Math.floor((event.clientY - rect.top) / rect.height * studio.height)];
}

function stamp(cx, cy) {
  const diameter = Number($("brush-size").value);
  const r = diameter / 2;
  const reach = Math.ceil(r);
  for (let y = Math.max(0, cy - reach); y <= Math.min(studio.height - 1, cy + reach); y++) {
    for (let x = Math.max(0, cx - reach); x <= Math.min(studio.width - 1, cx + reach); x++) {
      if ((x - cx) ** 2 + (y - cy) ** 2 <= r * r) studio.labels[y * studio.width + x] = studio.current;
    }
  }
}

function strokeTo(from, to) {
  const steps = Math.max(Math.abs(to[0] - from[0]), Math.abs(to[1] - from[1]), 1);
  for (let s = 0; s <= steps; s++) {
    stamp(Math.round(from[0] + (to[0] - from[0]) * s / steps), Math.round(from[1] + (to[1] - from[1]) * s / steps));
  }
}

function fill(x, y) {
  const { width, height, labels } = studio;
  if (x < 0 || y < 0 || x >= width || y >= height) return false;
  const target = labels[y * width + x];
  if (target === studio.current) return false;
  const stack = [y * width + x];
  while (stack.length) {
    const i = stack.pop();
    if (labels[i] !== target) continue;
    labels[i] = studio.current;
    const px = i % width;
    if (px > 0) stack.push(i - 1);
    if (px < width - 1) stack.push(i + 1);
    if (i >= width) stack.push(i - width);
    if (i < width * (height - 1)) stack.push(i + width);
  }
  return true;
}

let last = null;  // previous brush point while a stroke is on

canvas.addEventListener("pointerdown", (event) => {
  if (!studio.labels || event.button !== 0) return;
  event.preventDefault();
  const point = pixelAt(event);
  if (studio.tool === "fill") {
    const before = studio.labels.slice();
    if (fill(point[0], point[1])) {
      studio.undoStack.push({ labels: before, height: studio.height, width: studio.width });
      changed();
    }
    return;
  }
  canvas.setPointerCapture(event.pointerId);
  pushUndo();
  last = point;
  strokeTo(point, point);
  render();
  clearTimeout(synthesisTimer);  // no request while the brush is down
});

canvas.addEventListener("pointermove", (event) => {
  if (last === null) return;
  const point = pixelAt(event);
  strokeTo(last, point);
  last = point;
  render();
});

function endStroke() {
  if (last === null) return;
  last = null;
  changed();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);
canvas.addEventListener("lostpointercapture", endStroke);

function undo() {
  const previous = studio.undoStack.pop();
  if (!previous) return;
  if (previous.height !== studio.height || previous.width !== studio.width) setSize(previous.height, previous.width);
  studio.labels = previous.labels;
  changed();
}

// ---------- palette and tools ----------

function buildPalette() {
  const { class_names: names, palette, unknown_label: unknown } = studio.model;
  colourTable = new Uint8Array(256 * 3);
  palette.forEach((colour, i) => colourTable.set(colour, i * 3));
  if (unknown !== null) colourTable.set(UNKNOWN_COLOUR, unknown * 3);
  const entries = names.map((name, i) => [name, i, palette[i]]);
  if (unknown !== null) entries.push(["unknown", unknown, UNKNOWN_COLOUR]);
  const container = $("palette");
  for (const [name, index, colour] of entries) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "swatch";
    button.dataset.index = index;
    button.dataset.name = name;
    button.setAttribute("role", "radio");
    button.title = `class ${index}: ${name} (${colour.join(", ")})`;
    const chip = document.createElement("i");
    chip.style.background = `rgb(${colour.join(",")})`;
    button.append(chip, document.createTextNode(name));
    button.addEventListener("click", () => selectClass(index));
    container.append(button);
  }
  if (entries.length > 16) {
    const filter = $("class-filter");
    filter.hidden = false;
    filter.addEventListener("input", () => {
      const text = filter.value.trim().toLowerCase();
      for (const button of container.children) button.hidden = !button.dataset.name.toLowerCase().includes(text);
    });
  }
  selectClass(0);
}

function selectClass(index) {
  studio.current = index;
  for (const button of $("palette").children) {
    const active = Number(button.dataset.index) === index;
    button.classList.toggle("active", active);
    button.setAttribute("aria-checked", String(active));
  }
}

function selectTool(tool) {
  studio.tool = tool;
  for (const name of ["brush", "fill"]) {
    $(`tool-${name}`).classList.toggle("active", name === tool);
    $(`tool-${name}`).setAttribute("aria-pressed", String(name === tool));
  }
}

// ---------- seed and style ----------

function randomSeed() {
  $("seed").value = Math.floor(Math.random() * 2 ** 31);
}

function clearStyle() {
  studio.z = null;
  $("style-thumb").hidden = $("style-clear").hidden = true;
  $("style-file").value = "";
  $("seed").disabled = $("random-seed").disabled = false;
  changed(0);
}

// ---------- start ----------

studio.layoutPng = layoutPng;

async function start() {
  let model;
  try {
    const response = await fetch("api/model");
    if (!response.ok) throw new Error((await errorBody(response)).error);
    model = await response.json();
  } catch (e) {
    setState("error");
    showMessage(`Cannot load the model's classes: ${e.message}`);
    return;
  }
  studio.model = model;
  const [height, width] = model.image_size;
  $("model-info").textContent = `${model.model_name} · ${model.label_nc} classes · ${width} × ${height} px`
    + ` · gRPC ${model.server}`;
  buildPalette();
  setSize(height, width);
  studio.labels = new Uint8Array(height * width);
  $("style-controls").hidden = !model.use_vae;
  $("seed-note").hidden = model.use_vae;
  randomSeed();

  $("tool-brush").addEventListener("click", () => selectTool("brush"));
  $("tool-fill").addEventListener("click", () => selectTool("fill"));
  $("brush-size").addEventListener("input", () => { $("brush-size-value").textContent = $("brush-size").value; });
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", () => {
    pushUndo();
    studio.labels = new Uint8Array(studio.height * studio.width).fill(studio.current);
    changed();
  });
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "z" && !event.target.matches("input")) {
      event.preventDefault();
      undo();
    }
  });
  $("seed").addEventListener("change", () => changed(0));
  $("random-seed").addEventListener("click", () => {
    randomSeed();
    changed(0);
  });
  $("layout-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) uploadLayout(file);
  });
  $("download-layout").addEventListener("click", async () => download(await layoutPng(), "layout.png"));
  $("style-file").addEventListener("change", (event) => { if (event.target.files[0]) uploadStyle(event.target.files[0]); });
  $("style-clear").addEventListener("click", clearStyle);

  checkServer();
  changed();
}

start();
