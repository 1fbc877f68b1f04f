// Grad-CAM in the page: the twin of zoo/onnx_cam.py (CamHead.gradient, cam_mask) and of the server's overlay
// (zoo.gradcam.cam_overlay: pytorch-grad-cam's show_cam_on_image; ui/heatmaps.py's legend and OOD greying).
// For a head that pools the last feature map A (D, h, w) into f (D,) and applies layers to f alone, Grad-CAM's
// channel weights are dS_c/df / (h * w), with dS_c/df in closed form (ui/private_cam.py sends the head's weights):
//   "linear"  weight[c, :D]
//   "mlp"     fc1.weight^T ((fc1.weight f + fc1.bias > 0) * fc2.weight[c])
// OpenCV is not in the page, so its bilinear resize is written out below (cv2.resize, INTER_LINEAR, float32).

// dS_c/df (Float64Array of D) for class `c` at the pooled features f (D,); `arrays` are cam.bin's views by role.
export function headGradient(cam, arrays, features, c, classes) {
  const D = cam.channels;
  const shape = (role) => cam.arrays[role]?.shape ?? [];
  if (features.length !== D) throw new Error(`the model gave ${features.length} pooled features, its head takes ${D}`);
  if (cam.form === "linear") {
    const [K, width] = shape("weight");
    if (K !== classes || !(width >= D)) throw new Error(`its head's weight has shape [${shape("weight")}], not [${classes}, ≥${D}]`);
    return Float64Array.from(arrays.weight.subarray(c * width, c * width + D));
  }
  if (cam.form === "mlp") {
    const [H, D1] = shape("fc1.weight"), [K, H2] = shape("fc2.weight");
    if (D1 !== D || H2 !== H || K !== classes || shape("fc1.bias")[0] !== H) {
      throw new Error(`its mlp head's shapes [${shape("fc1.weight")}], [${shape("fc1.bias")}], [${shape("fc2.weight")}] ` +
        `do not fit ${D} features and ${classes} classes`);
    }
    const w1 = arrays["fc1.weight"], b1 = arrays["fc1.bias"], w2 = arrays["fc2.weight"];
    const gradient = new Float64Array(D);
    for (let j = 0; j < H; j++) {
      let hidden = b1[j];
      for (let k = 0; k < D; k++) hidden += w1[j * D + k] * features[k];
      const g = hidden > 0 ? w2[c * H + j] : 0; // (hidden > 0) * W2[c]
      if (g !== 0) for (let k = 0; k < D; k++) gradient[k] += w1[j * D + k] * g;
    }
    return gradient;
  }
  throw new Error(`its head's form ${JSON.stringify(cam.form).slice(0, 40)} is not one this page knows; reload it`);
}

function minMax(values) { // zoo/onnx_cam.py _min_max: (x - min) / (1e-7 + max(x - min))
  let low = Infinity;
  for (const v of values) low = Math.min(low, v);
  let high = -Infinity;
  for (let i = 0; i < values.length; i++) { values[i] -= low; high = Math.max(high, values[i]); }
  for (let i = 0; i < values.length; i++) values[i] /= 1e-7 + high;
  return values;
}

// cv2.resize's INTER_LINEAR source positions: half-pixel centres, the border pixel repeated (weight 0 outside)
function linearTaps(source, target) {
  const scale = 1 / (target / source), index = new Int32Array(target), weight = new Float32Array(target);
  for (let d = 0; d < target; d++) {
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    if (s < 0) { s = 0; f = 0; }
    if (s >= source - 1) { s = source - 1; f = 0; }
    index[d] = s; weight[d] = f;
  }
  return { index, weight };
}

// (h, w) -> (outHeight, outWidth), as cv2.resize(src, (outWidth, outHeight)) does for float32 (bilinear)
export function resizeBilinear(src, h, w, outHeight, outWidth) {
  const xs = linearTaps(w, outWidth), ys = linearTaps(h, outHeight);
  const rows = new Float32Array(h * outWidth); // the horizontal pass, then the vertical one
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < outWidth; x++) {
      const s = xs.index[x], f = xs.weight[x], at = y * w + s;
      rows[y * outWidth + x] = src[at] * (1 - f) + (f ? src[at + 1] * f : 0);
    }
  }
  const out = new Float32Array(outHeight * outWidth);
  for (let y = 0; y < outHeight; y++) {
    const s = ys.index[y], f = ys.weight[y];
    for (let x = 0; x < outWidth; x++) {
      out[y * outWidth + x] = rows[s * outWidth + x] * (1 - f) + (f ? rows[(s + 1) * outWidth + x] * f : 0);
    }
  }
  return out;
}

