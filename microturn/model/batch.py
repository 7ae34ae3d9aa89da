"""MicroTurns (numpy, from the layout) -> model tensors, checked at the API boundary."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from microturn.codecs import dmel
from microturn.codecs.text import VOCAB_SIZE
from microturn.codecs.vision import PATCH
from microturn.stream.layout import (
    INPUT_TRACKS,
    TRACK_KIND,
    TRACK_ORDER,
    Layout,
    MicroTurns,
    SlotKind,
    Track,
)

PRESENCE = {Track.USER_AUDIO: "user_audio_present", Track.USER_VIDEO: "user_video_present"}
# What `model.step` takes: the input tracks and their presence flags.
INPUT_KEYS = (*[t.value for t in INPUT_TRACKS], *PRESENCE.values())


def to_batch(
    turns: MicroTurns | Sequence[MicroTurns], device: torch.device | str | None = None
) -> dict[str, Tensor]:
    """Stack MicroTurns of equal length into tensors [B, N, ...] keyed by track name."""
    items = [turns] if isinstance(turns, MicroTurns) else list(turns)
    if not items:
        raise ValueError("to_batch needs at least one MicroTurns")
    lengths = {m.n_turns for m in items}
    if len(lengths) != 1:
        raise ValueError(f"MicroTurns of different lengths {sorted(lengths)}: crop or pad first")
    out: dict[str, Tensor] = {}
    for name in (*[t.value for t in TRACK_ORDER], *PRESENCE.values()):
        arr = np.stack([getattr(m, name) for m in items])
        if arr.dtype == np.int32:
            arr = arr.astype(np.int64)
        out[name] = torch.from_numpy(arr).to(device)
    return out


def slot_shape(layout: Layout, track: Track) -> tuple[int, ...]:
    kind = TRACK_KIND[track]
    n = layout.slots(track)
    if kind is SlotKind.AUDIO:
        return (n, layout.audio_group, dmel.N_MELS)
    if kind is SlotKind.PATCH:
        return (n, PATCH, PATCH, 3)
    return (n,)


def validate_batch(
    batch: dict[str, Tensor],
    layout: Layout,
    *,
    tracks: Sequence[Track] = TRACK_ORDER,
    batch_size: int | None = None,
    turns: int | None = None,
) -> None:
    """Raise ValueError naming the first track whose shape, dtype or values are wrong."""
    if not isinstance(batch, dict):
        raise ValueError(f"batch must be a dict of tensors, got {type(batch).__name__}")
    for track in tracks:
        name = track.value
        if layout.slots(track) == 0 and name not in batch:
            continue
        if name not in batch:
            raise ValueError(f"batch is missing track {name!r}")
        x = batch[name]
        if not isinstance(x, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        # The first track fixes batch size and turns for the rest.
        batch_size = batch_size if batch_size is not None else x.shape[0]
        turns = turns if turns is not None else (x.shape[1] if x.dim() > 1 else -1)
        b, n = batch_size, turns
        want = (b, n, *slot_shape(layout, track))
        if tuple(x.shape) != want:
            raise ValueError(f"{name}: shape {tuple(x.shape)}, the layout needs {want}")
        if x.dtype.is_floating_point or x.dtype == torch.bool:
            raise ValueError(f"{name}: dtype {x.dtype}, expected an integer type")
        if x.numel() == 0:
            continue
        lo, hi = int(x.min()), int(x.max())
        limit = {SlotKind.AUDIO: dmel.N_BINS, SlotKind.PATCH: 256, SlotKind.TOKEN: VOCAB_SIZE}[
            TRACK_KIND[track]
        ]
        if lo < 0 or hi >= limit:
            raise ValueError(f"{name}: values must lie in 0..{limit - 1}, got {lo}..{hi}")
        if track in PRESENCE and PRESENCE[track] in batch:
            p = batch[PRESENCE[track]]
            frames = layout.video_frames if track is Track.USER_VIDEO else None
            want_p = (b, n) if frames is None else (b, n, frames)
            if p.dtype != torch.bool or tuple(p.shape) != want_p:
                raise ValueError(
                    f"{PRESENCE[track]}: expected bool {want_p}, got {p.dtype} {tuple(p.shape)}"
                )
