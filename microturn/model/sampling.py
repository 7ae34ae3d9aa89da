"""Sampling per head: temperature, top-k and top-p, seeded per stream, deterministic."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from microturn.codecs.text import ACTION_NAMES, N_BYTES, VOCAB_SIZE, Special
from microturn.model.config import checked_fields
from microturn.stream.layout import Track


@dataclass(frozen=True)
class HeadSampling:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off

    def __post_init__(self) -> None:
        # A hand-edited config.json reaches here: wrong types fail now, not mid-stream.
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise ValueError(f"top_k must be an integer, got {self.top_k!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError("temperature must be finite and >= 0")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must lie in (0, 1]")


START_RULES = ("sample", "greedy")


@dataclass(frozen=True)
class SamplingConfig:
    text: HeadSampling = field(default_factory=lambda: HeadSampling(0.7, top_k=20))
    action: HeadSampling = field(default_factory=lambda: HeadSampling(0.0))
    audio: HeadSampling = field(default_factory=lambda: HeadSampling(0.6, top_p=0.9))
    # Log-odds (after the text temperature) added to starting a message while the text
    # track is between messages (PAD made that much less likely there; mid-message text
    # is untouched): > 0 takes the floor sooner, < 0 waits longer. When to speak is the
    # one decision a loss weight sets at training time (the onset weight); this sets it
    # per deployment instead. "Between" is read from the previous micro-turn's text: a
    # sampled micro-turn of only PAD inside a message (never in training data) counts
    # as between.
    start_bias: float = 0.0
    # How a stream between messages decides to start one. "sample": PAD or a first byte
    # is drawn like any other slot. "greedy": it starts exactly when the model's own
    # odds of starting (temperature 1, before top-k), times e^start_bias, are even or
    # better, i.e. P(start) >= sigmoid(-start_bias); what it writes is then sampled.
    # Why: drawn every 200 ms, small odds add up (0.2 per micro-turn is taken in half of
    # the 3-micro-turn pauses); a threshold fires only where the odds peak.
    start_rule: str = "sample"

    def __post_init__(self) -> None:
        if isinstance(self.start_bias, bool) or not isinstance(self.start_bias, int | float):
            raise ValueError(f"start_bias must be a number, got {self.start_bias!r}")
        if not math.isfinite(self.start_bias):
            raise ValueError("start_bias must be finite")
        if self.start_rule not in START_RULES:
            raise ValueError(f"start_rule must be one of {START_RULES}, got {self.start_rule!r}")

    @property
    def decides_starts(self) -> bool:
        """Whether text slots between messages need more than a plain draw."""
        return self.start_bias != 0 or self.start_rule != "sample"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SamplingConfig:
        """What a checkpoint's config.json says about sampling; a missing field keeps
        its default, so a checkpoint without the section samples as before."""
        if d is None:
            return cls()
        checked_fields(cls, d, "sampling")
        heads = {
            name: HeadSampling(**checked_fields(HeadSampling, d[name], f"sampling.{name}"))
            for name in ("text", "action", "audio")
            if name in d
        }
        return cls(**{**d, **heads})

    def for_track(self, track: Track) -> HeadSampling:
        return {
            Track.MODEL_TEXT: self.text,
            Track.MODEL_ACTION: self.action,
            Track.MODEL_AUDIO: self.audio,
        }[track]


def _allowed(track: Track) -> Tensor | None:
    """Which ids a head may emit: text = bytes + PAD + EOM; action = PAD + actions."""
    if track is Track.MODEL_AUDIO:
        return None
    ok = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
    if track is Track.MODEL_TEXT:
        ok[:N_BYTES] = True
        ok[Special.EOM] = True
    ok[Special.PAD] = True
    if track is Track.MODEL_ACTION:
        ok[list(ACTION_NAMES)] = True
    return ok


_ALLOWED = {t: _allowed(t) for t in (Track.MODEL_TEXT, Track.MODEL_ACTION, Track.MODEL_AUDIO)}


def sample(logits: Tensor, cfg: HeadSampling, generators: list[torch.Generator]) -> Tensor:
    """logits [B, ..., C] -> ids [B, ...]; row b draws from generators[b] only, so a
    stream's samples do not depend on which other streams share its batch."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    x = logits.float() / cfg.temperature
    if cfg.top_k:
        kth = x.topk(min(cfg.top_k, x.shape[-1]), dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if cfg.top_p < 1:
        sorted_x, order = x.sort(dim=-1, descending=True)
        cum = sorted_x.softmax(-1).cumsum(-1)
        drop = cum - sorted_x.softmax(-1) > cfg.top_p  # keep the token that crosses top_p
        sorted_x = sorted_x.masked_fill(drop, float("-inf"))
        x = torch.full_like(x, float("-inf")).scatter(-1, order, sorted_x)
    # Gumbel-max: argmax(x + Gumbel noise) is an exact draw from softmax(x); one noise
    # tensor per stream from that stream's generator.
    noise = torch.empty_like(x)
    for b, gen in enumerate(generators):
        noise[b] = torch.rand(x.shape[1:], generator=gen, device=x.device, dtype=x.dtype)
    gumbel = -torch.log(-torch.log(noise.clamp(1e-10, 1 - 1e-7)))
    return (x + gumbel).argmax(-1)


def sample_text(
    logits: Tensor, between: Tensor, cfg: SamplingConfig, generators: list[torch.Generator]
) -> Tensor:
    """One text slot [B, C] -> ids [B] under the start bias and rule, for streams
    `between` [B] messages or not (mid-message rows are drawn as usual)."""
    allowed = _ALLOWED[Track.MODEL_TEXT].to(logits.device)
    logits = logits.masked_fill(~allowed, float("-inf"))
    if cfg.start_rule == "sample":
        bias = cfg.start_bias * (cfg.text.temperature or 1.0)
        return sample(bias_start(logits, between, bias), cfg.text, generators)
    logp = logits.float().log_softmax(-1)
    quiet = logp[:, Special.PAD]
    speak = torch.log1p(-quiet.exp().clamp(max=1 - 1e-7))
    start = speak - quiet + cfg.start_bias >= 0
    x = logits.clone()
    x[between & start, Special.PAD] = float("-inf")
    keep_quiet = between & ~start
    x[keep_quiet] = float("-inf")
    x[keep_quiet, Special.PAD] = 0.0
    return sample(x, cfg.text, generators)


def bias_start(logits: Tensor, between: Tensor, bias: float) -> Tensor:
    """Text logits [B, C] with `bias` taken from PAD in the rows whose stream is between
    messages (`between` [B] bool). The caller scales `bias` by the head's temperature."""
    shift = torch.zeros_like(logits)
    shift[:, Special.PAD] = torch.where(between, -bias, 0.0)
    return logits + shift


def next_between(between: Tensor, written: Tensor) -> Tensor:
    """After a text id per stream: a byte opens (or continues) a message, EOM closes it,
    PAD changes nothing (the packer never puts PAD inside a message)."""
    return torch.where(written < N_BYTES, False, torch.where(written == Special.EOM, True, between))


def between_after(text: Tensor) -> Tensor:
    """A micro-turn's text slots [B, slots] -> [B] bool: no message open after them
    (the state before its last slot, stepped over that slot)."""
    return next_between(between_before(text[:, None])[:, 0, -1], text[:, -1])


def between_before(text: Tensor) -> Tensor:
    """Text ids [B, N, slots] (a whole track) -> [B, N, slots] bool: no message is open
    before the slot, so its id is a decision to start one or keep quiet (PAD). The same
    rule as `next_between`, run over the flattened track at once, for the training loss."""
    b, n, s = text.shape
    flat = text.reshape(b, n * s)
    marks = (flat < N_BYTES) | (flat == Special.EOM)  # the ids that change the state
    at = torch.arange(n * s, device=text.device).expand(b, -1)
    last = torch.where(marks, at, -1).cummax(1).values
    before = torch.nn.functional.pad(last[:, :-1], (1, 0), value=-1)
    previous = flat.gather(1, before.clamp(min=0))
    return ((before < 0) | (previous == Special.EOM)).view(b, n, s)


NO_ONSET = 1 << 30  # "micro-turns since the last message start" of a stream with none yet


def text_onsets(text: Tensor, previous: Tensor | None = None) -> Tensor:
    """Text ids [B, N, slots] -> [B, N] True where the model starts writing: text in a
    micro-turn after one without (the packer writes an utterance's first text in the
    micro-turn where its sound starts). `previous` [B, slots]: the text of the
    micro-turn before the first one (default: it wrote none)."""
    if previous is not None:
        text = torch.cat([previous[:, None], text], dim=1)
    writing = (text != Special.PAD).any(-1)
    starts = writing & ~torch.nn.functional.pad(writing[:, :-1], (1, 0), value=False)
    return starts if previous is None else starts[:, 1:]


def turns_since_onset(onsets: Tensor, since_first: Tensor | None = None) -> Tensor:
    """Onsets [B, N] -> [B, N + 1]: micro-turns since the last onset before each
    micro-turn (entry N: the micro-turn after the last). `since_first` [B]: the first
    micro-turn's value (default `NO_ONSET`); the count grows from it until an onset."""
    b, n = onsets.shape
    at = torch.arange(n + 1, device=onsets.device).expand(b, -1)
    marks = torch.nn.functional.pad(onsets, (1, 0), value=False)  # an onset counts after it
    last = torch.where(marks, at, -1).cummax(1).values
    if since_first is None:
        since_first = torch.full((b,), NO_ONSET, dtype=torch.long, device=onsets.device)
    return torch.where(last >= 0, at - last + 1, since_first[:, None] + at)


def since_onset_before(text: Tensor) -> Tensor:
    """Text ids [B, N, slots] of a whole recorded sequence -> [B, N]: micro-turns since
    the model's last message start before each micro-turn (what an onset clock reads)."""
    return turns_since_onset(text_onsets(text))[:, :-1]


def sample_slot(
    track: Track, logits: Tensor, cfg: SamplingConfig, generators: list[torch.Generator]
) -> Tensor:
    """Sample one output slot of `track`, masking ids that head may not emit."""
    allowed = _ALLOWED[track]
    if allowed is not None:
        logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    return sample(logits, cfg.for_track(track), generators)
