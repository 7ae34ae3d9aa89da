// A scrolling timeline on a canvas: one lane each for the user's speech, the model's
// speech, the model's text and delegations. Times are performance.now() milliseconds;
// "now" sits at the right edge and the last WINDOW_MS scroll to the left.

const WINDOW_MS = 20000;
const LABEL_W = 92;
const LANES = [
  { key: "user", name: "You speak", color: "#2f7de1" },
  // Two sources for one lane: speech_start/stop events (faint) and audible audio (solid).
  { key: "model", name: "Model speaks", color: "#e0803a", faint: ["modelEvent"] },
  { key: "text", name: "Model text", color: "#7a5bd6" },
  { key: "think", name: "Delegation", color: "#2e9e6a" },
];
const KEYS = LANES.flatMap((l) => [l.key, ...(l.faint || [])]);

export class Timeline {
  constructor(canvas) {
    this.canvas = canvas;
    this.spans = Object.fromEntries(KEYS.map((k) => [k, []]));
    this.marks = []; // delegation events: {t, label}
    this.running = false;
  }

  // Open a span in `lane` (no-op if one is open); label may be updated later.
  begin(lane, t, label = "") {
    const list = this.spans[lane];
    const last = list[list.length - 1];
    if (last && last.end === null) return last;
    const span = { start: t, end: null, label };
    list.push(span);
    return span;
  }

  end(lane, t) {
    const list = this.spans[lane];
    const last = list[list.length - 1];
    if (last && last.end === null) last.end = Math.max(t, last.start);
  }

  // A closed span (e.g. one chunk of model audio); merges with the previous if they touch.
  add(lane, start, end) {
    const list = this.spans[lane];
    const last = list[list.length - 1];
    if (last && last.end !== null && start - last.end < 250) last.end = Math.max(last.end, end);
    else list.push({ start, end, label: "" });
  }

  mark(t, label) {
    this.marks.push({ t, label });
  }

  startDrawing() {
    if (this.running) return;
    this.running = true;
    const frame = () => {
      if (!this.running) return;
      this.draw();
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }

  stopDrawing() {
    this.running = false;
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const now = performance.now();
    const t0 = now - WINDOW_MS;
    const plotW = w - LABEL_W;
    const x = (t) => LABEL_W + ((t - t0) / WINDOW_MS) * plotW;
    const laneH = (h - 18) / LANES.length;

    // Grid: a line per second, labelled every five.
    g.font = "11px system-ui, sans-serif";
    g.textBaseline = "middle";
    for (let s = Math.ceil(t0 / 1000); s * 1000 <= now; s++) {
      const gx = x(s * 1000);
      g.fillStyle = s % 5 === 0 ? "#d5dae3" : "#eef1f5";
      g.fillRect(gx, 0, 1, h - 18);
      if (s % 5 === 0) {
        g.fillStyle = "#8a93a3";
        g.fillText(`${Math.round((s * 1000 - now) / 1000)} s`, gx - 8, h - 8);
      }
    }

    LANES.forEach((lane, i) => {
      const y = i * laneH;
      g.fillStyle = i % 2 ? "#f7f9fb" : "#fbfcfd";
      g.fillRect(LABEL_W, y, plotW, laneH);
      g.fillStyle = "#4a5363";
      g.fillText(lane.name, 8, y + laneH / 2);
      const barY = y + laneH * 0.2;
      const barH = laneH * 0.6;
      const layers = [...(lane.faint || []).map((k) => [k, true]), [lane.key, lane.key === "text"]];
      for (const [key, faint] of layers) {
        const list = this.spans[key];
        list.forEach((span, j) => {
          const end = span.end === null ? now : span.end;
          if (end < t0) return;
          const a = Math.max(x(span.start), LABEL_W);
          const b = Math.max(x(end), a + 2);
          g.fillStyle = lane.color;
          g.globalAlpha = faint ? 0.2 : 0.85;
          roundRect(g, a, barY, b - a, barH, 4);
          g.globalAlpha = 1;
          // Text is written faster than it is spoken, so spans are short: let the label run
          // on to the next span instead of clipping it to its own bar.
          const limit = j + 1 < list.length ? x(list[j + 1].start) : w;
          if (span.label) fitText(g, span.label, a + 4, barY + barH / 2, limit - a - 10, "#3b2a78");
        });
      }
      if (lane.key === "think") {
        this.marks.forEach((m, j) => {
          if (m.t < t0) return;
          const mx = x(m.t);
          g.fillStyle = lane.color;
          g.beginPath();
          g.arc(mx, y + laneH / 2, 4, 0, 2 * Math.PI);
          g.fill();
          const limit = j + 1 < this.marks.length ? x(this.marks[j + 1].t) : w;
          fitText(g, m.label, mx + 8, y + laneH / 2, limit - mx - 14, "#225f44");
        });
      }
    });
    this._prune(t0);
  }

  // Forget what scrolled out of view so long sessions stay cheap.
  _prune(t0) {
    for (const list of Object.values(this.spans)) {
      while (list.length && list[0].end !== null && list[0].end < t0) list.shift();
    }
    while (this.marks.length && this.marks[0].t < t0 - 5000) this.marks.shift();
  }
}

// Draws `text` cut with an ellipsis to at most `maxW` pixels (nothing if there is no room).
function fitText(g, text, x, y, maxW, color) {
  if (maxW < 14) return;
  let t = text.length > maxW / 4 ? text.slice(0, Math.ceil(maxW / 4)) : text; // no glyph < 4 px
  if (g.measureText(t).width > maxW) {
    while (t.length > 1 && g.measureText(`${t}…`).width > maxW) t = t.slice(0, -1);
    t = `${t.trimEnd()}…`;
  }
  g.fillStyle = color;
  g.fillText(t, x, y);
}

function roundRect(g, x, y, w, h, r) {
  g.beginPath();
  g.roundRect ? g.roundRect(x, y, w, h, r) : g.rect(x, y, w, h);
  g.fill();
}
