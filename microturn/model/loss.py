"""Training losses per output head, from the logits of `InteractionModel.forward`."""

from __future__ import annotations

import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from microturn.model.transformer import Logits
from microturn.stream.layout import OUTPUT_TRACKS


def per_slot_losses(logits: Logits, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Cross-entropy per output track, micro-turn and slot [B, N, slots, ...] (audio: per
    frame and channel of a slot too)."""
    losses = {}
    for track in OUTPUT_TRACKS:
        target = batch[track.value].long()
        flat = logits.track(track).flatten(0, -2).float()
        per = F.cross_entropy(flat, target.flatten(), reduction="none")
        losses[track.value] = per.view(target.shape)
    return losses


def slot_mean(per_slot: Tensor) -> Tensor:
    """[B, N, slots, ...] -> [B, N]: a micro-turn's loss, every slot (and frame) alike."""
    return per_slot.flatten(2).mean(-1)


def per_turn_losses(logits: Logits, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Cross-entropy per output track and micro-turn [B, N], averaged over the track's
    slots (audio: over every frame and channel of a slot too)."""
    return {k: slot_mean(v) for k, v in per_slot_losses(logits, batch).items()}


def output_losses(
    logits: Logits, batch: dict[str, Tensor], turn_mask: Tensor | None = None
) -> dict[str, Tensor]:
    """Per output track over the batch, every kept turn weighted equally."""
    out = {}
    for name, per in per_turn_losses(logits, batch).items():
        m = per.new_ones(per.shape) if turn_mask is None else turn_mask.to(per.dtype)
        out[name] = (per * m).sum() / m.sum().clamp(min=1)
    return out
