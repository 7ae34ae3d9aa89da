// Microphone capture: getUserMedia -> AudioWorklet (16 kHz) -> 200 ms PCM16 chunks,
// plus a small energy-based voice-activity detector that drives the timeline, barge-in
// and the latency measurement.

const CHUNK = 3200; // one micro-turn at 16 kHz
const BLOCK_MS = 20; // the worklet's block size
const ONSET_BLOCKS = 3; // 60 ms above threshold before we call it speech (ignores clicks)
export const END_SILENCE_MS = 400; // speech ends after this much below threshold

export class Mic {
  // Both callbacks run on the main thread: onChunk(Int16Array of 3200 samples) and
  // onVad({speaking, voiced, level}) per 20 ms block, with startedAt / endedAt
  // (performance.now() ms) on the block where speech starts / ends.
  constructor(ctx, { onChunk, onVad }) {
    this.ctx = ctx;
    this.onChunk = onChunk;
    this.onVad = onVad;
    this.stream = null;
    this.node = null;
    this.pcm = new Int16Array(CHUNK);
    this.fill = 0;
    // VAD state. The threshold adapts to the room: a few times the noise floor, never
    // below an absolute minimum, so a quiet mic and a noisy fan both work.
    this.floor = 0.003;
    this.above = 0;
    this.speaking = false;
    this.lastVoiceAt = 0;
    this.stopped = false;
    // Samples produced vs the audio clock: shows the resampling ratio is right (~16000/s).
    this.samples = 0;
    this.clockStart = null;
  }

  get measuredRate() {
    const span = this.clockStart === null ? 0 : this.ctx.currentTime - this.clockStart;
    return span > 1 ? this.samples / span : null;
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        channelCount: 1,
        // Echo cancellation keeps the model's own voice (from the speakers) out of the mic,
        // which would otherwise trigger barge-in and confuse the model.
        echoCancellation: true,
        noiseSuppression: true,
        autoGainControl: true,
      },
    });
    // The session may end while we wait for permission or the module (e.g. a refused
    // token): then build nothing on the closed context and release the device.
    if (this.stopped) return this.stop();
    const url = new URL("./capture-worklet.js", import.meta.url);
    await this.ctx.audioWorklet.addModule(url);
    if (this.stopped) return this.stop();
    const source = this.ctx.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(this.ctx, "microturn-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
    });
    // A node that does not reach the destination may never be run: route through gain 0.
    const mute = this.ctx.createGain();
    mute.gain.value = 0;
    source.connect(this.node).connect(mute).connect(this.ctx.destination);
    this.node.port.onmessage = (ev) => this._block(ev.data);
  }

  stop() {
    this.stopped = true;
    if (this.node) this.node.port.onmessage = null;
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = null;
    this.node = null;
    this.fill = 0;
    if (this.speaking) {
      this.speaking = false;
      this.onVad({ speaking: false, level: 0, endedAt: this.lastVoiceAt });
    }
  }

  get threshold() {
    return Math.max(0.01, this.floor * 4);
  }

  _block(x) {
    if (this.clockStart === null) this.clockStart = this.ctx.currentTime - x.length / 16000;
    this.samples += x.length;
    // Float -> PCM16, appended to the outgoing chunk.
    let sum = 0;
    for (let i = 0; i < x.length; i++) {
      const v = Math.max(-1, Math.min(1, x[i]));
      sum += v * v;
      this.pcm[this.fill++] = v < 0 ? v * 0x8000 : v * 0x7fff;
      if (this.fill === CHUNK) {
        this.onChunk(this.pcm);
        this.pcm = new Int16Array(CHUNK);
        this.fill = 0;
      }
    }
    this._vad(Math.sqrt(sum / x.length));
  }

  _vad(rms) {
    const now = performance.now();
    const voiced = rms > this.threshold;
    // Track the noise floor only in non-speech: fast down, slow up.
    if (!voiced) this.floor = rms < this.floor ? 0.7 * this.floor + 0.3 * rms : 0.995 * this.floor + 0.005 * rms;
    this.above = voiced ? this.above + 1 : 0;
    if (voiced && (this.speaking || this.above >= ONSET_BLOCKS)) this.lastVoiceAt = now;
    if (!this.speaking && this.above >= ONSET_BLOCKS) {
      this.speaking = true;
      // Speech began when the first voiced block of the onset arrived.
      this.onVad({ speaking: true, voiced, level: rms, startedAt: now - (ONSET_BLOCKS - 1) * BLOCK_MS });
    } else if (this.speaking && now - this.lastVoiceAt >= END_SILENCE_MS) {
      this.speaking = false;
      this.onVad({ speaking: false, level: rms, endedAt: this.lastVoiceAt });
    } else {
      this.onVad({ speaking: this.speaking, level: rms, voiced });
    }
  }
}
