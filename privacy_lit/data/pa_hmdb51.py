"""PA-HMDB51 (Wu et al., TPAMI 2020): HMDB51 videos with both action and privacy labels, the test
set of HMDB51-VISPR and of the novel protocol UCF101 → PA-HMDB51.

Layout: ``<root>/PrivacyAttributes/<action>.json`` (the repository github.com/VITA-Group/PA-HMDB51
as cloned, ``<root>`` = ``data/pa_hmdb51``), and the videos themselves in the HMDB51 folder
(``videos`` = ``hmdb51/hmdb51``, i.e. ``data/hmdb51/hmdb51/<action>/<video>.avi``)::

    {"<video>.avi": {"skin_color" | "face" | "gender" | "nudity" | "relationship":
                       [[start_frame, end_frame, value], ...],      # inclusive, 0-indexed
                     "review": bool, "note": str}}

Labels: an attribute is present in a frame when a range covering it has a value mapped by
:data:`PA_HMDB51_TO_VISPR` — the one table from PA-HMDB51's attributes to VISPR ids. A clip's
labels are the union over the frames it took (``label_mode="clip"``), or over the whole video
(``"video"``). The VISPR ids then go through the setting's :class:`AttributeTable` like every other
privacy label (HMDB51-VISPR: 6 attributes).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from privacy_lit.data.base import CheckReport, DatasetModule, check_videos, readable
from privacy_lit.data.hmdb51 import HMDB51_ACTIONS
from privacy_lit.data.video import ClipSpec, Temporal, VideoClips, VideoFrames
from privacy_lit.data.vispr import SETTING_NAMES, AttributeTable, attribute_table

PA_ATTRIBUTES = ("skin_color", "face", "gender", "nudity", "relationship")
"""The five attributes annotated in PA-HMDB51."""

PA_HMDB51_TO_VISPR: dict[str, str | dict[int, str]] = {
    "skin_color": "a17_color",  # any visible skin colour
    "face": "a10_face_partial",  # any visible face (see below)
    "gender": "a4_gender",
    "nudity": "a12_semi_nudity",
    "relationship": "a64_rel_personal",
}
"""PA-HMDB51 attribute → VISPR id, present wherever the annotated value is not 0.

This is the conversion of the prior works (value != 0 means "present"; face → partial face,
relationship → personal relationship). *Unconfirmed*: what each non-zero value means (PA-HMDB51's
README shows e.g. "face: no", "nudity: level 2"); if you know it, map values separately by giving
a dict instead of an id, e.g. ``face: {1: a10_face_partial, 2: a9_face_complete}`` (the module's
``attribute_map`` argument replaces entries of this table)."""

META_KEYS = {"review", "note"}
PA_VIDEOS_README = 592
"""PA-HMDB51's README counts 592 videos; Wu et al. (TPAMI 2020) report 515. Not enforced."""


@dataclass(frozen=True)
class PAAnnotation:
    """The privacy annotation of one video: ``ranges[attribute] = ((start, end, value), ...)``."""

    action: str
    video: str
    ranges: dict[str, tuple[tuple[int, int, int], ...]]

    def vispr_ids(
        self, frames: Iterable[int] | None, table: Mapping[str, str | Mapping[int, str]]
    ) -> set[str]:
        """VISPR ids present in any of ``frames`` (``None``: anywhere in the video)."""
        wanted = None if frames is None else set(frames)
        ids = set()
        for attribute, ranges in self.ranges.items():
            target = table.get(attribute)
            for start, end, value in ranges:
                if value == 0 or target is None:
                    continue
                vispr_id = target if isinstance(target, str) else target.get(value)
                if vispr_id is None:
                    continue
                if wanted is None or any(start <= f <= end for f in wanted):
                    ids.add(vispr_id)
        return ids


