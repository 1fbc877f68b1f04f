// The private comparison page: models run in this browser with onnxruntime-web (global `ort`, loaded by
// private.html from this app), the image is decoded and preprocessed here (preprocess.js) and never sent.
// Every request below goes to this app: the model list, and per model its bundle, ONNX file, OOD statistics and
// its head's weights for Grad-CAM (cam.js computes the heatmap here from the graph's feature map).
import { camMask, headGradient, heatmapFigure } from "./cam.js";
import { preprocess, resize } from "./preprocess.js";

const MIN_MODELS = 2, MAX_MODELS = 6;
const MAX_SIDE = 2048; // zoo.images.MAX_IMAGE_SIDE: larger images are downscaled first, as the server does
const CACHE_NAME = "zoo-private-v1";
const $ = (id) => document.getElementById(id);
const sessions = new Map(); // model id + sha256 -> {bundle, session, ood}
const state = { listing: null, results: {} };
const heatmapInputs = new WeakMap(); // record -> {input (the model's input tensor), preprocessing}: what the map is drawn over
window.zooPrivate = state; // read by the tests and the benchmark

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function runtimeProblem() {
  if (typeof WebAssembly !== "object") {
    return "This browser has no WebAssembly, which private mode needs to run the models. Use a current browser " +
      "with WebAssembly enabled, or the app's Compare tab (which sends the image to the server).";
  }
  if (typeof ort !== "object") return "onnxruntime-web did not load (static/ort.wasm.min.js): run `npm ci --omit=dev` in web/.";
  return null;
}

function configureRuntime() {
  ort.env.wasm.wasmPaths = new URL("static/", location.href).href; // this app's copy, never a CDN
  // threads need SharedArrayBuffer, which needs the cross-origin isolation headers this app sends
  // ?threads=N asks for fewer (benchmarks/bench_private.py compares 1 with the default)
  const asked = Number(new URLSearchParams(location.search).get("threads")) || 4;
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.max(1, Math.min(asked, navigator.hardwareConcurrency || 1)) : 1;
  ort.env.wasm.proxy = false;
  $("runtime").textContent = `ONNX Runtime Web ${ort.env.versions?.web ?? ""} (WebAssembly, ` +
    `${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? "s" : ""}` +
    `${self.crossOriginIsolated ? "" : ": no cross-origin isolation, so single-threaded"}); model cache: ` +
    `${"caches" in self ? "the browser's Cache Storage" : "none (this page is not a secure context): files are fetched each visit"}.`;
}

// A GET to this app, kept in Cache Storage under its versioned URL (the file's sha256 is in the URL).
async function cachedBytes(url) {
  const cache = "caches" in self ? await caches.open(CACHE_NAME) : null;
  let response = cache ? await cache.match(url) : undefined;
  if (!response) {
    response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: the server answered ${response.status} ${await response.text()}`);
    if (cache) await cache.put(url, response.clone());
  }
  return new Uint8Array(await response.arrayBuffer());
}

// The bundle.json format this page reads (ui/private.py BUNDLE_VERSION). A bundle of another version is refused,
// never half-read; the version is in the bundle's URL too, so a copy cached for another version is never reused.
const BUNDLE_VERSION = 2;

async function loadModel(entry) {
  const key = `${entry.id}@${entry.onnx_sha256}`;
  if (sessions.has(key)) return sessions.get(key);
  const base = `api/models/${encodeURIComponent(entry.id)}/`;
  const bundleUrl = `${base}bundle.json?v=${entry.onnx_sha256}&format=${BUNDLE_VERSION}`;
  const bundle = JSON.parse(new TextDecoder().decode(await cachedBytes(bundleUrl)));
  if (bundle.format_version !== BUNDLE_VERSION) {
    throw new Error(`its bundle.json has format version ${JSON.stringify(bundle.format_version ?? null).slice(0, 20)}, ` +
      `but this page reads version ${BUNDLE_VERSION}: page and server come from different versions of the app. ` +
      "Reload the page; if the message stays, update the app (or use the Compare tab).");
  }
  const bytes = await cachedBytes(`${base}model.onnx?v=${entry.onnx_sha256}`);
  let session;
  try {
    session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  } catch (e) {
    throw new Error(`ONNX Runtime Web could not load this model's ONNX file (${String(e.message || e).slice(0, 300)}); ` +
      "use the Compare tab for it.");
  }
  let ood = null; // the OOD method's arrays by name, views into ood.bin (ui/private.py lays them out)
  if (bundle.ood) {
    const data = new Float32Array((await cachedBytes(`${base}ood.bin?v=${bundle.ood.sha256}`)).buffer);
    ood = Object.fromEntries(Object.entries(bundle.ood.arrays).map(([name, { shape, offset }]) =>
      [name, data.subarray(offset, offset + shape.reduce((a, b) => a * b, 1))]));
  }
  const model = { bundle, session, ood, ...await loadCam(base, bundle) };
  sessions.set(key, model);
  return model;
}

