"""Clip reading with decord: which frames, which pixels, uint8 ``T × H × W × 3`` out.

Temporal sampling (``ClipSpec``): ``num_frames`` frames ``stride`` apart (the prior works: 16
frames, skip 2), from a random start when training and centred when testing; ``"uniform"`` spreads
them over the whole video instead (one per equal segment, as Video-LLaVA samples its 8 frames).
Spatial: a square crop then a resize to ``size × size`` (112 in the prior works). At test time the
crop is the centre square of side min(H, W); when training it has side U(crop_scale)·min(H, W) at
a random place, with an optional horizontal flip (SPAct's cropping factor is U(0.6, 1)).

Worker safety: a decord ``VideoReader`` is opened inside every read and closed when it returns —
datasets hold paths only, never readers, so they pickle into DataLoader workers and every worker
decodes on its own (a reader shared across a fork is not safe).

Randomness: :func:`sample_rng` gives a numpy generator per sample — from ``seed`` when one is set
(the same crop every epoch: reproducible and what the embedded demo uses), otherwise drawn from
torch's RNG, which Lightning seeds per worker and per epoch (``seed_everything(workers=True)``),
so training clips differ from epoch to epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

Temporal = Literal["random", "center", "uniform"]


@dataclass(frozen=True)
class ClipSpec:
    """How a clip is cut from a video (see the module docstring).

    ``size=None`` keeps the decoded frames as they are (no crop, no resize).
    ``test_temporal`` is how evaluation clips are placed: ``"center"`` or ``"uniform"``.
    """

    num_frames: int = 16
    stride: int = 2
    size: int | None = 112
    crop_scale: tuple[float, float] = (1.0, 1.0)
    hflip: bool = False
    test_temporal: Temporal = "center"

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.stride < 1:
            raise ValueError(
                f"num_frames and stride must be >= 1, got {self.num_frames}, {self.stride}"
            )
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")


def sample_rng(seed: int | None, index: int, epoch: int = 0) -> np.random.Generator:
    """The generator of one training sample (see the module docstring)."""
    if seed is not None:
        return np.random.default_rng([seed, epoch, index])
    return np.random.default_rng([int(torch.randint(0, 2**31 - 1, ())), index])


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


def frame_indices(
    num_video_frames: int,
    num_frames: int,
    stride: int,
    temporal: Temporal,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """The frames of one clip: ``random`` start (needs ``rng``), ``center`` or ``uniform``."""
    if num_video_frames < 1:
        raise ValueError("the video has no frames")
    if temporal == "uniform":  # the centre of each of num_frames equal segments
        return [int((i + 0.5) * num_video_frames / num_frames) for i in range(num_frames)]
    start = None
    if temporal == "random":
        if rng is None:
            raise ValueError("random clip sampling needs a generator")
        span = (num_frames - 1) * stride + 1
        start = int(rng.integers(0, max(1, num_video_frames - span + 1)))
    elif temporal != "center":
        raise ValueError(f"temporal sampling must be random, center or uniform, got {temporal!r}")
    return clip_indices(num_video_frames, num_frames, stride, start)


def crop_resize(
    frames: np.ndarray,
    size: int | None,
    rng: np.random.Generator | None = None,
    crop_scale: tuple[float, float] = (1.0, 1.0),
    hflip: bool = False,
) -> np.ndarray:
    """Square crop and resize of ``N × H × W × 3`` frames (one crop for all of them).

    Without ``rng``: the centre square of side min(H, W). With it: side U(crop_scale)·min(H, W)
    at a random place, and a horizontal flip with probability ½ when ``hflip``.
    """
    if size is None:
        return frames
    h, w = frames.shape[1:3]
    side = min(h, w)
    if rng is None:
        y0, x0 = (h - side) // 2, (w - side) // 2
    else:
        if crop_scale != (1.0, 1.0):
            side = max(1, int(round(side * rng.uniform(*crop_scale))))
        y0 = int(rng.integers(0, h - side + 1)) if h > side else 0
        x0 = int(rng.integers(0, w - side + 1)) if w > side else 0
    frames = frames[:, y0 : y0 + side, x0 : x0 + side]
    if side != size:
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        frames = np.stack(
            [cv2.resize(f, (size, size), interpolation=interpolation) for f in frames]
        )
    if rng is not None and hflip and rng.random() < 0.5:
        frames = frames[:, :, ::-1]
    return np.ascontiguousarray(frames)


def _decode(path: str | Path, indices: Sequence[int] | None = None) -> tuple[np.ndarray, int]:
    """Frames at ``indices`` (``None``: just count) and the video's frame count."""
    import decord  # imported lazily: only video datasets need it

    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        total = len(reader)
        if total == 0:
            raise ValueError("the video has no frames")
        frames = reader.get_batch(list(indices)).asnumpy() if indices is not None else None
        del reader  # release the file now, not at garbage collection
    except Exception as err:  # decord raises its own error types for corrupt files
        raise OSError(f"cannot read video {path}: {err}") from err
    return frames, total


def read_frames(
    path: str | Path,
    spec: ClipSpec,
    rng: np.random.Generator | None = None,
    temporal: Temporal | None = None,
) -> tuple[Tensor, list[int], int]:
    """A clip as uint8 ``T × H × W × 3``, the frame indices it took and the video's frame count.

    ``rng`` given: a training clip (random start unless ``temporal`` says otherwise, random crop);
    ``None``: the evaluation clip (``spec.test_temporal``, centre crop).
    """
    import decord

    temporal = temporal or ("random" if rng is not None else spec.test_temporal)
    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        total = len(reader)
        indices = frame_indices(total, spec.num_frames, spec.stride, temporal, rng)
        frames = reader.get_batch(indices).asnumpy()
        del reader
    except Exception as err:  # decord raises its own error types for corrupt files
        raise OSError(f"cannot read video {path}: {err}") from err
    frames = crop_resize(frames, spec.size, rng, spec.crop_scale, spec.hflip)
    return torch.from_numpy(np.ascontiguousarray(frames)), indices, total


