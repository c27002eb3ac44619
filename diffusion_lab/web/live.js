// diffusion-lab's live sampler: the samplers of diffusion_lab/sampling.py, run in the browser on an ONNX export
// of an ε-model (diffusion_lab/export.py) with onnxruntime-web, and the widget that drives them.
//
// One file, three places: it is the `_esm` of diffusion_lab.live.LiveSampler (anywidget) in Jupyter and Colab,
// the same source in the widget state saved into the book's static pages, and an ES module the browser test
// imports to check the numbers against Python's (tests/test_live_browser.py).
//
// Book equations, code index t ↔ paper step t+1 (as in sampling.py):
//   (3.7) μ_θ(x_t, t) = (x_t − β_t/√(1−ᾱ_t) · ε̃) / √α_t
//   (6.1) x_{t−1} = μ_θ + σ_t z,  σ_t² = β_t or β̃_t,  no noise at the last step (code index 0)
//   DDIM (Song et al. 2021, eq. 12) over τ_1 < … < τ_S:
//         x̂_0 = (x_τ − √(1−ᾱ_τ) ε̃) / √ᾱ_τ,   x_τ' = √ᾱ_τ' x̂_0 + √(1 − ᾱ_τ' − σ²) ε̃ + σ z
//         σ = η √((1−ᾱ_τ')/(1−ᾱ_τ)) √(1 − ᾱ_τ/ᾱ_τ'),  ᾱ_τ' := 1 after the last step
//   (8.1) ε̃ = (1 + w) ε_θ(x_t, t, y) − w ε_θ(x_t, t, ∅)        (∅ = the label K)
//   (8.2) with an interval [t_lo, t_hi]: ε̃ = ε_c + w_t (ε_c − ε_∅), w_t = w inside it and 0 outside, where the
//         null pass is skipped (as ClassifierFreeGuidance does).
// Tensors are float32 like torch's; the schedule's coefficients are computed in float64 and rounded to float32
// where torch rounds them (Schedule below), so a run fed Python's noise matches ddpm_sample / ddim_sample.

export const ORT_VERSION = "1.22.0";
export const ORT_BASE = `https://cdn.jsdelivr.net/npm/onnxruntime-web@${ORT_VERSION}/dist/`;
const f32 = Math.fround;

// ----------------------------------------------------------------------------- onnxruntime-web, loaded lazily
let ortPromise = null;
export function loadOrt() {
  if (!ortPromise) {
    ortPromise = import(/* webpackIgnore: true */ ORT_BASE + "ort.wasm.min.mjs").then((ort) => {
      ort.env.wasm.wasmPaths = ORT_BASE;
      ort.env.wasm.numThreads = 1;      // a static page is not cross-origin isolated: no SharedArrayBuffer
      ort.env.logLevel = "error";
      return ort;
    }).catch((err) => { ortPromise = null; throw err; });
  }
  return ortPromise;
}

// An ε-model: eps(x Float32Array (B·D), t Int32Array (B), y Int32Array (B) | null) → Float32Array (B·D).
export async function onnxModel(bytes, meta) {
  const ort = await loadOrt();
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  const shape = meta.item_shape, D = shape.reduce((a, b) => a * b, 1);
  const conditional = meta.num_classes !== null && meta.num_classes !== undefined;
  const eps = async (x, t, y) => {
    const B = t.length;
    const feeds = {
      x: new ort.Tensor("float32", x, [B, ...shape]),
      t: new ort.Tensor("int64", BigInt64Array.from(t, BigInt), [B]),
    };
    if (conditional) {
      if (!y) throw new Error("this model is conditional: give labels y");
      feeds.y = new ort.Tensor("int64", BigInt64Array.from(y, BigInt), [B]);
    }
    const out = await session.run(feeds);
    const e = out.eps.data;
    if (e.length !== B * D) throw new Error(`the model returned ${e.length} values, expected ${B * D}`);
    return e;
  };
  return { eps, meta, D, conditional, numClasses: conditional ? meta.num_classes : null };
}

// ----------------------------------------------------------------------------- noise
// A seedable PRNG (mulberry32) with Box–Muller normals. It is not torch's generator: a seed gives the same
// samples in every browser, not the same as torch.manual_seed(seed).
export function gaussian(seed) {
  let a = (seed >>> 0) || 0x9e3779b9;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  let spare = null;
  return (n) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      if (spare !== null) { out[i] = spare; spare = null; continue; }
      let u = 0;
      while (u === 0) u = uniform();
      const r = Math.sqrt(-2 * Math.log(u)), th = 2 * Math.PI * uniform();
      out[i] = r * Math.cos(th);
      spare = r * Math.sin(th);
    }
    return out;
  };
}

