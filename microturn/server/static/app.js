// The page: wires the connection, microphone, playback, camera and timeline together and
// keeps the visible state (status, transcript, latency, errors) up to date.
//
// Everything a test needs to check is mirrored on `window.microturn` (counters only; no
// audio is kept).

import { Camera } from "./camera.js";
import { Connection, KIND_AUDIO, KIND_CAMERA, describeClose } from "./conn.js";
import { Mic } from "./mic.js";
import { Player, SILENCE_RMS } from "./player.js";
import { Timeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"),
  camera: $("camera"),
  status: $("status"),
  error: $("error"),
  errorText: $("error-text"),
  errorClose: $("error-close"),
  transcript: $("transcript"),
  empty: $("transcript-empty"),
  form: $("say"),
  input: $("say-text"),
  preview: $("preview"),
  previewEmpty: $("preview-empty"),
  latLast: $("lat-last"),
  latMedian: $("lat-median"),
  latCount: $("lat-count"),
  level: $("level"),
  micState: $("mic-state"),
  info: $("info"),
};

const stats = {
  state: "idle",
  ready: null,
  audioIn: 0, // model audio chunks received
  audioInVoiced: 0, // ... of which not silent
  turns: 0,
  textTurns: 0,
  events: 0,
  audioOut: 0, // mic chunks sent
  audioOutVoiced: 0,
  cameraOut: 0,
  bargeIns: 0,
  errors: [],
  latencies: [],
  rttMs: null,
  sampleRate: null, // the AudioContext's rate
  micRate: null, // 16 kHz samples the mic produced per second of audio clock
};
window.microturn = stats;

const timeline = new Timeline($("timeline"));
timeline.startDrawing();
let ctx = null;
let player = null;
let mic = null;
const camera = new Camera(ui.preview, (jpeg) => {
  if (conn.sendBinary(KIND_CAMERA, jpeg)) stats.cameraOut++;
});

// ---- latency: end of the user's speech -> first audible, non-silent model audio ----
let pendingEnd = null; // when the user's last utterance ended (ms), waiting for a reply
let earlyReply = null; // model audio that started during the 400 ms end-of-speech wait
let suppress = false; // after a barge-in, drop model audio until the user stops talking

function recordLatency(ms) {
  stats.latencies.push(ms);
  const sorted = [...stats.latencies].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  ui.latLast.textContent = `${Math.round(ms)} ms`;
  ui.latMedian.textContent = `${Math.round(median)} ms`;
  ui.latCount.textContent =
    `${sorted.length} repl${sorted.length === 1 ? "y" : "ies"} measured, from the end of your speech to the model's first sound.`;
}

function onVad(v) {
  ui.level.style.width = `${Math.min(100, Math.sqrt(v.level || 0) * 250)}%`;
  const micText = v.speaking ? "You are speaking" : "Listening";
  if (ui.micState.textContent !== micText) ui.micState.textContent = micText;
  if (v.startedAt !== undefined) {
    timeline.begin("user", v.startedAt);
    pendingEnd = null;
    earlyReply = null;
  } else if (v.endedAt !== undefined) {
    timeline.end("user", v.endedAt);
    suppress = false;
    if (earlyReply !== null && earlyReply >= v.endedAt) recordLatency(earlyReply - v.endedAt);
    else pendingEnd = v.endedAt;
    earlyReply = null;
  }
  // Barge-in: the user's voice while the model is audible stops playback at once.
  if (v.speaking && v.voiced && player && player.playing) {
    player.stop();
    suppress = true;
    stats.bargeIns++;
  }
}

