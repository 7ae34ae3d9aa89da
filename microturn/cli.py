"""`microturn ...` sub-commands: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # the trainer owns its flags (also run by torchrun)
        from microturn.train.__main__ import main as train_main

        return train_main(argv[1:], prog="microturn train")
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # e.g. a missing speech synthesizer
        print(f"error: {err}", file=sys.stderr)
        return 3


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="microturn", description=__doc__)
    sub = p.add_subparsers(title="commands")

    codec = sub.add_parser("codec", help="audio codec tools").add_subparsers(title="codec")
    rt = codec.add_parser("roundtrip", help="encode a WAV to dMel and decode it back")
    rt.add_argument("input", type=Path, help="16 kHz mono WAV")
    rt.add_argument("output", type=Path, help="where to write what dMel keeps")
    rt.add_argument("--resample", action="store_true", help="convert other sample rates")
    rt.add_argument("--mixdown", action="store_true", help="average stereo to mono")
    rt.add_argument("--method", choices=["pinv", "nnls"], default="pinv")
    rt.add_argument("--iters", type=int, default=32, help="Griffin-Lim iterations")
    rt.add_argument("--plot", type=Path, help="also write a PNG of the dMel bins, before/after")
    rt.set_defaults(run=_cmd_roundtrip)

    say = sub.add_parser("say", help="synthesize speech (espeak-ng or flite) to a WAV")
    say.add_argument("text")
    say.add_argument("output", type=Path)
    say.add_argument(
        "--voice", default="espeak-ng:en-us", help="e.g. espeak-ng:en-us+f3, flite:slt"
    )
    say.add_argument("--rate", type=int, help="words per minute")
    say.add_argument("--pitch", type=int, help="0..99")
    say.set_defaults(run=_cmd_say)

    voices = sub.add_parser("voices", help="list the voices this machine can synthesize")
    voices.add_argument("--engine", choices=["espeak-ng", "flite"])
    voices.set_defaults(run=_cmd_voices)

    layout = sub.add_parser("layout", help="show where every slot of a micro-turn goes")
    layout.add_argument("--preset", default="tiny")
    layout.set_defaults(run=_cmd_layout)

    run = sub.add_parser("run", help="replay a recording through the model, write its Timeline")
    run.add_argument("--audio", type=Path, required=True, help="the user's audio (16 kHz mono WAV)")
    cam = run.add_mutually_exclusive_group()
    cam.add_argument("--video", type=Path, help="camera clip (mp4, webm, ...)")
    cam.add_argument("--frames", type=Path, help="folder of camera images")
    run.add_argument("--fps", type=float, default=5.0, help="frame rate of --frames")
    run.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="SECONDS:TEXT",
        help='typed message at a time, e.g. "12.5:hello" (repeatable)',
    )
    run.add_argument("--model", type=Path, help="checkpoint folder (default: the shipped one)")
    run.add_argument("--preset", help="use a randomly initialised preset instead (e.g. tiny)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", type=Path, required=True, help="Timeline JSON to write")
    run.add_argument("--wav", type=Path, help="also write the model's speech")
    run.add_argument("--resample", action="store_true")
    run.add_argument("--mixdown", action="store_true")
    run.set_defaults(run=_cmd_run)

    bench = sub.add_parser("bench", help="measure and write reports").add_subparsers(title="bench")
    bm = bench.add_parser("model", help="parameter counts, step time, training throughput")
    bm.add_argument("--out", type=Path, default=Path("out/bench"))
    bm.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    bm.set_defaults(run=_cmd_bench_model)

    be = bench.add_parser("engine", help="live sessions in real time, re-prefill, long runs")
    be.add_argument("--out", type=Path, default=Path("out/bench"))
    be.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    be.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    be.set_defaults(run=_cmd_bench_engine)

    bs = bench.add_parser("server", help="concurrent loopback clients through the live server")
    bs.add_argument("--model", type=Path, help="checkpoint folder (default: the shipped one)")
    bs.add_argument("--seconds", type=float, default=10.0, help="per client and count")
    bs.add_argument("--out", type=Path, default=Path("out/bench"))
    bs.set_defaults(run=_cmd_bench_server)
    bi = bench.add_parser("interact", help="interactivity scenarios against a system")
    bi.add_argument("--system", default="default", help="default | cascade | checkpoint folder")
    bi.add_argument("--split", default="eval", choices=["eval", "unseen_engine", "train"])
    bi.add_argument("--episodes", type=int, default=20, help="episodes per scenario")
    bi.add_argument("--scenarios", help="comma-separated subset (default: all)")
    bi.add_argument("--seed", type=int, default=0)
    bi.add_argument(
        "--start-bias",
        type=float,
        help="a model's log-odds of starting a message (SamplingConfig.start_bias; "
        "default: what its checkpoint says)",
    )
    bi.add_argument("--out", type=Path, default=Path("out/interact"))
    bi.set_defaults(run=_cmd_bench_interact)
    bc = bench.add_parser(
        "compare", help="is B better than A? paired bootstrap over two interact runs' episodes"
    )
    bc.add_argument(
        "a", type=_folders, help="a `bench interact` output (the baseline); DIR,DIR,... pools"
    )
    bc.add_argument("b", type=_folders, help="another, on the same split, seeds and episodes")
    bc.add_argument("--resamples", type=int, help="bootstrap resamples (default 2,000)")
    bc.add_argument("--out", type=Path, help="where to write (default: B/compare)")
    bc.set_defaults(run=_cmd_bench_compare)
    bk = bench.add_parser(
        "calibrate", help="choose a checkpoint's start bias on a tune set (train split)"
    )
    bk.add_argument("model", type=Path, help="checkpoint folder")
    bk.add_argument("--biases", help="comma-separated candidates (default -1,0,1,2,3)")
    bk.add_argument("--episodes", type=int, help="episodes per scenario and bias (default 12)")
    bk.add_argument("--scenarios", help="comma-separated subset (default: all)")
    bk.add_argument("--write", action="store_true", help="store the chosen bias in the checkpoint")
    bk.add_argument("--out", type=Path, help="where to write (default: out/calibrate/...)")
    bk.set_defaults(run=_cmd_bench_calibrate)

    data = sub.add_parser("data", help="generate training shards and an evaluation set")
    data.add_argument("--out", type=Path, default=Path("data"))
    data.add_argument(
        "--mix", help="scenario=episodes,... (default: the shipped model's mix)", default=""
    )
    data.add_argument("--scale", type=float, default=1.0, help="multiply every count")
    data.add_argument("--eval-per-scenario", type=int, default=6)
    data.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    data.add_argument("--preset", default="tiny", help="model preset whose layout to pack for")
    data.add_argument(
        "--first-seed",
        type=int,
        default=None,
        help="seed of the first episode (default 100000); another value makes new episodes "
        "to add to an existing set",
    )
    data.set_defaults(run=_cmd_data)
    sub.add_parser("train", help="train the model on shards (microturn train --help)")

    demo = sub.add_parser(
        "demo", help="a scripted conversation with the model in real time (what make demo runs)"
    )
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="folder to write")
    demo.add_argument("--model", type=Path, help="checkpoint folder (default: the shipped one)")
    demo.add_argument(
        "--no-realtime",
        action="store_true",
        help="simulated clock: run as fast as the model computes (tests)",
    )
    demo.add_argument("--voice", help="the user's voice (default flite:rms, held out in training)")
    demo.add_argument("--seed", type=int, default=0, help="the model's sampling seed")
    demo.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    demo.set_defaults(run=_cmd_demo)

    serve = sub.add_parser(
        "serve", help="the live server: the browser page and WebSocket sessions (docs/protocol.md)"
    )
    serve.add_argument("--model", type=Path, help="checkpoint folder (default: the shipped one)")
    serve.add_argument("--preset", help="serve a randomly initialised preset instead (e.g. tiny)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--token", help="required from clients (generated when --host is not loopback)"
    )
    serve.add_argument("--max-sessions", type=int, default=8, help="live sessions at once")
    serve.add_argument("--idle-timeout-s", type=float, default=60.0)
    serve.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    serve.add_argument("--seed", type=int, default=0)
    from microturn.background.options import add_thinker_arguments

    add_thinker_arguments(serve)
    serve.set_defaults(run=_cmd_serve)

    talk = sub.add_parser(
        "talk", help="stream a recording to a live server in real time, write what it said"
    )
    talk.add_argument("--url", required=True, help="ws://HOST:PORT/ws")
    talk.add_argument("--token", help="the server's token (or put ?token= in --url)")
    talk.add_argument("--audio", type=Path, required=True, help="the user's audio (16 kHz mono)")
    talk.add_argument("--video", type=Path, help="camera clip, sent as JPEG frames at 5 fps")
    talk.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="SECONDS:TEXT",
        help='typed message at a time, e.g. "2.5:hello" (repeatable)',
    )
    talk.add_argument("--out", type=Path, required=True, help="folder: model.wav, timeline.json")
    talk.add_argument("--tail-s", type=float, default=1.0, help="silence sent after the audio")
    talk.add_argument("--loss", type=float, default=0.0, help="drop this fraction of chunks")
    talk.add_argument("--jitter-ms", type=float, default=0.0, help="delay chunks up to this")
    talk.add_argument("--seed", type=int, default=0, help="for --loss / --jitter-ms")
    talk.add_argument("--resample", action="store_true")
    talk.add_argument("--mixdown", action="store_true")
    talk.set_defaults(run=_cmd_talk)
    return p


def _cmd_roundtrip(args: argparse.Namespace) -> int:
    from microturn.codecs.audio import read_wav

    pcm = read_wav(args.input, resample=args.resample, mixdown=args.mixdown)
    report = codec_roundtrip(pcm, args.output, method=args.method, iters=args.iters, plot=args.plot)
    _print_roundtrip(report)
    return 0


def codec_roundtrip(
    pcm: np.ndarray,
    output: Path,
    *,
    method: str = "pinv",
    iters: int = 32,
    plot: Path | None = None,
) -> dict[str, float]:
    """Encode, decode, write the result and measure what was lost."""
    from microturn.codecs.audio import SAMPLE_RATE, write_wav
    from microturn.codecs.dmel import DMelCodec

    codec = DMelCodec()
    bins = codec.encode(pcm)
    t0 = time.perf_counter()
    decoded = codec.decode(bins, method=method, n_iter=iters)
    decode_s = time.perf_counter() - t0
    write_wav(output, decoded)
    again = codec.encode(decoded)
    if plot is not None:
        _plot_bins(bins, again, plot)
    seconds = pcm.size / SAMPLE_RATE
    return {
        "seconds": seconds,
        "frames": float(bins.shape[0]),
        "mel_distance": codec.mel_distance(pcm, decoded),
        "bins_equal": float((again == bins).mean()),
        "bins_within_1": float((np.abs(again.astype(int) - bins) <= 1).mean()),
        "decode_rtf": decode_s / seconds,
    }


def _print_roundtrip(r: dict[str, float]) -> None:
    print(f"audio: {r['seconds']:.2f} s -> {int(r['frames'])} dMel frames x 80 channels x 4 bits")
    print(f"mel distance: {r['mel_distance']:.3f} decades of log10 mel (quantization alone ~0.14)")
    print(f"re-encoded bins equal: {r['bins_equal']:.1%}, within one bin: {r['bins_within_1']:.1%}")
    print(f"decode real-time factor: {r['decode_rtf']:.3f}")


def _plot_bins(before: np.ndarray, after: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    for ax, bins, title in (
        (axes[0], before, "dMel bins of the input"),
        (axes[1], after, "dMel bins of the decoded audio, re-encoded"),
    ):
        im = ax.imshow(
            bins.T,
            origin="lower",
            aspect="auto",
            vmin=0,
            vmax=15,
            cmap="magma",
            extent=(0, bins.shape[0] / 80, 0, 80),
        )
        ax.set_title(title)
        ax.set_ylabel("mel channel")
    axes[1].set_xlabel("seconds")
    fig.colorbar(im, ax=axes, label="bin (0..15)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _cmd_say(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from microturn.codecs.audio import write_wav
    from microturn.voices import Voice, synthesize

    voice = Voice.parse(args.voice)
    if args.rate is not None:
        voice = replace(voice, rate=args.rate)
    if args.pitch is not None:
        voice = replace(voice, pitch=args.pitch)
    speech = synthesize(args.text, voice)
    write_wav(args.output, speech.audio)
    print(f"{args.output}: {speech.duration_s:.2f} s, voice {voice.key()}")
    for w in speech.words:
        print(f"  {w.start_s:6.2f} - {w.end_s:6.2f}  {w.text}")
    return 0


def _cmd_voices(args: argparse.Namespace) -> int:
    from microturn.voices import list_voices

    for v in list_voices(args.engine):
        print(v.key())
    return 0


def _cmd_layout(args: argparse.Namespace) -> int:
    from microturn.stream.layout import Layout

    print(Layout.preset(args.preset).describe())
    return 0


def _model_dir(args: argparse.Namespace) -> Path | None:
    """--model, else the shipped checkpoint unless --preset asks for an untrained model."""
    from microturn.model.checkpoint import default_checkpoint

    if args.model is not None or args.preset is not None:
        return args.model
    try:
        return default_checkpoint()
    except ValueError as err:
        raise ValueError(f"{err} (or --preset tiny for a randomly initialised model)") from err


def _cmd_run(args: argparse.Namespace) -> int:
    from microturn.codecs.audio import read_wav, write_wav
    from microturn.codecs.video_io import read_image_folder, read_video
    from microturn.codecs.vision import VisionCodec
    from microturn.engine.engine import load_model
    from microturn.engine.runner import ModelSystem, Recording, run_recording
    from microturn.stream.episode import TextEvent

    model_dir = _model_dir(args)
    model = load_model(str(model_dir) if model_dir else None, args.preset, seed=args.seed)
    layout = model.layout
    audio = read_wav(args.audio, resample=args.resample, mixdown=args.mixdown)
    video = None
    if args.video or args.frames:
        if not layout.video_size:
            raise ValueError("this model has no camera input; drop --video / --frames")
        size = layout.video_size
        if args.video:
            print(f"note: fitting camera frames to {size}x{size} (letterbox)", file=sys.stderr)
            video = read_video(args.video, size=size, fps=1 / layout.micro_turn_s)
        else:
            video = VisionCodec(size).fit_track(read_image_folder(args.frames, args.fps))
    events = [TextEvent(*_parse_text_event(spec)) for spec in args.text]
    recording = Recording(audio, video, events)
    result = run_recording(ModelSystem(model), recording, seed=args.seed)
    result.timeline.save(args.out)
    if args.wav:
        write_wav(args.wav, result.audio)
    said = [s for s in result.timeline.speech if s.end_s > s.start_s]
    print(
        f"{recording.duration_s:.1f} s replayed in {len(result.timeline.turns)} micro-turns; "
        f"model speech segments: {len(said)}; wrote {args.out}"
        + (f" and {args.wav}" if args.wav else "")
    )
    return 0


def _parse_text_event(spec: str) -> tuple[float, str]:
    head, sep, text = spec.partition(":")
    try:
        t = float(head)
    except ValueError:
        t = float("nan")
    if not sep or not text or not t >= 0:
        raise ValueError(f'--text must look like "SECONDS:TEXT" (e.g. "12.5:hello"), got {spec!r}')
    return t, text


def _cmd_bench_model(args: argparse.Namespace) -> int:
    from microturn.bench import model_bench
    from microturn.bench.report import markdown_table

    data = model_bench.run(args.out, quick=args.quick)
    print(markdown_table(data["presets"], model_bench.COLUMNS))
    print(f"\nwrote {args.out}/model.json and {args.out}/model.md")
    return 0


def _cmd_bench_engine(args: argparse.Namespace) -> int:
    from microturn.bench import engine_bench

    data = engine_bench.run(args.out, quick=args.quick, threads=args.threads)
    print((args.out / "engine.md").read_text())
    print(f"realtime_sessions: {data['realtime_sessions']}; wrote {args.out}/engine.json")
    return 0


def _cmd_bench_server(args: argparse.Namespace) -> int:
    from microturn.bench import server_bench

    data = server_bench.run(args.out, model_dir=args.model, seconds=args.seconds)
    print((args.out / "server.md").read_text())
    print(
        f"realtime_clients (p99 lateness <= 100 ms): {data['realtime_clients']}; within one "
        f"micro-turn: {data['clients_within_micro_turn']}; wrote {args.out}/server.json, .png"
    )
    return 0


def _cmd_bench_interact(args: argparse.Namespace) -> int:
    from microturn.bench import interact

    names = [n.strip() for n in args.scenarios.split(",")] if args.scenarios else None
    data = interact.run(
        args.system,
        args.split,
        args.out,
        episodes=args.episodes,
        scenarios=names,
        seed=args.seed,
        start_bias=args.start_bias,
    )
    print(interact.report_table(data))
    print(f"wrote {args.out}/interact.json, interact.md, episodes.json and timeline plots")
    return 0


def _cmd_bench_calibrate(args: argparse.Namespace) -> int:
    from microturn.bench import calibrate

    biases = calibrate.BIASES
    if args.biases:
        try:
            biases = tuple(float(b) for b in args.biases.split(","))
        except ValueError as err:
            raise ValueError(f"--biases: numbers separated by commas; got {args.biases!r}") from err
    names = [n.strip() for n in args.scenarios.split(",")] if args.scenarios else None
    # runs/x and runs/x/best get folders of their own
    out = args.out or Path("out/calibrate") / "-".join(args.model.resolve().parts[-2:])
    result = calibrate.run(
        args.model,
        out,
        biases=biases,
        episodes=calibrate.EPISODES if args.episodes is None else args.episodes,
        scenarios=names,
        write=args.write,
    )
    print(calibrate.report_table(result))
    print(f"wrote {out}/calibrate.json, calibrate.md and calibrate.png")
    return 0


def _folders(text: str) -> list[Path]:
    """DIR or DIR,DIR,...: runs to pool."""
    return [Path(part) for part in text.split(",") if part]


def _cmd_bench_compare(args: argparse.Namespace) -> int:
    from microturn.bench import compare

    out = args.out or args.b[0] / "compare"
    result = compare.run(args.a, args.b, out, resamples=args.resamples)
    print(compare.report_table(result))
    print(f"wrote {out}/compare.json, compare.md and compare.png")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from microturn.model import ModelConfig
    from microturn.scenarios import NAMES
    from microturn.train.data import DEFAULT_FIRST_SEED, DEFAULT_MIX, write_shards
    from microturn.train.evaluate import write_eval_set

    mix = dict(DEFAULT_MIX)
    if args.mix:
        try:
            mix = {k: int(v) for k, v in (item.split("=") for item in args.mix.split(","))}
        except ValueError as err:
            raise ValueError(f"--mix wants scenario=count,...; got {args.mix!r}") from err
    mix = {k: max(1, round(v * args.scale)) for k, v in mix.items()}
    if args.first_seed is not None and args.first_seed < 0:
        raise ValueError(f"--first-seed must be >= 0; got {args.first_seed}")
    layout = ModelConfig.preset(args.preset).layout
    paths = write_shards(
        args.out / "train",
        mix,
        0,
        layout,
        per_shard=100,
        workers=args.workers or None,
        first_seed=DEFAULT_FIRST_SEED if args.first_seed is None else args.first_seed,
    )
    write_eval_set(args.out / "eval", list(NAMES), args.eval_per_scenario, layout)
    print(f"wrote {len(paths)} shards ({sum(mix.values())} episodes) to {args.out}/train")
    print(f"wrote the evaluation set to {args.out}/eval")
    print(f"next: microturn train {args.out}/train RUN --eval-data {args.out}/eval")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from microturn.demo import DEFAULT_VOICE, run_demo

    return run_demo(
        args.out,
        args.model,
        realtime=not args.no_realtime,
        voice=args.voice or DEFAULT_VOICE,
        seed=args.seed,
        threads=args.threads,
    )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cmd_serve(args: argparse.Namespace) -> int:
    import secrets

    import torch
    from aiohttp import web

    from microturn.background.options import thinker_from_args
    from microturn.engine.engine import load_model
    from microturn.server.app import create_app

    model_dir = _model_dir(args)
    if model_dir is not None and not (Path(model_dir) / "config.json").is_file():
        raise ValueError(f"{model_dir}: not a checkpoint folder (no config.json)")
    if args.max_sessions < 1:
        raise ValueError("--max-sessions must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_model(str(model_dir) if model_dir else None, args.preset, seed=args.seed)
    token = args.token
    if token is None and not _is_loopback(args.host):
        token = secrets.token_urlsafe(16)
    app = create_app(
        model,
        token=token,
        max_sessions=args.max_sessions,
        idle_timeout_s=args.idle_timeout_s,
        thinker=thinker_from_args(args),
    )
    query = f"?token={token}" if token else ""
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"microturn serve: {model_dir or args.preset}, up to {args.max_sessions} sessions")
    print("warming up the model...", flush=True)

    def listening(_banner: str) -> None:  # run_app calls this once the port is open
        print(f"open http://{shown}:{args.port}/{query}")
        print(f"WebSocket: ws://{shown}:{args.port}/ws{query}   (Ctrl-C stops)", flush=True)

    web.run_app(app, host=args.host, port=args.port, print=listening)
    return 0


def _cmd_talk(args: argparse.Namespace) -> int:
    import aiohttp

    from microturn.codecs.audio import read_wav, write_wav
    from microturn.codecs.video_io import read_video
    from microturn.server.client import talk_sync
    from microturn.stream.episode import TextEvent

    audio = read_wav(args.audio, resample=args.resample, mixdown=args.mixdown)
    video = read_video(args.video, fps=5.0, size=160) if args.video else None
    events = [TextEvent(*_parse_text_event(spec)) for spec in args.text]
    if not 0 <= args.loss < 1 or args.jitter_ms < 0:
        raise ValueError("--loss must be in [0, 1) and --jitter-ms >= 0")
    try:
        result = talk_sync(
            args.url,
            audio,
            token=args.token,
            video=video,
            text=events,
            tail_s=args.tail_s,
            loss=args.loss,
            jitter_s=args.jitter_ms / 1000,
            seed=args.seed,
        )
    except (OSError, aiohttp.ClientError, TimeoutError) as err:
        print(f"error: {err or type(err).__name__}", file=sys.stderr)
        return 3
    args.out.mkdir(parents=True, exist_ok=True)
    write_wav(args.out / "model.wav", result.audio)
    result.timeline.save(args.out / "timeline.json")
    st = result.stats
    said = [s for s in result.timeline.speech if s.end_s > s.start_s]
    print(
        f"session {result.ready.get('session')}: {st['turns']} micro-turns, "
        f"{st['audio_chunks']} chunks sent ({st['lost_chunks']} lost on purpose), "
        f"{len(said)} speech segments, {len(st['errors'])} errors; "
        f"wrote {args.out}/model.wav and {args.out}/timeline.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
