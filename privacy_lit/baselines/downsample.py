"""Downsampling baseline (Tab. B8): area-downsample by ``factor`` and upsample back bilinearly."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class Downsample(nn.Module):
    """Images ``B × 3 × H × W`` in [0, 1] → the same size, with ``factor``× less resolution."""

    def __init__(self, factor: int = 4):
        super().__init__()
        if factor < 1:
            raise ValueError(f"downsample factor must be >= 1, got {factor}")
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        small = F.interpolate(x, scale_factor=1 / self.factor, mode="area")
        return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
