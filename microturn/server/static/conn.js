// The WebSocket side of protocol version 1 (docs/protocol.md).
//
// Connection owns the socket, the hello/ready handshake and resuming a dropped session;
// it knows nothing about audio or the page. Callers get callbacks:
//   onReady(ready), onAudio(Int16Array), onMessage(obj), onState(text, kind), onClose(code, reason, willRetry)

export const KIND_AUDIO = 0x01;
export const KIND_CAMERA = 0x02;

// Close codes the server uses, in words a user understands.
const CLOSE_REASONS = {
  1000: "session closed",
  1006: "connection lost",
  1008: "not allowed (missing or wrong token?)",
  1009: "a message was too large",
  4001: "the server is full, try again later",
  4002: "closed after being idle",
  4003: "the session could not be resumed",
  4004: "protocol version not supported by the server",
};

// The server's own reason when it gave one (it is specific), else our words for the code.
export function describeClose(code, reason) {
  const words = reason || CLOSE_REASONS[code] || "closed";
  return `${words} (close code ${code})`;
}

// Codes after which reconnecting with the resume token can help: the network went away.
const RETRYABLE = new Set([1001, 1006, 1011, 1012, 1013]);
const RESUME_WINDOW_MS = 30000; // the server keeps a dropped session this long

export class Connection {
  constructor(handlers) {
    this.h = handlers;
    this.ws = null;
    this.ready = null;
    this.resumeToken = null;
    this.droppedAt = 0;
    this.stopped = true;
    this.pingTimer = null;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.ready !== null;
  }

  start() {
    this.stopped = false;
    this.resumeToken = null;
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.pingTimer);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "bye" }));
    }
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.ready = null;
  }

  sendJSON(obj) {
    if (this.open) this.ws.send(JSON.stringify(obj));
  }

  // One binary frame: the kind byte, then the payload bytes.
  sendBinary(kind, payload) {
    if (!this.open) return false;
    const bytes = new Uint8Array(payload.byteLength + 1);
    bytes[0] = kind;
    bytes.set(new Uint8Array(payload.buffer || payload, payload.byteOffset || 0, payload.byteLength), 1);
    if (bytes.byteLength > this.ready.max_message_bytes) return false; // would get us closed (1009)
    this.ws.send(bytes);
    return true;
  }

  _url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const token = new URLSearchParams(location.search).get("token");
    const query = token ? `?token=${encodeURIComponent(token)}` : "";
    return `${scheme}//${location.host}/ws${query}`;
  }

  _connect() {
    const resuming = this.resumeToken !== null;
    this.h.onState(resuming ? "Reconnecting…" : "Connecting…", "busy");
    const ws = new WebSocket(this._url());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      const hello = { type: "hello", version: 1 };
      if (resuming) hello.resume = this.resumeToken;
      ws.send(JSON.stringify(hello));
      this.h.onState("Waiting for the server…", "busy");
    };
    ws.onmessage = (ev) => this._onMessage(ev.data);
    ws.onclose = (ev) => this._onClose(ws, ev.code, ev.reason);
  }

  _onMessage(data) {
    if (data instanceof ArrayBuffer) {
      const kind = new Uint8Array(data, 0, 1)[0];
      // PCM16 LE payload starts at byte 1: copy out so Int16Array is aligned.
      if (kind === KIND_AUDIO && data.byteLength > 1) {
        const n = (data.byteLength - 1) >> 1;
        const pcm = new Int16Array(n);
        const view = new DataView(data, 1);
        for (let i = 0; i < n; i++) pcm[i] = view.getInt16(2 * i, true);
        this.h.onAudio(pcm);
      }
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return; // the server only sends JSON text; ignore anything else
    }
    if (msg.type === "ready") {
      this.ready = msg;
      this.resumeToken = msg.resume_token || null;
      this.droppedAt = 0;
      clearInterval(this.pingTimer);
      // Keep a text-only session alive past idle_timeout_s and show the round trip.
      const every = Math.max(2, Math.min(15, (msg.idle_timeout_s || 60) / 4)) * 1000;
      const ping = () => this.sendJSON({ type: "ping", t: performance.now() });
      this.pingTimer = setInterval(ping, every);
      this.h.onReady(msg);
      ping();
      return;
    }
    this.h.onMessage(msg);
  }

  _onClose(ws, code, reason) {
    if (ws !== this.ws) return; // an old socket we already replaced
    clearInterval(this.pingTimer);
    this.ready = null;
    this.ws = null;
    if (this.stopped) return;
    const now = performance.now();
    if (RETRYABLE.has(code) && this.resumeToken) {
      if (!this.droppedAt) this.droppedAt = now;
      if (now - this.droppedAt < RESUME_WINDOW_MS) {
        this.h.onClose(code, reason, true);
        setTimeout(() => !this.stopped && this._connect(), 1000);
        return;
      }
    }
    this.stopped = true;
    // 1006 before any ready: the socket never opened or the server vanished at once.
    const why = code === 1006 && !this.resumeToken ? "could not reach the server" : reason;
    this.h.onClose(code, why, false);
  }
}