// Noise fed from outside (the parity test: Python's x_T and z, in the order the Python sampler draws them).
export function fedNoise(values) {
  const data = Float32Array.from(values);
  let pos = 0;
  const draw = (n) => {
    if (pos + n > data.length) throw new Error(`fed noise exhausted: ${n} more values needed at ${pos} of ${data.length}`);
    const out = data.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  draw.used = () => pos;
  return draw;
}

// ----------------------------------------------------------------------------- the schedule
export class Schedule {
  constructor(betas) {
    const T = betas.length;
    if (!T) throw new Error("the schedule needs betas");
    this.T = T;
    this.betas = Float64Array.from(betas);
    this.alphaBars = new Float64Array(T);
    let p = 1;
    for (let i = 0; i < T; i++) { p *= 1 - this.betas[i]; this.alphaBars[i] = p; }       // torch.cumprod, float64
    // posterior_variance_clipped: β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), index 0 := index 1 (sampler's "beta_tilde")
    this.betaTilde = new Float64Array(T);
    for (let i = 0; i < T; i++) {
      const prev = i === 0 ? 1 : this.alphaBars[i - 1];
      this.betaTilde[i] = this.betas[i] * (1 - prev) / (1 - this.alphaBars[i]);
    }
    this.betaTilde[0] = T > 1 ? this.betaTilde[1] : this.betas[0];
  }
  // the float32 coefficients of a DDPM step at code index t (schedule.extract casts float64 → float32)
  ddpm(t, variance) {
    const ab = this.alphaBars[t], b = this.betas[t];
    const somab = Math.sqrt(1 - ab);
    return {
      sqrtOneMinusAb: f32(somab), sqrtAb: f32(Math.sqrt(ab)),
      epsCoef: f32(b / somab), sqrtAlpha: f32(Math.sqrt(1 - b)),
      // torch: var.sqrt() on the float32 variance
      sigma: f32(Math.sqrt(f32(variance === "beta_tilde" ? this.betaTilde[t] : b))),
    };
  }
  // DDIM's τ_1 < … < τ_S: torch.floor(torch.linspace(0, T−1, S, float64) + 0.5)
  ddimTimesteps(steps) {
    const T = this.T;
    if (!Number.isInteger(steps) || steps < 1 || steps > T) throw new Error(`steps must be an int in [1, ${T}], got ${steps}`);
    if (steps === 1) return [T - 1];
    const end = T - 1, step = end / (steps - 1), half = Math.floor(steps / 2), out = [];
    for (let i = 0; i < steps; i++) {
      const v = i < half ? step * i : end - step * (steps - i - 1);         // torch's linspace, both halves
      out.push(Math.floor(v + 0.5));
    }
    return out;
  }
  // the float64 coefficients of the DDIM step τ = t → τ' = tPrev (−1: to x_0), rounded to float32
  ddim(t, tPrev, eta) {
    const a = this.alphaBars[t], ap = tPrev < 0 ? 1 : this.alphaBars[tPrev];
    const sigma = eta * Math.sqrt((1 - ap) / (1 - a)) * Math.sqrt(Math.max(1 - a / ap, 0));
    return {
      sqrtOneMinusAb: f32(Math.sqrt(1 - a)), sqrtAb: f32(Math.sqrt(a)), sqrtAbPrev: f32(Math.sqrt(ap)),
      dirCoef: f32(Math.sqrt(Math.max(1 - ap - sigma * sigma, 0))), sigma: f32(sigma), sigma64: sigma,
    };
  }
}

// ----------------------------------------------------------------------------- ε̃ with classifier-free guidance
function checkOptions(model, o) {
  const K = model.numClasses;
  if (model.conditional) {
    if (!o.y || o.y.length !== o.batch) throw new Error(`give one label per sample: y of length ${o.batch}`);
    for (const v of o.y) if (!Number.isInteger(v) || v < 0 || v >= K) throw new Error(`labels must lie in 0…${K - 1}, got ${v}`);
  } else if (o.w) {
    throw new Error("guidance needs a conditional model");
  }
  if (o.interval && !(o.interval.length === 2 && o.interval[0] <= o.interval[1])) {
    throw new Error("interval must be [t_lo, t_hi] with t_lo ≤ t_hi (code indices)");
  }
}

async function guidedEps(model, x, tIdx, o) {
  const B = o.batch, D = model.D;
  const tB = new Int32Array(B).fill(tIdx);
  if (!model.conditional) return model.eps(x, tB, null);
  const y = Int32Array.from(o.y);
  const w = o.w || 0;
  const active = w !== 0 && (!o.interval || (o.interval[0] <= tIdx && tIdx <= o.interval[1]));
  if (!active) return model.eps(x, tB, y);                  // w = 0 or outside the interval: no null pass
  const x2 = new Float32Array(2 * B * D);
  x2.set(x); x2.set(x, B * D);
  const y2 = new Int32Array(2 * B);
  y2.set(y); y2.fill(model.numClasses, B);                 // the null label ∅ = K
  const both = await model.eps(x2, new Int32Array(2 * B).fill(tIdx), y2);
  const out = new Float32Array(B * D);
  if (!o.interval) {
    const a = f32(1 + w), b = f32(w);                       // (8.1): (1 + w) ε_c − w ε_∅
    for (let i = 0; i < B * D; i++) out[i] = f32(f32(a * both[i]) - f32(b * both[B * D + i]));
  } else {
    const b = f32(w);                                       // (8.2): ε_c + w (ε_c − ε_∅)
    for (let i = 0; i < B * D; i++) out[i] = f32(both[i] + f32(b * f32(both[i] - both[B * D + i])));
  }
  return out;
}

// ----------------------------------------------------------------------------- the samplers
// Common options: {batch, y, w, interval, noise (a function n → Float32Array: gaussian(seed) or fedNoise),
//                  onStep({i, n, t, x, x0}) called after every step (for drawing), frames (keep every k-th)}.
// Both return {x: Float32Array (B·D), frames: [{t, x, x0}], calls}.
export async function ddpmSample(model, schedule, o) {
  checkOptions(model, o);
  const variance = o.variance || "beta";
  if (variance !== "beta" && variance !== "beta_tilde") throw new Error(`variance must be "beta" or "beta_tilde", got ${variance}`);
  const B = o.batch, D = model.D, N = B * D, T = schedule.T;
  let x = Float32Array.from(o.noise(N));                    // x_T
  const frames = [];
  const every = o.frames || Math.max(1, Math.ceil(T / 20));
  for (let i = 0, idx = T - 1; idx >= 0; i++, idx--) {
    const eps = await guidedEps(model, x, idx, o);
    const c = schedule.ddpm(idx, variance);
    const x0 = new Float32Array(N), next = new Float32Array(N);
    for (let k = 0; k < N; k++) {
      x0[k] = f32(f32(x[k] - f32(c.sqrtOneMinusAb * eps[k])) / c.sqrtAb);
      next[k] = f32(f32(x[k] - f32(c.epsCoef * eps[k])) / c.sqrtAlpha);       // (3.7)
    }
    if (idx > 0) {                                          // (6.1): + σ_t z, except at the last step
      const z = o.noise(N);
      for (let k = 0; k < N; k++) next[k] = f32(next[k] + f32(c.sigma * z[k]));
    }
    if (i % every === 0) frames.push({ t: idx + 1, x, x0 });
    if (o.onStep) await o.onStep({ i, n: T, t: idx + 1, x, x0 });
    x = next;
  }
  frames.push({ t: 0, x, x0: x });
  return { x, frames, calls: T };
}

export async function ddimSample(model, schedule, o) {
  checkOptions(model, o);
  const eta = o.eta === undefined ? 0 : o.eta;
  if (!(eta >= 0 && eta <= 1)) throw new Error(`eta must lie in [0, 1], got ${eta}`);
  const B = o.batch, D = model.D, N = B * D;
  const taus = schedule.ddimTimesteps(o.steps === undefined ? 50 : o.steps), S = taus.length;
  let x = Float32Array.from(o.noise(N));
  const frames = [];
  const every = o.frames || Math.max(1, Math.ceil(S / 20));
  for (let i = S - 1; i >= 0; i--) {
    const tau = taus[i], prev = i > 0 ? taus[i - 1] : -1;
    const eps = await guidedEps(model, x, tau, o);
    const c = schedule.ddim(tau, prev, eta);
    const x0 = new Float32Array(N), next = new Float32Array(N);
    for (let k = 0; k < N; k++) {
      x0[k] = f32(f32(x[k] - f32(c.sqrtOneMinusAb * eps[k])) / c.sqrtAb);
      next[k] = f32(f32(c.sqrtAbPrev * x0[k]) + f32(c.dirCoef * eps[k]));
    }
    if (eta > 0 && c.sigma64 > 0) {
      const z = o.noise(N);
      for (let k = 0; k < N; k++) next[k] = f32(next[k] + f32(c.sigma * z[k]));
    }
    const step = S - 1 - i;
    if (step % every === 0) frames.push({ t: tau + 1, x, x0 });
    if (o.onStep) await o.onStep({ i: step, n: S, t: tau + 1, x, x0 });
    x = next;
  }
  frames.push({ t: 0, x, x0: x });
  return { x, frames, calls: S };
}

// ----------------------------------------------------------------------------- drawing
// Images (B·C·H·W in [−1, 1]) onto a canvas as a grid, each pixel a `scale`×`scale` block (crisp).
export function drawGrid(canvas, x, batch, shape, { cols = 4, scale = 8, pad = 2 } = {}) {
  const [C, H, W] = shape, rows = Math.ceil(batch / cols);
  const cw = cols * (W * scale + pad) + pad, ch = rows * (H * scale + pad) + pad;
  if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(cw, ch);
  img.data.fill(255);
  const D = C * H * W;
  for (let b = 0; b < batch; b++) {
    const r = Math.floor(b / cols), q = b % cols, oy = pad + r * (H * scale + pad), ox = pad + q * (W * scale + pad);
    for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) {
      const rgb = [0, 1, 2].map((c) => {
        const v = x[b * D + Math.min(c, C - 1) * H * W + i * W + j];
        return Math.round(255 * Math.min(1, Math.max(0, (v + 1) / 2)));
      });
      for (let di = 0; di < scale; di++) for (let dj = 0; dj < scale; dj++) {
        const p = 4 * ((oy + i * scale + di) * cw + ox + j * scale + dj);
        img.data[p] = rgb[0]; img.data[p + 1] = rgb[1]; img.data[p + 2] = rgb[2]; img.data[p + 3] = 255;
      }
    }
  }
  ctx.putImageData(img, 0, 0);
}

