"""The anonymizer f_A: a reduced-channel UNet trunk and a light depthwise-separable head.

App. E: the UNet is pre-trained to reconstruct its input (L1), then only the head is trained by the
zeroth-order method, because SPSA's variance grows with the number of parameters it perturbs
(~9k parameters instead of the 25M of SPAct's UNet). :meth:`Anonymizer.trainable_parameters`
is the single source of which parameters the ZO step may touch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True),
    )  # fmt: skip


class UNetTrunk(nn.Module):
    """Encoder–decoder with skip connections and bilinear up-sampling (as SPAct's UNet), no norm
    layers: the trunk is frozen after pre-training and must behave the same in train and eval."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128)):
        super().__init__()
        widths = list(widths)
        self.down = nn.ModuleList()
        cin = 3
        for w in widths:
            self.down.append(_double_conv(cin, w))
            cin = w
        self.up = nn.ModuleList(
            _double_conv(widths[i + 1] + widths[i], widths[i])
            for i in reversed(range(len(widths) - 1))
        )
        self.out_channels = widths[0]
        # Convolutions on CPU run ~2x faster on channels-last tensors (measured: 1.09 s → 0.50 s
        # for 128 frames of 64×64); the trunk runs on every frame of every step.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x


class SeparableHead(nn.Module):
    """Depthwise-separable convolutions (Xception) from trunk features to an RGB *residual*.

    The last pointwise layer starts at zero, so f_A starts as the identity (:class:`Anonymizer`).
    """

    def __init__(self, in_channels: int = 16, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in [*hidden, 3]:
            layers += [
                nn.Conv2d(cin, cin, 3, padding=1, groups=cin),  # depthwise: spatial mixing
                nn.Conv2d(cin, cout, 1),  # pointwise: channel mixing
            ]
            if cout != 3:
                layers.append(nn.ReLU(inplace=True))
            cin = cout
        self.layers = nn.Sequential(*layers)
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        # Depthwise convolutions are memory-bound on CPU; channels-last makes them faster.
        self.to(memory_format=torch.channels_last)

    def forward(self, features: Tensor) -> Tensor:
        features = features.contiguous(memory_format=torch.channels_last)
        return self.layers(features).contiguous()


class Anonymizer(nn.Module):
    """f_A(x) = σ(logit(x) + head(trunk(x))); images are float ``B × 3 × H × W`` in [0, 1].

    The global input skip (in logit space, so the output stays in [0, 1]) makes the reconstruction
    pre-training converge in a few steps instead of thousands, and keeps the ~9k-parameter head
    responsible only for what must *change* in the image — the part the ZO step has to find.
    """

    def __init__(
        self, widths: Sequence[int] = (16, 32, 64, 128), head_hidden: Sequence[int] = (88, 64)
    ):
        super().__init__()
        self.trunk = UNetTrunk(widths)
        self.head = SeparableHead(self.trunk.out_channels, head_hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(x, self.trunk(x))

    def decode(self, x: Tensor, features: Tensor) -> Tensor:
        """The output from precomputed trunk features: the ZO step reuses them for θ ± c_kΔ_k."""
        return torch.sigmoid(torch.logit(x, eps=1e-3) + self.head(features))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the zeroth-order step perturbs and updates: the head only (App. E)."""
        return list(self.head.parameters())


def to_float(frames: Tensor) -> Tensor:
    """uint8 ``... × H × W × 3`` pixels → float ``... × 3 × H × W`` in [0, 1] (inverse of
    :func:`to_uint8`)."""
    return frames.movedim(-1, -3).float().div(255)


@torch.no_grad()
def anonymize_pixels(anonymizer: nn.Module, frames: Tensor) -> Tensor:
    """uint8 ``... × H × W × 3`` pixels (images or clips) → anonymized uint8 of the same shape."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    return to_uint8(anonymizer(to_float(flat))).reshape(frames.shape)


def to_uint8(images: Tensor) -> Tensor:
    """Float ``... × 3 × H × W`` in [0, 1] → the uint8 ``... × H × W × 3`` pixels a user uploads."""
    out = images.detach().clamp(0, 1).mul(255).round().to(torch.uint8)
    return out.movedim(-3, -1).contiguous()
