"""Training losses per output head, from the logits of `InteractionModel.forward`."""

from __future__ import annotations

import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from microturn.model.transformer import Logits
from microturn.stream.layout import OUTPUT_TRACKS


def output_losses(
    logits: Logits, batch: dict[str, Tensor], turn_mask: Tensor | None = None
) -> dict[str, Tensor]:
    """Cross-entropy per output track, averaged over its slots (audio: over every frame
    and channel of a slot too). turn_mask [B, N] (bool) leaves padded turns out."""
    losses = {}
    for track in OUTPUT_TRACKS:
        lg = logits.track(track)
        target = batch[track.value].long()
        per = F.cross_entropy(lg.flatten(0, -2).float(), target.flatten(), reduction="none")
        per = per.view((*target.shape[:2], -1)).mean(-1)  # [B, N]
        if turn_mask is not None:
            losses[track.value] = (per * turn_mask).sum() / turn_mask.sum().clamp(min=1)
        else:
            losses[track.value] = per.mean()
    return losses