// ----------------------------------------------------------------------------- the widget (anywidget)
const CSS = `
.dl-live { font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-size: 13px; max-width: 680px; }
.dl-live .dl-row { display: flex; align-items: center; gap: 8px; margin: 4px 0; flex-wrap: nowrap; }
.dl-live .dl-row > label:first-child { width: 120px; flex: 0 0 120px; white-space: nowrap; font-weight: 600; }
.dl-live input[type=range] { width: 320px; flex: 0 0 320px; }
.dl-live .dl-out { min-width: 3em; font-variant-numeric: tabular-nums; }
.dl-live button.dl-go { padding: 4px 16px; font-weight: 600; cursor: pointer; }
.dl-live canvas { image-rendering: pixelated; display: block; margin: 2px 0; }
.dl-live .dl-status { color: #555; min-height: 1.3em; }
.dl-live .dl-caption { color: #555; font-size: 12px; margin-top: 6px; }
`;

const SAMPLERS = { "DDIM": "ddim", "DDPM, σ² = β": "ddpm_beta", "DDPM, σ² = β̃": "ddpm_beta_tilde" };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function bytesOf(buf) {
  if (buf instanceof ArrayBuffer) return new Uint8Array(buf);
  if (ArrayBuffer.isView(buf)) return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  throw new Error("unexpected model buffer");
}

