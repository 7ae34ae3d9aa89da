// Playback of the model's speech: each 200 ms PCM16 chunk becomes an AudioBuffer scheduled
// right after the previous one, so chunks play gap-free. stop() silences everything at
// once (speech_stop from the server, or the user barging in).

const RATE = 16000;
const START_DELAY_S = 0.03; // headroom so the first chunk is not scheduled in the past
const MAX_LEAD_S = 0.6; // if we fall this far behind real time, drop audio to catch up
export const SILENCE_RMS = 0.01; // below this a chunk counts as silence

export class Player {
  constructor(ctx) {
    this.ctx = ctx;
    this.out = ctx.createGain();
    this.out.connect(ctx.destination);
    this.sources = new Set();
    this.queueEnd = 0;
  }

  // Plays `pcm` (Int16Array at 16 kHz). Returns {rms, startsAt} where startsAt is when it
  // becomes audible in performance.now() milliseconds, or null if it was dropped.
  play(pcm) {
    const ctx = this.ctx;
    const buf = ctx.createBuffer(1, pcm.length, RATE); // the context resamples to its rate
    const ch = buf.getChannelData(0);
    let sum = 0;
    for (let i = 0; i < pcm.length; i++) {
      ch[i] = pcm[i] / 0x8000;
      sum += ch[i] * ch[i];
    }
    const rms = Math.sqrt(sum / Math.max(1, pcm.length));
    const now = ctx.currentTime;
    const at = Math.max(now + START_DELAY_S, this.queueEnd);
    if (at - now > MAX_LEAD_S) return { rms, startsAt: null }; // clock drift: skip a chunk
    const src = ctx.createBufferSource();
    src.buffer = buf;
    src.connect(this.out);
    src.onended = () => this.sources.delete(src);
    src.start(at);
    this.sources.add(src);
    this.queueEnd = at + buf.duration;
    return { rms, startsAt: performance.now() + (at - now) * 1000 };
  }

  // True while something scheduled is still audible.
  get playing() {
    return this.sources.size > 0 && this.ctx.currentTime < this.queueEnd;
  }

  stop() {
    for (const src of this.sources) {
      try {
        src.stop();
      } catch {
        // already stopped
      }
    }
    this.sources.clear();
    this.queueEnd = 0;
  }
}