// Grad-CAM (outHeight * outWidth, row-major) in [0, 1] from one map (D * h * w) and dS_c/df: zoo.onnx_cam.cam_mask
export function camMask(map, D, h, w, gradient, outHeight, outWidth) {
  const area = h * w, cam = new Float32Array(area);
  for (let k = 0; k < D; k++) {
    const weight = Math.fround(gradient[k] / area); // the gradient's mean over positions, as float32
    if (weight === 0) continue;
    for (let p = 0; p < area; p++) cam[p] += weight * map[k * area + p];
  }
  for (let p = 0; p < area; p++) cam[p] = Math.max(cam[p], 0);
  const mask = minMax(resizeBilinear(minMax(cam), h, w, outHeight, outWidth).map((v) => Math.max(v, 0)));
  return mask.map((v) => (Number.isNaN(v) ? 0 : Math.min(1, Math.max(0, v))));
}

// The model's view (its input de-normalised, zoo.prediction.model_view) with the map over it, RGBA for a canvas:
// show_cam_on_image's arithmetic (colour = JET[uint8(255 * mask)], (1 - w) colour + w image, divided by its max),
// greyed as Pillow's convert("L") does when the model's OOD check flagged the image (ui/heatmaps.py).
export function overlayPixels(input, channels, mean, std, mask, settings, grey) {
  const area = mask.length, weight = settings.image_weight, mixed = new Float32Array(area * 3);
  let top = 0;
  for (let p = 0; p < area; p++) {
    const colour = settings.colors[Math.floor(Math.fround(255 * mask[p]))];
    for (let ch = 0; ch < 3; ch++) {
      const c = channels === 1 ? 0 : ch;
      const view = Math.min(1, Math.max(0, input[c * area + p] * std[c] + mean[c]));
      const value = (1 - weight) * (colour[ch] / 255) + weight * view;
      mixed[p * 3 + ch] = value;
      top = Math.max(top, value);
    }
  }
  const rgba = new Uint8ClampedArray(area * 4);
  for (let p = 0; p < area; p++) {
    const [r, g, b] = [0, 1, 2].map((ch) => Math.floor(255 * (mixed[p * 3 + ch] / top)));
    const l = grey ? (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16 : null;
    rgba.set(grey ? [l, l, l, 255] : [r, g, b, 255], p * 4);
  }
  return rgba;
}

// The heatmap as the server shows it (ui/heatmaps.py): over the model's view, scaled up by a whole factor to at
// least the display size (the browser's smoothing for the server's PIL bilinear), the colour legend below
export function heatmapFigure(heatmap, input, preprocessing, settings, grey) {
  const { mask, height, width } = heatmap;
  const figure = document.createElement("figure");
  figure.className = "heatmap";
  const source = Object.assign(document.createElement("canvas"), { width, height });
  const { mean, std, input_size: [channels] } = preprocessing;
  const pixels = overlayPixels(input, channels, mean, std, mask, settings, grey);
  source.getContext("2d").putImageData(new ImageData(pixels, width, height), 0, 0);
  const scale = Math.max(1, Math.ceil(settings.display_size / Math.max(height, width)));
  const shown = Object.assign(document.createElement("canvas"), { width: width * scale, height: height * scale });
  shown.className = "heatmap-image";
  const context = shown.getContext("2d");
  context.imageSmoothingEnabled = true; // bilinear-like, as the server's PIL resize
  context.drawImage(source, 0, 0, shown.width, shown.height);
  const legend = Object.assign(document.createElement("div"), { className: "legend" });
  legend.style.width = `${shown.width}px`;
  const colors = settings.colors.map(([r, g, b], i) => `rgb(${r},${g},${b}) ${(i / 2.55).toFixed(2)}%`);
  legend.style.background = `linear-gradient(to right, ${colors.join(", ")})`;
  if (grey) legend.style.filter = "grayscale(1)";
  const words = Object.assign(document.createElement("div"), { className: "legend-words" });
  words.style.width = legend.style.width;
  words.append(Object.assign(document.createElement("span"), { textContent: settings.least }),
    Object.assign(document.createElement("span"), { textContent: settings.most }));
  const caption = document.createElement("figcaption");
  caption.textContent = `${settings.label} (class ${heatmap.label}; layer ${heatmap.layer}; computed in ` +
    "this browser from the ONNX feature map)";
  figure.append(shown, legend, words, caption);
  return figure;
}
