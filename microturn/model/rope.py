"""Rotary position embeddings, shared by the transformer and its streaming cache."""

from __future__ import annotations

import torch
from torch import Tensor


def rotary_angles(
    positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos / sin [B, T, 1, D/2] for integer positions [B, T], computed once per forward
    and shared by every layer. float64 keeps positions hours into a conversation exact."""
    inv_freq = theta ** (
        -torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float64) / head_dim
    )
    angles = positions.to(torch.float64)[..., None] * inv_freq
    return angles.cos().to(dtype)[:, :, None, :], angles.sin().to(dtype)[:, :, None, :]


def rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs of x [B, T, H, D] by position-proportional angles."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
