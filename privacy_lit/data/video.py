"""Clip reading with decord: frame indices, resizing, uint8 frames out.

Readers are opened inside ``__getitem__`` (never stored on the dataset), so every DataLoader
worker opens its own; a decord reader shared across a fork is not safe.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor


def clip_indices(
    num_video_frames: int, num_frames: int, stride: int, start: int | None
) -> list[int]:
    """Indices of ``num_frames`` frames ``stride`` apart; centred when ``start`` is None.

    Short videos repeat their last frame rather than failing: the prior works pad the same way.
    """
    span = (num_frames - 1) * stride + 1
    if start is None:
        start = max(0, (num_video_frames - span) // 2)
    return [min(start + i * stride, num_video_frames - 1) for i in range(num_frames)]


def read_clip(
    path: str | Path,
    num_frames: int,
    stride: int,
    size: int | None,
    rng: np.random.Generator | None = None,
) -> Tensor:
    """A ``T × H × W × 3`` uint8 clip; random start when ``rng`` is given, centred otherwise."""
    import decord  # imported lazily: only video datasets need it

    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        total = len(reader)
        if total == 0:
            raise ValueError("the video has no frames")
        span = (num_frames - 1) * stride + 1
        start = None
        if rng is not None:
            start = int(rng.integers(0, max(1, total - span + 1)))
        frames = reader.get_batch(clip_indices(total, num_frames, stride, start)).asnumpy()
    except Exception as err:  # decord raises its own error types for corrupt files
        raise OSError(f"cannot read video {path}: {err}") from err
    if size is not None and frames.shape[1:3] != (size, size):
        frames = np.stack(
            [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]
        )
    return torch.from_numpy(np.ascontiguousarray(frames))