function onModelAudio(pcm) {
  stats.audioIn++;
  if (!player) return; // stopped: late frames from a closing socket
  let rms;
  let startsAt = performance.now();
  if (suppress) {
    rms = rmsOf(pcm); // counted but not played: the user is talking over the model
  } else {
    const r = player.play(pcm);
    rms = r.rms;
    if (r.startsAt !== null) startsAt = r.startsAt;
  }
  if (rms < SILENCE_RMS) return;
  stats.audioInVoiced++;
  if (suppress) return;
  timeline.add("model", startsAt, startsAt + (pcm.length / 16000) * 1000);
  if (pendingEnd !== null && startsAt >= pendingEnd) {
    recordLatency(startsAt - pendingEnd);
    pendingEnd = null;
  } else if (mic && mic.speaking && (earlyReply === null || earlyReply < mic.lastVoiceAt)) {
    // Maybe the reply to speech that is just ending: the VAD's end decides (onVad).
    earlyReply = startsAt;
  }
}

function rmsOf(pcm) {
  let sum = 0;
  for (let i = 0; i < pcm.length; i++) sum += (pcm[i] / 0x8000) ** 2;
  return Math.sqrt(sum / Math.max(1, pcm.length));
}

// ---- model text: turns concatenate into one message until eom ----
let message = null; // {el, text, span}
let lastTurnInfo = "";

function onTurn(msg) {
  stats.turns++;
  const now = performance.now();
  if (msg.text) {
    stats.textTurns++;
    if (message === null) {
      message = { el: addLine("model", ""), text: "", span: timeline.begin("text", now) };
      message.el.classList.add("live");
    }
    message.text += msg.text;
    message.el.querySelector(".body").textContent = message.text;
    message.span.label = message.text;
    scrollTranscript();
  }
  if (msg.eom && message !== null) {
    timeline.end("text", now);
    message.el.classList.remove("live");
    message = null;
  }
  const missing = msg.missing && msg.missing.length ? ` · missing ${msg.missing.join(", ")}` : "";
  lastTurnInfo = `turn ${msg.turn} · step ${fmt(msg.step_ms)} ms · late ${fmt(msg.lateness_ms)} ms${missing}`;
  setInfo(lastTurnInfo);
}

function onEvent(msg) {
  stats.events++;
  const now = performance.now();
  if (msg.kind === "speech_start") {
    timeline.begin("modelEvent", now);
  } else if (msg.kind === "speech_stop") {
    timeline.end("modelEvent", now);
    if (player) player.stop(); // the model stopped: cut what is still queued
  } else {
    const words = { delegate: "asked", delegation_result: "result", delegation_spoken: "said" };
    const label = `${words[msg.kind] || msg.kind}: ${msg.text || ""}`;
    timeline.mark(now, label.length > 48 ? `${label.slice(0, 47)}…` : label);
    addLine("note", `Delegation ${label}`);
  }
}

function onMessage(msg) {
  if (msg.type === "turn") onTurn(msg);
  else if (msg.type === "event") onEvent(msg);
  else if (msg.type === "pong") {
    stats.rttMs = performance.now() - msg.t;
    setInfo(lastTurnInfo);
  }
  else if (msg.type === "error") {
    stats.errors.push(`${msg.code}: ${msg.message}`);
    showError(`The server rejected a message (${msg.code}): ${msg.message}`);
  }
}

// ---- transcript ----
function addLine(kind, text) {
  ui.empty.hidden = true;
  const el = document.createElement("div");
  el.className = `line ${kind}`;
  const who = { model: "Model", user: "You (typed)", note: "" }[kind];
  el.innerHTML = `<span class="who"></span><span class="body"></span>`;
  el.querySelector(".who").textContent = who;
  el.querySelector(".body").textContent = text;
  ui.transcript.appendChild(el);
  scrollTranscript();
  return el;
}

