// The server's preprocessing (zoo.inference.preprocess: zoo.images.to_model_mode, then timm's eval transform
// on a PIL image) re-done on 8-bit pixels, so that the page feeds a model the same tensor the server does.
//
// Written by hand because no JavaScript library reproduces Pillow: the canvas's drawImage scaling is not
// PIL's filter. PIL (Resample.c) resizes with a separable convolution whose support grows with the
// downscaling factor (antialiasing), horizontal pass first, fixed-point coefficients (22 fractional bits)
// and an 8-bit image between the passes; NEAREST is an affine transform instead. Each step below is that
// algorithm, so that the integers match Pillow's exactly. Pure functions on typed arrays: the page and the
// test suite (node) run the same code.

const PRECISION_BITS = 22; // 32 - 8 - 2, as in Pillow's Resample.c
const ONE = 2 ** PRECISION_BITS;

const bicubic = (x) => {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
};
const sinc = (x) => (x === 0.0 ? 1.0 : Math.sin(Math.PI * x) / (Math.PI * x));
// name -> [support, filter], Pillow's filters
export const FILTERS = {
  box: [0.5, (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0)],
  bilinear: [1.0, (x) => (Math.abs(x) < 1.0 ? 1.0 - Math.abs(x) : 0.0)],
  hamming: [1.0, (x) => {
    x = Math.abs(x);
    if (x === 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x *= Math.PI;
    return (Math.sin(x) / x) * (0.54 + 0.46 * Math.cos(x));
  }],
  bicubic: [2.0, bicubic],
  lanczos: [3.0, (x) => (x > -3.0 && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0)],
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc: for each output index, the first input index, the
// number of taps and the fixed-point weights.
function coefficients(inSize, outSize, filterName) {
  const [support0, filter] = FILTERS[filterName];
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = support0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5); // C's (int) cast truncates
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    const k = new Float64Array(xmax);
    for (let x = 0; x < xmax; x++) {
      k[x] = filter((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? k[x] / ww : k[x];
      weights[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, weights, ksize };
}

const clip8 = (ss) => {
  const v = Math.floor(ss / ONE); // ss >> PRECISION_BITS (arithmetic shift)
  return v < 0 ? 0 : v > 255 ? 255 : v;
};

// One pass of Pillow's ResampleHorizontal/ResampleVertical_8bpc on interleaved pixels (channels per pixel).
function resampleAxis(src, width, height, channels, outSize, horizontal, filterName, rowOffset = 0, rows = null) {
  const inSize = horizontal ? width : height;
  const { bounds, weights, ksize } = coefficients(inSize, outSize, filterName);
  const outW = horizontal ? outSize : width;
  const outH = horizontal ? (rows ?? height) : outSize;
  const out = new Uint8Array(outW * outH * channels);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const i = horizontal ? x : y;
      const min = bounds[i * 2], taps = bounds[i * 2 + 1];
      for (let c = 0; c < channels; c++) {
        let ss = ONE / 2; // 1 << (PRECISION_BITS - 1): rounds
        for (let t = 0; t < taps; t++) {
          const sx = horizontal ? min + t : x;
          const sy = horizontal ? y + rowOffset : min + t;
          ss += src[(sy * width + sx) * channels + c] * weights[i * ksize + t];
        }
        out[(y * outW + x) * channels + c] = clip8(ss);
      }
    }
  }
  return out;
}

// Pillow's NEAREST resize: an affine transform sampling floor(0.5 * scale + x * scale) (accumulated as Pillow does).
function resizeNearest(src, width, height, channels, outW, outH) {
  const out = new Uint8Array(outW * outH * channels);
  const sx = width / outW, sy = height / outH;
  const xin = new Int32Array(outW);
  let xo = sx * 0.5;
  for (let x = 0; x < outW; x++) { xin[x] = xo < 0 ? -1 : Math.trunc(xo); xo += sx; }
  let yo = sy * 0.5;
  for (let y = 0; y < outH; y++) {
    const yi = yo < 0 ? -1 : Math.trunc(yo);
    yo += sy;
    if (yi < 0 || yi >= height) continue;
    for (let x = 0; x < outW; x++) {
      if (xin[x] < 0 || xin[x] >= width) continue;
      for (let c = 0; c < channels; c++) out[(y * outW + x) * channels + c] = src[(yi * width + xin[x]) * channels + c];
    }
  }
  return out;
}

// Image.resize((outW, outH), filter) for an 8-bit L (channels 1) or RGB (channels 3) image.
export function resize(src, width, height, channels, outW, outH, filterName) {
  if (outW === width && outH === height) return src.slice();
  if (filterName === "nearest") return resizeNearest(src, width, height, channels, outW, outH);
  if (!(filterName in FILTERS)) throw new Error(`interpolation ${filterName} is not implemented`);
  let pixels = src, w = width, h = height;
  if (outW !== width) {
    // only the rows the vertical pass reads are resized horizontally (Pillow's ybox_first..ybox_last)
    let first = 0, last = height;
    if (outH !== height) {
      const v = coefficients(height, outH, filterName);
      first = v.bounds[0];
      last = v.bounds[outH * 2 - 2] + v.bounds[outH * 2 - 1];
    }
    const rows = last - first;
    const horizontal = resampleAxis(pixels, w, h, channels, outW, true, filterName, first, rows);
    if (outH === height) return horizontal;
    // the vertical pass then reads rows first..last-1 as 0..rows-1: shift its bounds by `first`
    return resampleVerticalShifted(horizontal, outW, rows, channels, height, outH, filterName, first);
  }
  return resampleAxis(pixels, w, h, channels, outH, false, filterName);
}

function resampleVerticalShifted(src, width, rows, channels, inHeight, outH, filterName, first) {
  const { bounds, weights, ksize } = coefficients(inHeight, outH, filterName);
  const out = new Uint8Array(width * outH * channels);
  for (let y = 0; y < outH; y++) {
    const min = bounds[y * 2] - first, taps = bounds[y * 2 + 1];
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) {
        let ss = ONE / 2;
        for (let t = 0; t < taps; t++) ss += src[((min + t) * width + x) * channels + c] * weights[y * ksize + t];
        out[(y * width + x) * channels + c] = clip8(ss);
      }
    }
  }
  return out;
}