// The head's weights by role, views into cam.bin (ui/private_cam.py lays them out); a file that does not fit its
// bundle costs this model its heatmap only: {cam: null, camProblem: why}.
async function loadCam(base, bundle) {
  if (!bundle.cam) return { cam: null, camProblem: null };
  try {
    const bytes = await cachedBytes(`${base}cam.bin?v=${bundle.cam.sha256}`);
    if (bytes.length !== bundle.cam.bytes) {
      throw new Error(`its head's weights (cam.bin) are ${bytes.length} bytes, its bundle says ${bundle.cam.bytes}`);
    }
    const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
    const cam = Object.fromEntries(Object.entries(bundle.cam.arrays).map(([role, { shape, offset }]) => {
      const size = shape.reduce((a, b) => a * b, 1);
      if (!(offset >= 0 && offset + size <= data.length)) throw new Error(`its head's ${role} lies outside cam.bin`);
      return [role, data.subarray(offset, offset + size)];
    }));
    return { cam, camProblem: null };
  } catch (e) {
    return { cam: null, camProblem: `no heatmap: ${String(e.message || e).slice(0, 300)}; reload the page` };
  }
}

function isDicom(bytes, name) {
  const magic = bytes.length > 132 && String.fromCharCode(...bytes.subarray(128, 132)) === "DICM";
  return magic || /\.(dcm|dicom)$/i.test(name);
}

// a NIfTI volume: by name, or by the NIfTI-1 (byte 344) or NIfTI-2 (byte 4) magic of an uncompressed file
function isNifti(bytes, name) {
  const text = (start) => String.fromCharCode(...bytes.subarray(start, start + 4));
  return /\.nii(\.gz)?$/i.test(name) || (bytes.length > 348 && text(344) === "n+1\0") ||
    (bytes.length > 540 && text(4) === "n+2\0");
}

// The file -> RGBA pixels as the server reads it: EXIF orientation applied, colour profile ignored (as
// Pillow does), alpha composited on black (drawn on an opaque black canvas), longer side at most MAX_SIDE.
async function decodeImage(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (isDicom(bytes, file.name)) {
    throw new Error(`${file.name} is a DICOM file: private mode reads PNG and JPEG only. Reading DICOM (windowing, ` +
      "compressed transfer syntaxes) needs the server mode: use the Compare tab, or export the image as PNG.");
  }
  if (isNifti(bytes, file.name)) {
    throw new Error(`${file.name} is a NIfTI volume: private mode reads PNG and JPEG only. Slicing a volume needs ` +
      "the server mode: use the Compare tab (it shows a slice slider), or export a slice as PNG.");
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", imageOrientation: "from-image" });
  } catch (e) {
    throw new Error(`${file.name}: this browser cannot decode the file as an image (${e.message || e}). ` +
      "Use a PNG or JPEG file.");
  }
  const canvas = $("preview");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
  context.fillStyle = "#000";
  context.fillRect(0, 0, bitmap.width, bitmap.height);
  context.drawImage(bitmap, 0, 0);
  let rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  let width = bitmap.width, height = bitmap.height;
  if (Math.max(width, height) > MAX_SIDE) { // Lanczos like zoo.images (without its JPEG draft decoding)
    const scale = MAX_SIDE / Math.max(width, height);
    const w = Math.max(1, Math.round(width * scale)), h = Math.max(1, Math.round(height * scale));
    const rgb = resize(rgbaToRgb(rgba), width, height, 3, w, h, "lanczos");
    rgba = new Uint8ClampedArray(w * h * 4).fill(255);
    for (let i = 0; i < w * h; i++) rgba.set(rgb.subarray(i * 3, i * 3 + 3), i * 4);
    width = w; height = h;
  }
  return { rgba, width, height, name: file.name };
}

function rgbaToRgb(rgba) {
  const n = rgba.length / 4, out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) { out[i * 3] = rgba[i * 4]; out[i * 3 + 1] = rgba[i * 4 + 1]; out[i * 3 + 2] = rgba[i * 4 + 2]; }
  return out;
}

