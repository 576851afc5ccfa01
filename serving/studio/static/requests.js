// spade-tf studio: what goes between the page and the studio's web server (loaded before studio.js,
// whose names these functions use when they run): the layout as a PNG of class indices, synthesis
// requests, uploads of a layout or a style photo.
"use strict";

// ---------- the layout as a PNG of class indices ----------

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type, data) {
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) chunk[4 + i] = type.charCodeAt(i);
  chunk.set(data, 8);
  view.setUint32(8 + data.length, crc32(chunk.subarray(4, 8 + data.length)));
  return chunk;
}

async function zlib(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// An 8-bit palette PNG: pixel values = class indices, PLTE = the model's palette (so it also looks right).
async function layoutPng() {
  const { width, height, labels } = studio;
  const rows = new Uint8Array((width + 1) * height);  // each row: filter type 0, then the indices
  for (let y = 0; y < height; y++) rows.set(labels.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header[8] = 8;  // bit depth
  header[9] = 3;  // colour type: indexed
  const entries = studio.model.unknown_label === null ? studio.model.label_nc : 256;
  const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  return new Blob([signature, pngChunk("IHDR", header), pngChunk("PLTE", colourTable.subarray(0, entries * 3)),
                   pngChunk("IDAT", await zlib(rows)), pngChunk("IEND", new Uint8Array(0))], { type: "image/png" });
}

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// ---------- synthesis ----------

let synthesisTimer = null;
let inFlight = null;  // AbortController of the running request

function scheduleSynthesis(delay = DEBOUNCE_MS) {
  clearTimeout(synthesisTimer);
  synthesisTimer = setTimeout(synthesize, delay);
}

async function synthesize() {
  const version = studio.version;
  if (inFlight) inFlight.abort();
  const controller = new AbortController();
  inFlight = controller;
  const form = new FormData();
  form.append("layout", await layoutPng(), "layout.png");
  if (studio.z) form.append("z", JSON.stringify(studio.z));
  else if ($("seed").value !== "") form.append("seed", $("seed").value);
  let response;
  try {
    response = await fetch("api/synthesize", { method: "POST", body: form, signal: controller.signal });
  } catch (e) {
    if (controller.signal.aborted) return;
    setState("error");
    showMessage("The studio's web server is not reachable: is `python -m serving.studio` still running?");
    return;
  }
  if (controller.signal.aborted || version !== studio.version) return;  // a newer request is on its way
  inFlight = null;
  if (!response.ok) {
    const body = await errorBody(response);
    setState("error");
    showMessage(body.error, body.detail);
    if (response.status === 503) setServerStatus(false, body.detail || body.error);
    return;
  }
  const blob = await response.blob();
  if (version !== studio.version) return;
  if (studio.resultUrl) URL.revokeObjectURL(studio.resultUrl);
  studio.resultUrl = URL.createObjectURL(blob);
  const result = $("result");
  result.src = studio.resultUrl;
  result.dataset.version = version;
  const link = $("download-result");
  link.href = studio.resultUrl;
  link.classList.remove("disabled");
  hideMessage();
  setServerStatus(true);
  setState("ready");
}

// ---------- uploads ----------

// The JSON answer of the studio's web server to an uploaded file, or null after saying why there is none.
async function postFile(url, field, file, asWhat = "") {
  const form = new FormData();
  form.append(field, file, file.name);
  let response;
  try {
    response = await fetch(url, { method: "POST", body: form });
  } catch (e) {
    showMessage("The studio's web server is not reachable.");
    return null;
  }
  if (!response.ok) {
    showMessage(`Cannot use ${file.name}${asWhat}: ${(await errorBody(response)).error}`);
    return null;
  }
  return response.json();
}

async function uploadLayout(file) {
  const body = await postFile("api/layout", "layout", file);
  if (!body) return;
  pushUndo();
  if (body.height !== studio.height || body.width !== studio.width) setSize(body.height, body.width);
  studio.labels = Uint8Array.from(atob(body.labels), (c) => c.charCodeAt(0));
  hideMessage();
  changed();
}

async function uploadStyle(file) {
  const body = await postFile("api/style", "style", file, " as a style photo");
  if (!body) return;
  studio.z = body.z;
  const thumb = $("style-thumb");
  if (thumb.src) URL.revokeObjectURL(thumb.src);
  thumb.src = URL.createObjectURL(file);
  thumb.hidden = $("style-clear").hidden = false;
  $("seed").disabled = $("random-seed").disabled = true;
  hideMessage();
  changed(0);
}