def read_pa_file(path: Path) -> list[PAAnnotation]:
    """The annotations of one ``PrivacyAttributes/<action>.json``; errors name file and video."""
    action = path.stem
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"bad PA-HMDB51 annotation file {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"bad PA-HMDB51 annotation file {path}: expected an object of videos")
    out = []
    for video, record in data.items():
        where = f"{path}: video {video!r}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object of attributes")
        ranges = {}
        for key, value in record.items():
            if key in META_KEYS:
                continue
            if key not in PA_ATTRIBUTES:
                raise ValueError(
                    f"{where}: unknown attribute {key!r}; expected one of {PA_ATTRIBUTES}"
                )
            if not isinstance(value, list):
                raise ValueError(f"{where}: {key!r} must be a list of [start, end, value]")
            triples = []
            for item in value:
                ok = (
                    isinstance(item, list)
                    and len(item) == 3
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
                )
                if not ok or not 0 <= item[0] <= item[1]:
                    raise ValueError(
                        f"{where}: {key!r} range {item!r} is not [start, end, value] with "
                        "integers 0 <= start <= end"
                    )
                triples.append((item[0], item[1], item[2]))
            ranges[key] = tuple(triples)
        out.append(PAAnnotation(action, video, ranges))
    return out


def read_pa_folder(folder: Path) -> list[PAAnnotation]:
    """All annotations of a ``PrivacyAttributes`` folder, sorted by action then video."""
    if not folder.is_dir():
        raise FileNotFoundError(f"missing PA-HMDB51 annotation folder {folder}")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no PA-HMDB51 annotation files (<action>.json) in {folder}")
    return [a for f in files for a in sorted(read_pa_file(f), key=lambda a: a.video)]


def _mapping(override: Mapping[str, str | Mapping] | None) -> dict[str, str | dict[int, str]]:
    table: dict[str, str | dict[int, str]] = dict(PA_HMDB51_TO_VISPR)
    for key, value in (override or {}).items():
        if key not in PA_ATTRIBUTES:
            raise ValueError(f"attribute_map: unknown PA-HMDB51 attribute {key!r}")
        table[key] = value if isinstance(value, str) else {int(k): v for k, v in value.items()}
    return table


class PAHMDB51Clips(VideoClips):
    """Evaluation clips with ``action`` and the clip's privacy ``attributes``."""

    def __init__(
        self,
        annotations: list[PAAnnotation],
        video_root: Path,
        classes: list[str],
        table: AttributeTable,
        mapping: Mapping[str, str | Mapping[int, str]],
        spec: ClipSpec,
        label_mode: Literal["clip", "video"] = "clip",
    ):
        index = {c: i for i, c in enumerate(classes)}
        samples = [(video_root / a.action / a.video, index[a.action]) for a in annotations]
        super().__init__(samples, spec, train=False)
        self.annotations, self.table, self.mapping = annotations, table, mapping
        self.label_mode = label_mode

    def extras(self, index: int, indices: list[int], total: int) -> dict[str, torch.Tensor]:
        frames = indices if self.label_mode == "clip" else None
        ids = self.annotations[index].vispr_ids(frames, self.mapping)
        return {"attributes": self.table.vector(ids)}


