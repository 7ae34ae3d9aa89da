"""The browser client (microturn/server/static/) in real Chromium against a real server.

Chromium gets a fake microphone fed from synthesized speech and a fake camera fed from a
generated .y4m; the page talks to an in-process server running an untrained tiny model.
We check both ends: what the page received (window.microturn counters) and what reached
the engine's session (audio that follows the speech's loudness, camera frames).

Needs Debian's /usr/bin/chromium and the playwright Python package (never
`playwright install`); see the shared browser-testing notes.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
RUN_S = 10.0
SR = 16000


def _need_browser_stack():
    app = pytest.importorskip(
        "microturn.server.app", reason="the server (microturn.server.app) is not written yet"
    )
    if not hasattr(app, "create_app") or not hasattr(app, "ServerThread"):
        pytest.skip("microturn.server.app has no create_app / ServerThread yet")
    pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (no browser download)"
    )
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    return app


def launch(p, tmp_path: Path, wav: Path | None = None, cam: Path | None = None):
    """Chromium as the shared notes say: fake media devices, sound not muted, fresh profile."""
    args = [
        "--use-fake-ui-for-media-stream",  # else getUserMedia fails with NotAllowedError
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav}%noloop")
    if cam is not None:
        args.append(f"--use-file-for-fake-video-capture={cam}")
    return p.chromium.launch_persistent_context(
        tempfile.mkdtemp(dir=tmp_path),  # a fresh profile, given here, not in args
        executable_path=str(CHROMIUM),
        headless=True,
        args=args,
        ignore_default_args=["--mute-audio"],
        viewport={"width": 1200, "height": 820},
    )


def watch(page, problems: list[str]) -> None:
    """Collect JS errors and console errors/warnings into `problems`."""

    def on_console(m) -> None:
        if m.type in ("error", "warning"):
            problems.append(f"console {m.type}: {m.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))


def write_y4m(path: Path, width: int = 160, height: int = 120, frames: int = 30, fps: int = 10):
    """A moving gradient as 4:2:0 YUV4MPEG2 (Chromium's fake camera rejects 4:4:4)."""
    yy, xx = np.mgrid[0:height, 0:width]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            f.write(b"FRAME\n")
            f.write(((xx + yy + 6 * i) % 256).astype(np.uint8).tobytes())
            f.write(np.full((height // 2) * (width // 2), 100, np.uint8).tobytes())  # U
            f.write(np.full((height // 2) * (width // 2), 150, np.uint8).tobytes())  # V


def user_speech(voice_cache) -> np.ndarray:
    """About 8 s: two utterances with pauses, so the page's VAD sees speech end twice."""
    from microturn.voices import synthesize

    def say(text: str) -> np.ndarray:
        return synthesize(text, "flite:rms", cache_dir=voice_cache).audio

    def gap(s: float) -> np.ndarray:
        return np.zeros(round(s * SR), np.float32)

    return np.concatenate(
        [
            gap(0.8),
            say("hello, can you hear me?"),
            gap(1.8),
            say("please remind me to breathe every five seconds"),
            gap(2.0),
        ]
    )


def envelope(x: np.ndarray, hop: int = 800) -> np.ndarray:
    """RMS per 50 ms."""
    n = x.size // hop
    return np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1))


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Highest Pearson correlation of a and b, b shifted either way by up to max_lag hops
    (the page drops what it captures before the server's ready, so b starts late)."""
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[lag:], b) if lag >= 0 else (a, b[-lag:])
        n = min(x.size, y.size)
        if n < 20:
            continue
        c = np.corrcoef(x[:n], y[:n])[0, 1]
        if np.isfinite(c):
            best = max(best, float(c))
    return best


def test_page_streams_both_ways(tmp_path, voice_cache, monkeypatch):
    app_mod = _need_browser_stack()
    from playwright.sync_api import sync_playwright

    from microturn.engine.engine import Session, load_model

    # What reaches the engine's sessions (called on the engine thread).
    got_audio: list[np.ndarray] = []
    got_frames: list[tuple] = []
    lock = threading.Lock()
    push_audio, push_frame = Session.push_audio, Session.push_frame

    def spy_audio(self, pcm, *a, **k):
        with lock:
            got_audio.append(np.asarray(pcm, np.float32).copy())
        return push_audio(self, pcm, *a, **k)

    def spy_frame(self, frame, *a, **k):
        with lock:
            got_frames.append(np.asarray(frame).shape)
        return push_frame(self, frame, *a, **k)

    monkeypatch.setattr(Session, "push_audio", spy_audio)
    monkeypatch.setattr(Session, "push_frame", spy_frame)

    speech = user_speech(voice_cache)
    wav = tmp_path / "mic.wav"
    sf.write(wav, speech, SR, subtype="PCM_16")
    cam = tmp_path / "cam.y4m"
    write_y4m(cam)

    model = load_model(None, "tiny", seed=0)
    problems: list[str] = []
    with app_mod.ServerThread(app_mod.create_app(model)) as srv, sync_playwright() as p:
        ctx = launch(p, tmp_path, wav, cam)
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            watch(page, problems)
            page.goto(srv.url + "/")
            page.click("#camera")
            page.click("#start")
            page.wait_for_function("window.microturn.ready !== null", timeout=20000)
            page.wait_for_timeout(RUN_S * 500)
            page.fill("#say-text", "what is seventeen times twenty three")
            page.press("#say-text", "Enter")
            page.wait_for_timeout(RUN_S * 500)
            stats = page.evaluate("({...window.microturn, ready: window.microturn.ready})")
            page.screenshot(path=str(tmp_path / "page.png"))
            shutil.copy(tmp_path / "page.png", "/tmp/browser-shot.png")
            page.click("#start")  # Stop: sends bye, closes cleanly
            page.wait_for_function("window.microturn.state === 'idle'", timeout=5000)
            status = page.inner_text("#status")
        finally:
            ctx.close()

    # The page: handshake, model audio and turns arrived, nothing went wrong.
    assert stats["ready"]["version"] == 1 and stats["ready"]["sample_rate"] == SR
    assert stats["audioIn"] >= 20, stats
    assert stats["turns"] >= 20, stats
    assert stats["audioOut"] >= 20 and stats["audioOutVoiced"] >= 5, stats
    assert stats["cameraOut"] >= 10, stats
    assert stats["errors"] == [], stats["errors"]
    assert status == "Stopped"
    assert problems == [], problems
    # Resampled by the context's real rate (44.1 or 48 kHz here), not by a guessed 3:1.
    assert stats["sampleRate"] > 0
    assert abs(stats["micRate"] - SR) < 0.02 * SR, stats
    if stats["audioInVoiced"] >= 10:  # the model was audible: the user talking over it barged in
        assert stats["bargeIns"] >= 1, stats

    # The server: 200 ms PCM16 chunks that follow the speech's loudness (Chrome's echo
    # canceller and gain control change samples, so compare envelopes, not samples).
    with lock:
        chunks = list(got_audio)
        frames = list(got_frames)
    assert len(chunks) >= 20
    assert {c.size for c in chunks} == {3200}
    heard = np.concatenate(chunks)
    voiced = (envelope(heard, 3200) > 0.01).sum()
    assert voiced >= 5, f"only {voiced} non-silent micro-turns reached the server"
    corr = best_correlation(envelope(speech), envelope(heard), max_lag=60)
    assert corr > 0.6, f"server audio does not follow the microphone's speech (r={corr:.2f})"
    # Camera: JPEGs decoded and fitted to the model's frame size.
    assert len(frames) >= 10
    assert all(shape[-1] == 3 for shape in frames)


def test_page_shows_token_refusal_then_connects_with_token(tmp_path):
    """A server that wants a token: without one the page shows the close reason (1008);
    with `?token=` in the page's URL it connects."""
    app_mod = _need_browser_stack()
    from playwright.sync_api import sync_playwright

    from microturn.engine.engine import load_model

    model = load_model(None, "tiny", seed=0)
    problems: list[str] = []
    app = app_mod.create_app(model, token="s3cret")
    with app_mod.ServerThread(app) as srv, sync_playwright() as p:
        ctx = launch(p, tmp_path)
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            watch(page, problems)
            page.goto(srv.url + "/")
            page.click("#start")
            page.wait_for_function("window.microturn.state === 'closed'", timeout=15000)
            assert page.is_visible("#error")
            assert "1008" in page.inner_text("#error-text")
            assert "token" in page.inner_text("#error-text")
            assert page.inner_text("#start") == "Start"
            page.screenshot(path=str(tmp_path / "refused.png"))

            page.goto(srv.url + "/?token=s3cret")
            page.click("#start")
            page.wait_for_function("window.microturn.ready !== null", timeout=15000)
            page.wait_for_function("window.microturn.audioIn >= 3", timeout=15000)
            assert not page.is_visible("#error")
            page.click("#start")
            page.wait_for_function("window.microturn.state === 'idle'", timeout=5000)
        finally:
            ctx.close()
    assert problems == [], problems


def test_player_falls_silent_when_stopped(tmp_path):
    """What the page does on speech_stop (and on barge-in): `Player.stop()` silences audio
    already scheduled. Measured at the player's output with an AnalyserNode in Chromium."""
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    import functools
    import http.server

    from playwright.sync_api import sync_playwright

    static = Path(__file__).resolve().parents[1] / "microturn" / "server" / "static"

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(static))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    problems: list[str] = []
    try:
        with sync_playwright() as p:
            ctx = launch(p, tmp_path)
            page = ctx.new_page()
            watch(page, problems)
            page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/style.css")
            levels = page.evaluate(
                """async () => {
                  const { Player } = await import("/player.js");
                  const ctx = new AudioContext();
                  await ctx.resume();
                  const player = new Player(ctx);
                  const meter = ctx.createAnalyser();
                  meter.fftSize = 2048;
                  player.out.connect(meter);
                  const level = () => {
                    const b = new Float32Array(meter.fftSize);
                    meter.getFloatTimeDomainData(b);
                    return Math.sqrt(b.reduce((s, x) => s + x * x, 0) / b.length);
                  };
                  const tone = new Int16Array(3200).map(
                    (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / 16000)));
                  for (let k = 0; k < 10; k++) player.play(tone); // 2 s queued
                  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
                  await wait(400);
                  const before = { rms: level(), playing: player.playing };
                  player.stop();
                  await wait(200);
                  return { before, after: { rms: level(), playing: player.playing } };
                }"""
            )
            ctx.close()
    finally:
        server.shutdown()
    assert not problems, problems
    assert levels["before"]["playing"] and levels["before"]["rms"] > 0.05, levels
    assert not levels["after"]["playing"] and levels["after"]["rms"] < 1e-3, levels