// RGBA pixels (alpha already composited: the page draws on opaque black) -> L (1) or RGB (3) pixels,
// as zoo.images.to_model_mode: L from RGB is Pillow's ITU-R 601-2 luma in fixed point (Convert.c's L24).
export function toModelMode(rgba, width, height, channels) {
  const n = width * height;
  const out = new Uint8Array(n * channels);
  for (let i = 0; i < n; i++) {
    const r = rgba[i * 4], g = rgba[i * 4 + 1], b = rgba[i * 4 + 2];
    if (channels === 1) out[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
    else { out[i * 3] = r; out[i * 3 + 1] = g; out[i * 3 + 2] = b; }
  }
  return out;
}

// Python's round(): halves to even (torchvision's center_crop uses it).
const roundHalfEven = (x) => {
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
};

// The size timm's eval transform resizes to, before its centre crop.
export function resizedSize(width, height, cfg) {
  const [, cropH, cropW] = cfg.input_size;
  const pct = cfg.crop_pct || 0.875;
  if (cfg.crop_mode === "squash") return [Math.floor(cropW / pct), Math.floor(cropH / pct)];
  const size = Math.floor(cropH / pct); // torchvision Resize(int): the shorter side becomes `size`
  const short = Math.min(width, height), long = Math.max(width, height);
  const newLong = Math.trunc((size * long) / short);
  return width <= height ? [size, newLong] : [newLong, size];
}

// torchvision's center_crop of a PIL image (zero padding when the crop is larger).
function centerCrop(src, width, height, channels, cropW, cropH) {
  const padL = cropW > width ? Math.floor((cropW - width) / 2) : 0;
  const padT = cropH > height ? Math.floor((cropH - height) / 2) : 0;
  const pw = width + padL + (cropW > width ? Math.floor((cropW - width + 1) / 2) : 0);
  const ph = height + padT + (cropH > height ? Math.floor((cropH - height + 1) / 2) : 0);
  const top = roundHalfEven((ph - cropH) / 2.0), left = roundHalfEven((pw - cropW) / 2.0);
  const out = new Uint8Array(cropW * cropH * channels);
  for (let y = 0; y < cropH; y++) {
    for (let x = 0; x < cropW; x++) {
      const sy = y + top - padT, sx = x + left - padL;
      if (sy < 0 || sy >= height || sx < 0 || sx >= width) continue;
      for (let c = 0; c < channels; c++) out[(y * cropW + x) * channels + c] = src[(sy * width + sx) * channels + c];
    }
  }
  return out;
}

// RGBA pixels -> the model's input, Float32Array (C * H * W), as the server's preprocess: to_model_mode,
// Resize, CenterCrop, ToTensor (/255), Normalize ((x - mean) / std), each step in float32 like torch.
export function preprocess(rgba, width, height, cfg) {
  const [channels, cropH, cropW] = cfg.input_size;
  let pixels = toModelMode(rgba, width, height, channels);
  const [w, h] = resizedSize(width, height, cfg);
  pixels = resize(pixels, width, height, channels, w, h, cfg.interpolation);
  pixels = centerCrop(pixels, w, h, channels, cropW, cropH);
  const out = new Float32Array(channels * cropH * cropW);
  const f = Math.fround;
  for (let c = 0; c < channels; c++) {
    const mean = f(cfg.mean[c]), std = f(cfg.std[c]);
    for (let i = 0; i < cropH * cropW; i++) out[c * cropH * cropW + i] = f(f(f(pixels[i * channels + c] / 255) - mean) / std);
  }
  return out;
}