class PAHMDB51(DatasetModule):
    """PA-HMDB51 as an evaluation set: clips (utility) and frames (privacy) with labels.

    Args:
        root: the PA-HMDB51 folder holding ``PrivacyAttributes/`` (relative to ``data_dir``).
        videos: the HMDB51 video folder (``<action>/<video>.avi``), relative to ``data_dir``.
        setting: the VISPR setting of the label vector (``hmdb51``: 6 attributes).
        attribute_map: replaces entries of :data:`PA_HMDB51_TO_VISPR`.
        label_mode: ``clip`` (the frames the clip took) or ``video`` (anywhere in the video).
        frames_per_video: privacy evaluation frames per video (segment centres).
        num_frames, stride, size, test_temporal: as :class:`privacy_lit.data.hmdb51.HMDB51`.
    """

    roles = ("utility", "privacy")

    def __init__(
        self,
        root: str = "pa_hmdb51",
        videos: str = "hmdb51/hmdb51",
        setting: str = "hmdb51",
        attribute_map: dict[str, str | dict[int, str]] | None = None,
        label_mode: Literal["clip", "video"] = "clip",
        frames_per_video: int = 1,
        num_frames: int = 16,
        stride: int = 2,
        size: int | None = 112,
        test_temporal: Temporal = "center",
        data_dir: str = "data",
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        super().__init__(root, data_dir, batch_size, num_workers)
        if setting not in SETTING_NAMES or setting == "vispr2":
            raise ValueError(
                f"PA-HMDB51 labels map to settings ucf101, hmdb51, vita; got {setting!r}"
            )
        self.videos, self.setting, self.label_mode = videos, setting, label_mode
        self.mapping = _mapping(attribute_map)
        self.table = attribute_table(setting)
        self.frames_per_video = frames_per_video
        self.spec = ClipSpec(num_frames, stride, size, test_temporal=test_temporal)

    @property
    def annotation_root(self) -> Path:
        return self.root / "PrivacyAttributes"

    @property
    def video_root(self) -> Path:
        return self.path(self.videos)

    @property
    def classes(self) -> list[str]:
        """HMDB51's classes: the sorted action folders of ``videos``, as :class:`HMDB51` indexes
        them, so PA-HMDB51 test labels and HMDB51 training labels always agree."""
        if not self.video_root.is_dir():
            raise FileNotFoundError(f"missing HMDB51 video folder {self.video_root}")
        return sorted(p.name for p in self.video_root.iterdir() if p.is_dir())

    @property
    def class_names(self) -> list[str]:
        return [readable(c) for c in self.classes]

    @property
    def attribute_names(self) -> list[str]:
        return list(self.table.names)

    def annotations(self) -> list[PAAnnotation]:
        annotations = read_pa_folder(self.annotation_root)
        classes = set(self.classes)
        for a in annotations:
            if a.action not in classes:
                raise ValueError(
                    f"{self.annotation_root / (a.action + '.json')}: action {a.action!r} has no "
                    f"video folder in {self.video_root}"
                )
        return annotations

    @staticmethod
    def _test_only(stage: str) -> None:
        if stage == "train":
            raise ValueError(
                "PA-HMDB51 is a test set: train on HMDB51/UCF101 (utility) and VISPR (privacy)"
            )

    def utility_dataset(self, stage: str) -> PAHMDB51Clips:
        self._test_only(stage)
        return self._cached(
            "utility",
            stage,
            lambda: PAHMDB51Clips(
                self.annotations(),
                self.video_root,
                self.classes,
                self.table,
                self.mapping,
                self.spec,
                self.label_mode,
            ),
        )

    def privacy_dataset(self, stage: str) -> Dataset:
        self._test_only(stage)

        def build() -> VideoFrames:
            annotations = self.annotations()

            def labels(video: int, frame: int, total: int) -> torch.Tensor:
                frames = [frame] if self.label_mode == "clip" else None
                return self.table.vector(annotations[video].vispr_ids(frames, self.mapping))

            videos = [self.video_root / a.action / a.video for a in annotations]
            return VideoFrames(videos, labels, self.spec, False, self.frames_per_video)

        return self._cached("privacy", stage, build)

    def check(self, report: CheckReport, decode: int | None = None) -> None:
        folder = self.annotation_root
        if not folder.is_dir():
            report.error(folder, "missing PA-HMDB51 annotation folder (PrivacyAttributes/)")
            return
        files = sorted(folder.glob("*.json"))
        if not files:
            report.error(folder, "no <action>.json annotation files")
            return
        annotations = []
        for file in files:
            if file.stem not in HMDB51_ACTIONS:
                report.error(file, f"{file.stem!r} is not an HMDB51 action")
                continue
            try:
                annotations += read_pa_file(file)
            except ValueError as err:
                report.error(file, str(err))
        report.count(f"{folder} videos", len(annotations), None)
        present = set()
        videos = []
        for a in annotations:
            present |= a.vispr_ids(None, self.mapping)
            path = self.video_root / a.action / a.video
            if not path.is_file():
                report.error(path, f"missing video (annotated in {folder / (a.action + '.json')})")
            else:
                videos.append(path)
        for name, members in zip(self.table.names, self.table.members, strict=True):
            if annotations and not members & present:
                report.warn(
                    folder, f"no video shows {name!r} under the mapping: its AP is undefined"
                )
        check_videos(videos, report, decode)
