"""VP-HMDB51 and VP-UCF101 (Li et al., STPrivacy, ICCV 2023): HMDB51 / UCF101 videos with
*video-level* privacy labels, the same-dataset benchmarks of Tab. B10.

These labels are not distributed in one fixed public form, so the file is configurable. Give the
path (relative to ``data_dir``) of either

- JSON: ``{"<video>": ["face", "gender"], ...}`` or ``{"<video>": {"face": 1, "gender": 0}, ...}``
- CSV: a ``video`` column and either an ``attributes`` column (names separated by ``;``, ``|`` or
  spaces) or one 0/1 column per attribute.

``<video>`` may be the relative path (``brush_hair/x.avi``, ``ApplyEyeMakeup/v_..._c01.avi``), the
file name or its stem: videos are matched by file stem. ``attributes`` fixes the label order
(default: the five of PA-HMDB51); a name outside it is an error. Videos of a split without a label
entry are left out of the privacy samples (``data check`` counts them).

Splits and actions are HMDB51's and UCF101's official ones; the utility side is unchanged.
Privacy samples are single frames (``privacy_view="frame"``: random when training, segment
centres when testing) or whole clips (``"clip"``, for video-level reviewers such as ViT-S over
frames).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from privacy_lit.data.base import CheckReport
from privacy_lit.data.hmdb51 import HMDB51
from privacy_lit.data.ucf101 import UCF101
from privacy_lit.data.video import VideoClips, VideoFrames

VP_ATTRIBUTES: tuple[str, ...] = ("face", "skin_color", "gender", "nudity", "relationship")
"""Default label order (PA-HMDB51's five attributes); set ``attributes`` to match your file."""


def read_vp_labels(
    path: Path, attributes: list[str], label_format: Literal["auto", "json", "csv"] = "auto"
) -> dict[str, set[str]]:
    """``{video stem: present attributes}``; errors name the file, the video and the attribute."""
    if not path.is_file():
        raise FileNotFoundError(f"missing video-level privacy labels {path}")
    fmt = label_format if label_format != "auto" else path.suffix.lower().lstrip(".")
    if fmt not in ("json", "csv"):
        raise ValueError(f"{path}: cannot tell the label format; set label_format to json or csv")
    rows: list[tuple[str, set[str]]] = []
    if fmt == "json":
        try:
            data = json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"bad video-level privacy labels {path}: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected an object mapping video names to attributes")
        for video, value in data.items():
            if isinstance(value, list):
                rows.append((video, {str(v) for v in value}))
            elif isinstance(value, dict):
                rows.append((video, {str(k) for k, v in value.items() if v}))
            else:
                raise ValueError(f"{path}: video {video!r}: expected a list or an object of 0/1")
    else:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            if "video" not in fields:
                raise ValueError(f"{path}: expected a 'video' column, got columns {fields}")
            for line_no, row in enumerate(reader, 2):
                if "attributes" in fields:
                    names = {n for n in re.split(r"[;|\s]+", row["attributes"] or "") if n}
                else:
                    names = set()
                    for key in fields:
                        if key == "video":
                            continue
                        cell = (row[key] or "").strip()
                        if cell not in ("0", "1", ""):
                            raise ValueError(f"{path}:{line_no}: column {key!r} must be 0 or 1")
                        if cell == "1":
                            names.add(key)
                rows.append((row["video"], names))
    labels: dict[str, set[str]] = {}
    for video, names in rows:
        unknown = sorted(names - set(attributes))
        if unknown:
            raise ValueError(
                f"{path}: video {video!r}: unknown attributes {unknown}; "
                f"expected among {attributes}"
            )
        labels[Path(video).stem] = names
    if not labels:
        raise ValueError(f"video-level privacy labels {path} have no entries")
    return labels


class VPClips(VideoClips):
    """Clips with the video's ``attributes`` added (the ``clip`` privacy view)."""

    def __init__(self, base: VideoClips, labels: list[torch.Tensor]):
        super().__init__(base.samples, base.spec, base.train, base.seed)
        self.labels = labels

    def extras(self, index: int, indices: list[int], total: int) -> dict[str, torch.Tensor]:
        return {"attributes": self.labels[index]}


