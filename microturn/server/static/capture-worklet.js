// AudioWorklet that turns the microphone into 16 kHz mono float32 blocks.
//
// The AudioContext runs at whatever rate the device gives (44.1 k, 48 k, ...), so we
// resample by the actual ratio `sampleRate / 16000` instead of assuming 48k/3: a windowed-
// sinc low-pass (to stop aliasing) followed by linear interpolation at fractional steps.
// Blocks of 320 samples (20 ms) go to the main thread: small enough for a responsive
// voice-activity detector, large enough to keep message traffic low.

const OUT_RATE = 16000;
const BLOCK = 320;
const TAPS = 31;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.kernel = lowPass(Math.min(0.5, 0.45 / this.step), TAPS);
    this.history = new Float32Array(TAPS); // ring of recent raw input
    this.hpos = 0;
    this.prev = 0; // last filtered sample, for interpolation across quanta
    this.pos = 0; // fractional read position relative to the current quantum
    this.block = new Float32Array(BLOCK);
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const x = input[0]; // mono: the first channel is enough for a microphone
    const n = x.length;
    // Low-pass the quantum; filtered[i + 1] is sample i, filtered[0] the previous tail.
    const filtered = new Float32Array(n + 1);
    filtered[0] = this.prev;
    for (let i = 0; i < n; i++) {
      this.history[this.hpos] = x[i];
      this.hpos = (this.hpos + 1) % TAPS;
      let acc = 0;
      for (let k = 0, h = this.hpos; k < TAPS; k++, h = (h + 1) % TAPS) {
        acc += this.kernel[k] * this.history[h];
      }
      filtered[i + 1] = acc;
    }
    // Read output samples at fractional positions in [0, n).
    while (this.pos < n) {
      const i = Math.floor(this.pos);
      const f = this.pos - i;
      this.block[this.fill++] = filtered[i] + f * (filtered[i + 1] - filtered[i]);
      if (this.fill === BLOCK) {
        this.port.postMessage(this.block, [this.block.buffer]);
        this.block = new Float32Array(BLOCK);
        this.fill = 0;
      }
      this.pos += this.step;
    }
    this.pos -= n;
    this.prev = filtered[n];
    return true;
  }
}

// Windowed-sinc (Blackman) low-pass; `cutoff` is a fraction of the input rate.
function lowPass(cutoff, taps) {
  const h = new Float32Array(taps);
  const m = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const t = i - m;
    const sinc = t === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * t) / (Math.PI * t);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) +
      0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * w;
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum; // unity gain at DC
  return h;
}

registerProcessor("microturn-capture", CaptureProcessor);
