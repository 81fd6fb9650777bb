"""A small 3D-CNN action recognizer: the frozen model inside the embedded stand-in black box."""

from __future__ import annotations

from torch import Tensor, nn


class ClipRecognizer(nn.Module):
    """Clips ``B × 3 × T × H × W`` in [0, 1] → action logits ``B × K``."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()

        def block(cin: int, cout: int, pool: tuple[int, int, int]) -> list[nn.Module]:
            return [nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
                    nn.MaxPool3d(pool)]  # fmt: skip

        self.features = nn.Sequential(
            # a strided stem: limbs are a few pixels wide, motion is coarse; keeps the CPU budget
            nn.Conv3d(3, width, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2)),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
            *block(width, 2 * width, (2, 2, 2)),
            *block(2 * width, 4 * width, (2, 2, 2)),
            *block(4 * width, 4 * width, (1, 2, 2)),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, clips: Tensor) -> Tensor:
        return self.classifier(self.features(standardize(clips)))


def standardize(clips: Tensor, eps: float = 0.02) -> Tensor:
    """Per clip and channel: zero mean, unit spread over time and space.

    An MLLM's answer to "what is the person doing?" does not change when the whole video is tinted,
    darkened or washed out; standardizing each channel makes the stand-in equally indifferent to
    any per-channel brightness and contrast, so it reads actions from shape and motion only.
    ``eps`` keeps a flat (saturated) channel from amplifying its quantization noise.
    """
    mean = clips.mean(dim=(2, 3, 4), keepdim=True)
    std = clips.std(dim=(2, 3, 4), keepdim=True)
    return (clips - mean) / (std + eps)