// the book's static root (Sphinx writes data-content_root on <html>), else the page's folder
function staticUrl(rel) {
  const root = document.documentElement.dataset.content_root;
  return new URL(root !== undefined ? root + rel : rel, document.baseURI).href;
}

const sessions = new Map();      // model source → Promise of the onnxModel

function render({ model, el: host }) {
  const meta = model.get("meta");
  const staticSchedule = new Schedule(meta.schedule.betas), schedule = staticSchedule;
  const conditional = meta.num_classes !== null && meta.num_classes !== undefined;
  // In a kernel, Python answers the hello with its model (the reader's own, exported on the fly): its ONNX bytes,
  // metadata and caption. On a static page no one answers, and the first click fetches the shipped export.
  let kernel = null;
  const onMsg = (msg, buffers) => {
    if (msg && msg.type === "model" && buffers && buffers.length) {
      kernel = { bytes: bytesOf(buffers[0]), meta: msg.meta, schedule: new Schedule(msg.meta.schedule.betas) };
      if (msg.caption) captionEl.textContent = msg.caption;
    }
  };
  model.on("msg:custom", onMsg);
  model.send({ type: "hello" });

  const style = el("style", { text: CSS });
  const root = el("div", { class: "dl-live" });
  const range = (name, min, max, step, value, fmt) => {
    const input = el("input", { type: "range", min, max, step, "aria-label": name });
    input.value = value;
    const out = el("span", { class: "dl-out", text: fmt(+value) });
    input.addEventListener("input", () => { out.textContent = fmt(+input.value); });
    return { input, out, row: el("div", { class: "dl-row" }, el("label", { text: name }), input, out) };
  };
  // digit(s)
  const digit = el("select", { "aria-label": "digit" });
  for (let k = 0; k < (meta.num_classes || 0); k++) digit.append(el("option", { value: String(k), text: String(k) }));
  digit.append(el("option", { value: "all", text: "all, 0–9 in turn" }));
  digit.value = String(model.get("digit"));
  const w = range("guidance w", 0, 8, 0.5, model.get("w"), (v) => v.toFixed(1));
  const useInterval = el("input", { type: "checkbox", "aria-label": "guidance interval" });
  const iv = model.get("interval") || [0, 300];
  useInterval.checked = !!model.get("interval");
  const lo = el("input", { type: "number", min: 0, max: schedule.T - 1, value: iv[0], style: "width: 5em" });
  const hi = el("input", { type: "number", min: 0, max: schedule.T - 1, value: iv[1], style: "width: 5em" });
  const sampler = el("select", { "aria-label": "sampler" });
  for (const [text, value] of Object.entries(SAMPLERS)) sampler.append(el("option", { value, text }));
  sampler.value = model.get("sampler");
  const steps = range("DDIM steps", 1, Math.min(200, schedule.T), 1, model.get("steps"), (v) => String(v));
  const eta = range("DDIM η", 0, 1, 0.1, model.get("eta"), (v) => v.toFixed(1));
  const seed = el("input", { type: "number", min: 0, step: 1, value: model.get("seed"), style: "width: 7em", "aria-label": "seed" });
  const go = el("button", { class: "dl-go", text: "sample" });
  const status = el("div", { class: "dl-status", text: "Click “sample”: the model runs in this page." });
  const xCanvas = el("canvas", { "aria-label": "x_t" }), x0Canvas = el("canvas", { "aria-label": "predicted x0" });
  const traj = el("canvas", { "aria-label": "trajectory" });
  const rows = [];
  if (conditional) {
    rows.push(el("div", { class: "dl-row" }, el("label", { text: "digit" }), digit), w.row,
      el("div", { class: "dl-row" }, el("label", { text: "interval (8.2)" }), useInterval,
        el("span", { text: "guide only for code steps" }), lo, el("span", { text: "to" }), hi));
  }
  rows.push(el("div", { class: "dl-row" }, el("label", { text: "sampler" }), sampler), steps.row, eta.row,
    el("div", { class: "dl-row" }, el("label", { text: "seed" }), seed, go));
  const syncDdim = () => {
    const ddim = sampler.value === "ddim";
    steps.input.disabled = eta.input.disabled = !ddim;
  };
  sampler.addEventListener("change", syncDdim);
  syncDdim();
  const panes = el("div", { class: "dl-row", style: "align-items: flex-start; gap: 24px" },
    el("div", {}, el("div", { class: "dl-caption", text: "x_t" }), xCanvas),
    el("div", {}, el("div", { class: "dl-caption", text: "x̂₀ predicted from x_t" }), x0Canvas));
  const captionEl = el("div", { class: "dl-caption", text: model.get("caption") });
  root.append(...rows, status, panes, el("div", { class: "dl-caption", text: "trajectory of the first sample: x_t (top), x̂₀ (bottom)" }), traj,
    captionEl);
  host.append(style, root);

  const shape = meta.item_shape, B = model.get("batch");
  const getModel = async () => {
    // a kernel sent its model: sample that one; else fetch the page's export
    const k = kernel;
    const key = k ? k.bytes : staticUrl(model.get("model_url"));
    if (!sessions.has(key)) {
      const p = (async () => {
        let bytes = k ? k.bytes : null;
        if (!bytes) {
          const res = await fetch(key);
          if (!res.ok) throw new Error(`could not load the model from ${key} (HTTP ${res.status})`);
          bytes = new Uint8Array(await res.arrayBuffer());
        }
        return onnxModel(bytes, k ? k.meta : meta);
      })();
      p.catch(() => sessions.delete(key));
      sessions.set(key, p);
    }
    return sessions.get(key);
  };

  const drawTrajectory = (frames) => {
    const sel = frames.length > 10 ? frames.filter((_, i) => i % Math.ceil(frames.length / 10) === 0 || i === frames.length - 1) : frames;
    const D = shape.reduce((a, b) => a * b, 1), n = sel.length;
    const strip = new Float32Array(2 * n * D);
    sel.forEach((f, i) => { strip.set(f.x.subarray(0, D), i * D); strip.set(f.x0.subarray(0, D), (n + i) * D); });
    drawGrid(traj, strip, 2 * n, shape, { cols: n, scale: 4 });
  };

  let running = false;
  go.addEventListener("click", async () => {
    if (running) return;
    running = true; go.disabled = true;
    const t0 = performance.now();
    try {
      const s = sampler.value, dv = digit.value;
      const opts = {
        batch: B, noise: gaussian(Math.max(0, Math.floor(+seed.value || 0))),
        y: conditional ? Array.from({ length: B }, (_, i) => (dv === "all" ? i % meta.num_classes : +dv)) : null,
        w: conditional ? +w.input.value : 0,
        interval: conditional && useInterval.checked ? [+lo.value, +hi.value] : null,
        variance: s === "ddpm_beta_tilde" ? "beta_tilde" : "beta", steps: +steps.input.value, eta: +eta.input.value,
      };
      status.textContent = sessions.size ? "sampling…" : "loading onnxruntime-web and the model (first click only)…";
      const m = await getModel();
      const schedule = kernel ? kernel.schedule : staticSchedule;
      const tLoaded = performance.now();
      let last = 0;
      opts.onStep = async ({ i, n, t, x, x0 }) => {
        const now = performance.now();
        if (now - last > 100 || i === n - 1) {       // draw while it runs, at most ~10 times a second
          last = now;
          drawGrid(xCanvas, x, B, shape); drawGrid(x0Canvas, x0, B, shape);
          status.textContent = `step ${i + 1} of ${n} (paper step t = ${t})`;
          await new Promise((r) => setTimeout(r, 0));   // a macrotask: the browser may paint the frame
        }
      };
      const run = s === "ddim" ? ddimSample : ddpmSample;
      const out = await run(m, schedule, opts);
      drawGrid(xCanvas, out.x, B, shape); drawGrid(x0Canvas, out.x, B, shape);
      drawTrajectory(out.frames);
      const t1 = performance.now();
      const what = s === "ddim" ? `DDIM-${opts.steps}, η = ${opts.eta}` : `DDPM (${opts.variance === "beta" ? "σ² = β" : "σ² = β̃"}), ${schedule.T} steps`;
      const cfg = conditional ? `, w = ${opts.w}${opts.interval ? ` on [${opts.interval}]` : ""}` : "";
      status.textContent = `${B} samples, ${what}${cfg}, seed ${seed.value}: ${((t1 - tLoaded) / 1000).toFixed(2)} s in this page` +
        (tLoaded - t0 > 50 ? ` (+ ${((tLoaded - t0) / 1000).toFixed(2)} s loading)` : "");
      root.dataset.done = String((+root.dataset.done || 0) + 1);
      root.dataset.ms = String(t1 - t0);
      model.set("digit", dv === "all" ? "all" : +dv); model.set("w", opts.w); model.set("seed", +seed.value);
      model.set("sampler", s); model.set("steps", opts.steps); model.set("eta", opts.eta);
      model.save_changes();
    } catch (err) {
      status.textContent = "error: " + (err && err.message ? err.message : err);
      root.dataset.error = status.textContent;
      console.error(err);
    } finally {
      running = false; go.disabled = false;
    }
  });
  return () => model.off("msg:custom", onMsg);
}

export default { render };