class _VideoLevelPrivacy:
    """Adds video-level privacy labels to a video DatasetModule (HMDB51 or UCF101)."""

    def _init_vp(self, labels, attributes, label_format, privacy_view, frames_per_video) -> None:
        self.labels_file, self.label_format = labels, label_format
        self.vp_attributes = list(attributes) if attributes is not None else list(VP_ATTRIBUTES)
        self.privacy_view, self.frames_per_video = privacy_view, frames_per_video

    @property
    def attribute_names(self) -> list[str]:
        return list(self.vp_attributes)

    def video_labels(self) -> dict[str, set[str]]:
        return read_vp_labels(self.path(self.labels_file), self.vp_attributes, self.label_format)

    def _vector(self, names: set[str]) -> torch.Tensor:
        return torch.tensor([float(a in names) for a in self.vp_attributes])

    def privacy_dataset(self, stage: str) -> Dataset:
        def build() -> Dataset:
            base = self.utility_dataset(stage)
            labels = self.video_labels()
            kept = [i for i, (p, _) in enumerate(base.samples) if p.stem in labels]
            if not kept:
                raise ValueError(
                    f"no {stage} video of {self.name} has a label in {self.path(self.labels_file)}"
                )
            vectors = [self._vector(labels[base.samples[i][0].stem]) for i in kept]
            if self.privacy_view == "clip":
                subset = VideoClips(
                    [base.samples[i] for i in kept], base.spec, base.train, base.seed
                )
                return VPClips(subset, vectors)
            videos = [base.samples[i][0] for i in kept]
            return VideoFrames(
                videos,
                lambda v, frame, total: vectors[v],
                base.spec,
                base.train,
                self.frames_per_video,
                base.seed,
            )

        return self._cached("privacy", stage, build)

    def _check_vp(self, report: CheckReport) -> None:
        path = self.path(self.labels_file)
        try:
            labels = self.video_labels()
        except (OSError, ValueError) as err:
            report.error(path, str(err))
            return
        report.count(f"{path} labelled videos", len(labels), None)
        for stage in ("train", "test"):
            try:
                samples = self.utility_dataset(stage).samples
            except (OSError, ValueError) as err:
                report.error(self.root, str(err))
                continue
            stems = {p.stem for p, _ in samples}
            found = len(stems & set(labels))
            if found == 0:
                report.error(path, f"no {stage} video of split {self.split} has a label")
            elif found < len(stems):
                report.warn(
                    path,
                    f"{len(stems) - found} of {len(stems)} {stage} videos of split "
                    f"{self.split} have no label (left out of privacy samples)",
                )
        for name in self.vp_attributes:
            if not any(name in v for v in labels.values()):
                report.warn(path, f"no video has {name!r}: its AP is undefined")


class VPHMDB51(_VideoLevelPrivacy, HMDB51):
    """VP-HMDB51: HMDB51 (all of :class:`HMDB51`'s arguments) + video-level privacy labels.

    Args:
        labels: the label file, relative to ``data_dir`` (JSON or CSV, see the module docstring).
        attributes: label order (default :data:`VP_ATTRIBUTES`).
        label_format: ``auto`` (by extension), ``json`` or ``csv``.
        privacy_view: privacy samples as single ``frame``s or whole ``clip``s.
        frames_per_video: evaluation frames per video in the ``frame`` view.
    """

    roles = ("utility", "privacy")

    def __init__(
        self,
        labels: str = "vp_hmdb51/labels.json",
        attributes: list[str] | None = None,
        label_format: Literal["auto", "json", "csv"] = "auto",
        privacy_view: Literal["frame", "clip"] = "frame",
        frames_per_video: int = 1,
        **hmdb51,
    ):
        super().__init__(**hmdb51)
        self._init_vp(labels, attributes, label_format, privacy_view, frames_per_video)

    def check(self, report: CheckReport, decode: int | None = None) -> None:
        HMDB51.check(self, report, decode)
        self._check_vp(report)


class VPUCF101(_VideoLevelPrivacy, UCF101):
    """VP-UCF101: UCF101 (all of :class:`UCF101`'s arguments) + video-level privacy labels
    (arguments as :class:`VPHMDB51`)."""

    roles = ("utility", "privacy")

    def __init__(
        self,
        labels: str = "vp_ucf101/labels.json",
        attributes: list[str] | None = None,
        label_format: Literal["auto", "json", "csv"] = "auto",
        privacy_view: Literal["frame", "clip"] = "frame",
        frames_per_video: int = 1,
        **ucf101,
    ):
        super().__init__(**ucf101)
        self._init_vp(labels, attributes, label_format, privacy_view, frames_per_video)

    def check(self, report: CheckReport, decode: int | None = None) -> None:
        UCF101.check(self, report, decode)
        self._check_vp(report)
