"""Training losses per output head, from the logits of `InteractionModel.forward`."""

from __future__ import annotations

import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from microturn.model.transformer import Logits
from microturn.stream.layout import OUTPUT_TRACKS


def per_sample_losses(
    logits: Logits, batch: dict[str, Tensor], turn_mask: Tensor | None = None
) -> dict[str, Tensor]:
    """Cross-entropy per output track and sequence [B], averaged over its slots (audio:
    over every frame and channel of a slot too) and over the turns turn_mask keeps."""
    losses = {}
    for track in OUTPUT_TRACKS:
        lg = logits.track(track)
        target = batch[track.value].long()
        per = F.cross_entropy(lg.flatten(0, -2).float(), target.flatten(), reduction="none")
        per = per.view((*target.shape[:2], -1)).mean(-1)  # [B, N]
        if turn_mask is None:
            losses[track.value] = per.mean(1)
        else:
            m = turn_mask.to(per.dtype)
            losses[track.value] = (per * m).sum(1) / m.sum(1).clamp(min=1)
    return losses


def output_losses(
    logits: Logits, batch: dict[str, Tensor], turn_mask: Tensor | None = None
) -> dict[str, Tensor]:
    """Cross-entropy per output track over the batch (turn_mask [B, N] leaves padded
    turns out, weighting every kept turn equally)."""
    if turn_mask is None:
        return {k: v.mean() for k, v in per_sample_losses(logits, batch).items()}
    losses = {}
    for track in OUTPUT_TRACKS:
        lg = logits.track(track)
        target = batch[track.value].long()
        per = F.cross_entropy(lg.flatten(0, -2).float(), target.flatten(), reduction="none")
        per = per.view((*target.shape[:2], -1)).mean(-1)
        m = turn_mask.to(per.dtype)
        losses[track.value] = (per * m).sum() / m.sum().clamp(min=1)
    return losses