def read_clip(
    path: str | Path,
    num_frames: int,
    stride: int,
    size: int | None,
    rng: np.random.Generator | None = None,
) -> Tensor:
    """A ``T × H × W × 3`` uint8 clip; random start when ``rng`` is given, centred otherwise."""
    return read_frames(path, ClipSpec(num_frames, stride, size), rng)[0]


def read_frame(
    path: str | Path,
    position: float | None,
    size: int | None,
    rng: np.random.Generator | None = None,
    crop_scale: tuple[float, float] = (1.0, 1.0),
    hflip: bool = False,
) -> tuple[Tensor, int, int]:
    """One frame as uint8 ``H × W × 3`` at ``position`` ∈ [0, 1) of the video (``None``: a random
    one from ``rng``), with its index and the video's frame count."""
    import decord

    try:
        reader = decord.VideoReader(str(path), num_threads=1)
        total = len(reader)
        if total == 0:
            raise ValueError("the video has no frames")
        if position is None:
            if rng is None:
                raise ValueError("a random frame needs a generator")
            index = int(rng.integers(0, total))
        else:
            index = min(int(position * total), total - 1)
        frame = reader.get_batch([index]).asnumpy()
        del reader
    except Exception as err:
        raise OSError(f"cannot read video {path}: {err}") from err
    frame = crop_resize(frame, size, rng, crop_scale, hflip)[0]
    return torch.from_numpy(np.ascontiguousarray(frame)), index, total


def check_video(path: str | Path) -> str | None:
    """What is wrong with a video file, or None: it must open, decode its first, middle and last
    frames, and not hold far fewer frames than its container header promises (a truncated AVI
    still opens, but decord finds only the frames before the cut)."""
    path = Path(path)
    if not path.is_file():
        return "missing file"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        _, total = _decode(path)
        _decode(path, sorted({0, total // 2, total - 1}))
    except OSError as err:
        return f"unreadable ({str(err.__cause__ or err).splitlines()[0][:160]})"
    return truncation(path, total)


def truncation(path: str | Path, decoded: int) -> str | None:
    """Why a video of which decord finds ``decoded`` frames is not whole, or None: its container
    header promises far more (a download or copy that stopped early still opens)."""
    capture = cv2.VideoCapture(str(path))
    header = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    if header > 0 and decoded < 0.95 * header - 1:
        return f"truncated: the header promises {header} frames, only {decoded} decode"
    return None


class UnreadableVideo(OSError):
    """A video that cannot be read in full; the message names it and says why."""


class _WholeVideos:
    """Checks, once per video and process, that a video read for training is whole: a truncated
    one would otherwise give clips from its first part only, silently (``data check`` finds it
    too, before any training)."""

    def _require_whole(self, path: Path, decoded: int) -> None:
        checked: dict[Path, str | None] = self.__dict__.setdefault("_truncation", {})
        if path not in checked:
            checked[path] = truncation(path, decoded)
        if checked[path] is not None:
            raise UnreadableVideo(f"video {path} cannot be read in full: {checked[path]}")


class VideoClips(_WholeVideos, Dataset):
    """Clips of ``(video path, action label)`` samples as ``{"clip", "action", "index"}``.

    Subclasses add per-sample fields with :meth:`extras` (e.g. privacy labels of the frames the
    clip took). ``train`` selects random clips (see :func:`sample_rng`), else evaluation clips.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        spec: ClipSpec,
        train: bool = False,
        seed: int | None = None,
    ):
        self.samples = list(samples)
        self.spec, self.train, self.seed = spec, train, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def extras(self, index: int, indices: list[int], total: int) -> dict[str, Tensor]:
        return {}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        path, label = self.samples[index]
        rng = sample_rng(self.seed, index, self.epoch) if self.train else None
        clip, indices, total = read_frames(path, self.spec, rng)
        self._require_whole(path, total)
        item = {"clip": clip, "action": torch.tensor(label), "index": torch.tensor(index)}
        item.update(self.extras(index, indices, total))
        return item


class VideoFrames(_WholeVideos, Dataset):
    """Single frames of videos with privacy labels, as ``{"image", "attributes"}``.

    ``frames_per_video`` evaluation frames per video, at the centres of equal segments; training
    samples one random frame per video. ``labels(video_index, frame, total)`` gives the label
    vector of one frame (video-level labels simply ignore the frame).
    """

    def __init__(
        self,
        videos: Sequence[Path],
        labels: Callable[[int, int, int], Tensor],
        spec: ClipSpec,
        train: bool = False,
        frames_per_video: int = 1,
        seed: int | None = None,
    ):
        self.videos, self.labels = list(videos), labels
        self.spec, self.train, self.seed = spec, train, seed
        self.per_video = 1 if train else frames_per_video
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.videos) * self.per_video

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        video, k = divmod(index, self.per_video)
        if self.train:
            rng = sample_rng(self.seed, index, self.epoch)
            image, frame, total = read_frame(
                self.videos[video], None, self.spec.size, rng, self.spec.crop_scale, self.spec.hflip
            )
        else:
            position = (k + 0.5) / self.per_video
            image, frame, total = read_frame(self.videos[video], position, self.spec.size)
        self._require_whole(self.videos[video], total)
        return {"image": image, "attributes": self.labels(video, frame, total)}