function softmax(logits, temperature = 1) {
  const scaled = Array.from(logits, (v) => v / temperature);
  const top = Math.max(...scaled);
  const exps = scaled.map((v) => Math.exp(v - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / sum);
}

// The OOD scores the page computes, by the method name the run folder declares: each the twin of its module's
// `scores` in zoo/ood/ (features f of width dim, the method's arrays from ood.bin).
const OOD_SCORES = {
  // zoo/ood/knn_cosine.py: 1 - cosine similarity to the nearest training image
  "knn-cosine": (f, dim, { bank }) => {
    const norm = Math.max(Math.hypot(...f), 1e-12);
    let best = -Infinity;
    for (let r = 0; r < bank.length / dim; r++) {
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += bank[r * dim + j] * f[j];
      best = Math.max(best, dot / norm);
    }
    return Math.max(0, 1 - best);
  },
  // zoo/ood/mahalanobis.py: min over classes of ||W f - c_k||^2 / dim
  "mahalanobis": (f, dim, { whitening, centres }) => {
    const whitened = new Float64Array(dim);
    for (let i = 0; i < dim; i++) {
      let sum = 0;
      for (let j = 0; j < dim; j++) sum += whitening[i * dim + j] * f[j];
      whitened[i] = sum;
    }
    let best = Infinity;
    for (let k = 0; k < centres.length / dim; k++) {
      let distance = 0;
      for (let i = 0; i < dim; i++) distance += (whitened[i] - centres[k * dim + i]) ** 2;
      best = Math.min(best, distance);
    }
    return best / dim;
  },
};

function ranked(probabilities, labels, k) {
  return probabilities.map((p, i) => [labels[i] ?? String(i), p, i]).sort((a, b) => b[1] - a[1] || a[2] - b[2])
    .slice(0, k).map(([label, probability]) => ({ label, probability }));
}

// One model on the decoded image: the same record fields as the server's /compare, computed here.
async function runModel(entry, image, topK) {
  const start = performance.now();
  const { bundle, session, ood, cam, camProblem } = await loadModel(entry);
  const loadedAt = performance.now();
  const cfg = bundle.preprocessing;
  const [c, h, w] = cfg.input_size;
  const input = preprocess(image.rgba, image.width, image.height, cfg);
  const feeds = { pixel_values: new ort.Tensor("float32", input, [1, c, h, w]) };
  if (bundle.metadata_unknown) {
    feeds.metadata = new ort.Tensor("float32", Float32Array.from(bundle.metadata_unknown), [1, bundle.metadata_unknown.length]);
  }
  const outputs = await session.run(feeds);
  const logits = outputs.logits.data;
  // what the server checks on every call (zoo.backends, zoo.inference): the width and finite values
  if (logits.length !== bundle.label_names.length) {
    throw new Error(`the model gave ${logits.length} logits for its ${bundle.label_names.length} classes, so its ` +
      "answer cannot be read; its ONNX file does not fit its config.json.");
  }
  const probabilities = softmax(logits);
  if (!probabilities.every(Number.isFinite)) {
    throw new Error("the model produced NaN or infinite outputs for this image, so it has no answer.");
  }
  const temperature = bundle.temperature;
  if (temperature !== null && !(typeof temperature === "number" && temperature > 0 && Number.isFinite(temperature))) {
    throw new Error(`its temperature ${JSON.stringify(temperature).slice(0, 60)} is not a positive number.`);
  }
  const record = {
    model: bundle.id, label_names: bundle.label_names, probabilities,
    top_k: ranked(probabilities, bundle.label_names, topK), calibrated_top_k: null, calibrated: null,
    temperature: bundle.temperature, prediction_set: null, ood: null, ood_reason: bundle.ood_reason, error: null,
  };
  if (temperature) {
    record.calibrated = softmax(logits, temperature);
    if (!record.calibrated.every(Number.isFinite)) {
      throw new Error(`the temperature-scaled probabilities (T = ${temperature}) are not finite.`);
    }
    record.calibrated_top_k = ranked(record.calibrated, bundle.label_names, topK);
    if (bundle.conformal) {
      record.prediction_set = record.calibrated.map((p, i) => [p, i]).filter(([p]) => 1 - p <= bundle.conformal.threshold)
        .sort((a, b) => b[0] - a[0]).map(([, i]) => bundle.label_names[i]);
      record.prediction_set_coverage = 1 - bundle.conformal.alpha;
    }
  }
  const scoreOf = ood && OOD_SCORES[bundle.ood.method];
  if (ood && !scoreOf) {
    record.ood_reason = `no OOD check: method ${bundle.ood.method} is not known to this page; reload it`;
  } else if (ood && outputs.features && !Array.from(outputs.features.data).every(Number.isFinite)) {
    record.ood_reason = "no OOD check: features not finite (the model gave NaN or infinite image features for " +
      "this image, so nothing says it is like its training images)"; // a NaN is no distance: never a pass
  } else if (ood && outputs.features) {
    const f = outputs.features.data, dim = bundle.ood.dim;
    if (f.length !== dim) throw new Error(`the model gave ${f.length} image features, its OOD statistics have ${dim}.`);
    const score = scoreOf(f, dim, ood);
    record.ood = { score, threshold: bundle.ood.threshold, flagged: score > bundle.ood.threshold };
  }
  record.latency_ms = performance.now() - loadedAt;
  record.load_ms = loadedAt - start;
  record.heatmap = null;
  record.heatmap_reason = camProblem ?? bundle.cam_reason;
  if (cam) {
    const camStart = performance.now();
    try { // the prediction stands even if its explanation fails
      Object.assign(record, heatmapOf(bundle, cam, outputs, probabilities, input));
      heatmapInputs.set(record, { input, preprocessing: cfg });
    } catch (e) {
      record.heatmap_reason = `no heatmap: Grad-CAM failed in this browser (${String(e.message || e).slice(0, 300)})`;
    }
    record.cam_ms = performance.now() - camStart;
  }
  return record;
}

// Grad-CAM of the top class from this pass's feature map (zoo.gradcam.heatmap's closed form), at the model's input
// size: {heatmap: {mask (row-major), height, width, ...}, heatmap_source: "onnx", cam_note}.
function heatmapOf(bundle, cam, outputs, probabilities, input) {
  const map = outputs.feature_map;
  if (!map || map.dims.length !== 4 || map.dims[0] !== 1 || map.dims[1] !== bundle.cam.channels) {
    throw new Error(`the graph gave no feature map of ${bundle.cam.channels} channels (${map ? `[${map.dims}]` : "none"})`);
  }
  if (!Array.from(map.data).every(Number.isFinite)) throw new Error("its feature map is not finite for this image");
  const [, D, fh, fw] = map.dims, [, h, w] = bundle.preprocessing.input_size;
  // what the head read: the graph's `features` output of the same pass (the map's mean where it has none)
  const pooled = outputs.features?.data ?? Float64Array.from({ length: D }, (_, k) =>
    map.data.subarray(k * fh * fw, (k + 1) * fh * fw).reduce((a, b) => a + b, 0) / (fh * fw));
  const index = probabilities.indexOf(Math.max(...probabilities)); // the top class, as the server's argmax
  const gradient = headGradient(bundle.cam, cam, pooled, index, bundle.label_names.length);
  const mask = camMask(map.data, D, fh, fw, gradient, h, w);
  const label = bundle.label_names[index];
  return {
    heatmap: { mask: Array.from(mask), height: h, width: w, layer: bundle.cam.layer, label },
    heatmap_source: "onnx",
    cam_note: mask.some((v) => v > 0) ? null : `Grad-CAM found no region with positive evidence for \`${label}\` ` +
      `at layer ${bundle.cam.layer}: the map is empty.`,
  };
}

function column(record) {
  const div = document.createElement("div");
  div.className = "column";
  div.dataset.model = record.model;
  const title = document.createElement("h3");
  title.textContent = record.model;
  div.append(title);
  const add = (className, text) => {
    const p = document.createElement("p");
    p.className = className;
    p.textContent = text;
    div.append(p);
    return p;
  };
  if (record.error) {
    div.classList.add("failed");
    add("error", `✖ ${record.error}`);
    return div;
  }
  if (record.ood?.flagged) {
    div.classList.add("flagged");
    add("banner", `This image is unlike the images ${record.model} was trained on (score ${record.ood.score.toFixed(3)}, ` +
      `threshold ${record.ood.threshold.toFixed(3)}): its answer is not meaningful.`);
  }
  const table = document.createElement("table");
  table.className = "probabilities";
  for (const { label, probability } of record.calibrated_top_k ?? record.top_k) {
    const row = table.insertRow();
    row.insertCell().textContent = label;
    row.insertCell().textContent = `${(probability * 100).toFixed(1)}%`;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.round(probability * 100)}%`;
    row.insertCell().append(bar);
  }
  div.append(table);
  add("note", record.temperature ? `Calibrated (temperature ${record.temperature.toFixed(3)}).` :
    "Raw softmax (this model has no temperature).");
  if (record.prediction_set) {
    add("set", `${Math.round(record.prediction_set_coverage * 100)}% set: {${record.prediction_set.join(", ")}}`);
  }
  add("ood", record.ood ? `OOD check: score ${record.ood.score.toFixed(3)}, threshold ${record.ood.threshold.toFixed(3)}` +
    (record.ood.flagged ? " (flagged)" : " (passed)") : record.ood_reason);
  if (record.heatmap) {
    try { // a map that cannot be drawn costs the column its picture only
      const { input, preprocessing } = heatmapInputs.get(record);
      div.append(heatmapFigure(record.heatmap, input, preprocessing, state.listing.heatmap, Boolean(record.ood?.flagged)));
      if (record.cam_note) add("note", record.cam_note);
    } catch (e) {
      add("no-heatmap note", `no heatmap: it cannot be drawn (${String(e.message || e).slice(0, 200)})`);
    }
  } else {
    add("no-heatmap note", record.heatmap_reason ?? "no heatmap");
  }
  add("latency", `Latency ${record.latency_ms.toFixed(1)} ms in this browser` +
    (record.load_ms > 1 ? ` (+ ${record.load_ms.toFixed(0)} ms to load the model)` : "") +
    (record.cam_ms !== undefined ? `; Grad-CAM ${record.cam_ms.toFixed(1)} ms` : ""));
  return div;
}

async function compare() {
  const chosen = [...document.querySelectorAll("#models input:checked")].map((box) => box.value);
  const file = $("image").files[0];
  $("columns").replaceChildren();
  state.results = {};
  document.body.dataset.state = "running";
  try {
    const problem = runtimeProblem();
    if (problem) throw new Error(problem);
    if (chosen.length < MIN_MODELS || chosen.length > MAX_MODELS) {
      throw new Error(`Select ${MIN_MODELS} to ${MAX_MODELS} models to compare; ${chosen.length} selected.`);
    }
    if (!file) throw new Error("Choose an image (PNG or JPEG) first.");
    say("Decoding the image in this browser…");
    const image = await decodeImage(file);
    const topK = Math.max(1, Math.min(10, Number($("top-k").value) || 5));
    for (const [i, id] of chosen.entries()) {
      say(`${id}: running in this browser (${i + 1} of ${chosen.length})…`);
      const entry = state.listing.models.find((m) => m.id === id);
      let record;
      try {
        record = await runModel(entry, image, topK);
      } catch (e) { // one model failing must not stop the others
        record = { model: id, error: String(e.message || e) };
      }
      let shown;
      try {
        shown = column(record);
      } catch (e) { // nor must one model's values that cannot be shown
        record = { model: id, error: `its result cannot be shown (${String(e.message || e).slice(0, 200)})` };
        shown = column(record);
      }
      state.results[id] = record;
      $("columns").append(shown);
    }
    const answered = Object.values(state.results).filter((r) => !r.error);
    say(`Done: ${answered.length} of ${chosen.length} models answered in this browser; the image was not uploaded.`);
  } catch (e) {
    say(String(e.message || e), true);
  }
  document.body.dataset.state = "done";
}

// The median time of `runs` forward passes of one model on a random input (benchmarks/bench_private.py).
state.timeForward = async (id, runs) => {
  const { bundle, session } = await loadModel(state.listing.models.find((m) => m.id === id));
  const [c, h, w] = bundle.preprocessing.input_size;
  const feeds = { pixel_values: new ort.Tensor("float32", Float32Array.from({ length: c * h * w }, () => Math.random() * 2 - 1), [1, c, h, w]) };
  if (bundle.metadata_unknown) {
    feeds.metadata = new ort.Tensor("float32", Float32Array.from(bundle.metadata_unknown), [1, bundle.metadata_unknown.length]);
  }
  await session.run(feeds); // warm-up
  const times = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await session.run(feeds);
    times.push(performance.now() - start);
  }
  return times.sort((a, b) => a - b)[Math.floor(runs / 2)];
};

async function init() {
  const problem = runtimeProblem();
  if (problem) say(problem, true);
  else configureRuntime();
  try {
    const response = await fetch("api/models");
    state.listing = await response.json();
  } catch (e) {
    say(`The model list could not be read from the app (${e.message || e}).`, true);
    return;
  }
  const box = $("models");
  box.replaceChildren(Object.assign(document.createElement("legend"), { textContent: "Models (2 to 6)" }));
  for (const [i, m] of state.listing.models.entries()) {
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"), { type: "checkbox", value: m.id, checked: i < 2 });
    label.append(input, ` ${m.id} (${(m.download_bytes / 2 ** 20).toFixed(1)} MB download)`);
    box.append(label);
  }
  const refused = state.listing.not_offered;
  $("not-offered").replaceChildren(...refused.map(({ id, reason }) => {
    const p = document.createElement("p");
    p.textContent = `Not offered here: ${id}: ${reason}.`;
    return p;
  }));
  $("compare").addEventListener("click", compare);
  document.body.dataset.state = "ready";
}

init();