function scrollTranscript() {
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

// ---- status and errors ----
function setStatus(text, kind) {
  ui.status.textContent = text;
  ui.status.className = `pill ${kind}`;
}

function showError(text) {
  ui.errorText.textContent = text;
  ui.error.hidden = false;
}

function setInfo(text) {
  const parts = [];
  if (stats.ready) parts.push(`session ${stats.ready.session}`);
  if (stats.sampleRate) parts.push(`mic ${stats.sampleRate} Hz → 16 kHz`);
  if (stats.rttMs !== null) parts.push(`ping ${Math.round(stats.rttMs)} ms`);
  if (text) parts.push(text);
  ui.info.textContent = parts.join(" · ");
}

const fmt = (v) => (typeof v === "number" ? v.toFixed(0) : "–");

// ---- connection ----
const conn = new Connection({
  onReady(ready) {
    stats.ready = ready;
    stats.state = "ready";
    setStatus(ready.resumed ? "Live (resumed)" : "Live", "ok");
    ui.input.disabled = false;
    if (camera.on) camera.setFps(ready.camera_fps);
    setInfo("");
  },
  onAudio: onModelAudio,
  onMessage,
  onState(text, kind) {
    stats.state = kind === "busy" ? "connecting" : stats.state;
    setStatus(text, kind);
  },
  onClose(code, reason, willRetry) {
    ui.input.disabled = true;
    if (willRetry) {
      setStatus("Connection lost, reconnecting…", "busy");
      return;
    }
    stats.state = "closed";
    const text = describeClose(code, reason);
    if (code !== 1000) showError(`Disconnected: ${text}`);
    stopSession("Disconnected", code === 1000 ? "idle" : "bad");
  },
});

async function startSession() {
  ui.error.hidden = true;
  ui.start.textContent = "Stop";
  ui.start.classList.add("stop");
  stats.state = "connecting";
  ctx = new AudioContext();
  await ctx.resume().catch(() => {});
  stats.sampleRate = ctx.sampleRate;
  player = new Player(ctx);
  conn.start();
  const m = new Mic(ctx, {
    onChunk(pcm) {
      stats.micRate = m.measuredRate;
      if (conn.sendBinary(KIND_AUDIO, pcm)) {
        stats.audioOut++;
        if (rmsOf(pcm) >= SILENCE_RMS) stats.audioOutVoiced++;
      }
    },
    onVad,
  });
  mic = m;
  try {
    await m.start();
  } catch (e) {
    if (mic !== m) return; // the session already ended; the failure does not matter
    showError(`Microphone unavailable (${e.name}): you can still type. ${e.message}`);
    ui.micState.textContent = "Unavailable";
    mic = null;
  }
}

function stopSession(text = "Stopped", kind = "idle") {
  conn.stop();
  if (mic) mic.stop();
  mic = null;
  camera.stop();
  setCameraButton();
  if (player) player.stop();
  player = null;
  if (ctx) ctx.close();
  ctx = null;
  if (message !== null) {
    message.el.classList.remove("live");
    timeline.end("text", performance.now());
    message = null;
  }
  timeline.end("modelEvent", performance.now());
  pendingEnd = null;
  earlyReply = null;
  suppress = false;
  stats.ready = null;
  if (stats.state !== "closed") stats.state = "idle";
  ui.input.disabled = true;
  ui.start.textContent = "Start";
  ui.start.classList.remove("stop");
  ui.level.style.width = "0";
  ui.micState.textContent = "Off until you press Start.";
  setStatus(text, kind);
}

function setCameraButton() {
  ui.camera.textContent = camera.on ? "Camera on" : "Camera off";
  ui.camera.setAttribute("aria-pressed", String(camera.on));
  ui.preview.hidden = !camera.on;
  ui.previewEmpty.hidden = camera.on;
}

// ---- controls ----
ui.start.addEventListener("click", () => {
  if (ui.start.textContent === "Start") startSession();
  else stopSession();
});

ui.camera.addEventListener("click", async () => {
  if (camera.on) camera.stop();
  else {
    try {
      await camera.start(stats.ready ? stats.ready.camera_fps : 5);
    } catch (e) {
      showError(`Camera unavailable (${e.name}): ${e.message}`);
    }
  }
  setCameraButton();
});

ui.form.addEventListener("submit", (ev) => {
  ev.preventDefault(); // Enter in the box submits the form: send, do not reload
  const text = ui.input.value.trim().slice(0, 1000);
  if (!text || !conn.open) return;
  conn.sendJSON({ type: "text", text });
  addLine("user", text);
  ui.input.value = "";
});

ui.errorClose.addEventListener("click", () => {
  ui.error.hidden = true;
});

window.addEventListener("pagehide", () => conn.stop());
setCameraButton();
