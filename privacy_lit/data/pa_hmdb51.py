"""PA-HMDB51 (Wu et al., TPAMI 2020): HMDB51 videos with both action and privacy labels, the test
set of HMDB51-VISPR and of the novel protocol UCF101 → PA-HMDB51.

Layout: ``<root>/PrivacyAttributes/<action>.json`` (github.com/VITA-Group/PA-HMDB51 as cloned,
``<root>`` = ``data/pa_hmdb51``; 51 files, 515 videos), and the videos themselves in the HMDB51
folder (``videos`` = ``hmdb51/hmdb51``, i.e. ``data/hmdb51/hmdb51/<action>/<video>.avi``)::

    {"<video>.avi": {"skin_color" | "face" | "gender" | "nudity" | "relationship":
                       [[start_frame, end_frame, value], ...],      # inclusive, 0-indexed
                     "review": bool, "note": str}}

``value`` is one integer or a *list* of them: several values present at once in the range (42
videos of the release, e.g. gender ``[1, 2]`` = a man and a woman in the frames; the dataset's
annotation tool and statistics treat a list so). The values mean what the annotation tool says
(:data:`PA_VALUES`).

Labels: each present value maps to VISPR ids through one table (:data:`PA_HMDB51_TO_VISPR`, or
the value-wise :data:`PA_HMDB51_TO_VISPR_VALUEWISE`), and a frame's label is the union over its
ranges and their values. A clip's labels are the union over the frames it took
(``label_mode="clip"``), or over the whole video (``"video"``). The VISPR ids then go through the
setting's :class:`AttributeTable` like every other privacy label (HMDB51-VISPR: 6 attributes).

Videos with ``"review": false`` (39 of the release: annotated, not yet double-checked) are kept
by default, as the prior works keep them; ``include_unreviewed=False`` drops them from the test
set, and ``data check`` counts them either way.
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
"""The five attributes annotated in PA-HMDB51 (in the order of its paper)."""

PA_VALUES: dict[str, dict[int, str]] = {
    "skin_color": {0: "unidentifiable", 1: "white", 2: "brown/yellow", 3: "black"},
    "face": {0: "invisible", 1: "partial", 2: "complete"},
    "gender": {0: "unidentifiable", 1: "male", 2: "female"},
    "nudity": {0: "none", 1: "partial", 2: "semi"},
    "relationship": {0: "not identifiable", 1: "identifiable"},
}
"""What each value means, as PA-HMDB51's annotation tool defines it."""

OFFICIAL_VIDEOS = 515
"""Videos in the release (``PrivacyAttributes/*.json``), as Wu et al. (TPAMI 2020) report."""

ValueMap = dict[str, dict[int, str]]

PA_HMDB51_TO_VISPR: ValueMap = {
    "skin_color": {1: "a17_color", 2: "a17_color", 3: "a17_color"},
    "face": {1: "a10_face_partial", 2: "a10_face_partial"},
    "gender": {1: "a4_gender", 2: "a4_gender"},
    "nudity": {1: "a12_semi_nudity", 2: "a12_semi_nudity"},
    "relationship": {1: "a64_rel_personal"},
}
"""The default (``mapping="present"``): the prior works' conversion, any non-zero value means the
attribute is present. Every visible face becomes ``a10_face_partial``, so in the 6- and 7-attribute
settings ``a9_face_complete`` is never positive on PA-HMDB51: its AP is undefined and cMAP leaves
it out (``data check`` warns). Kept as the default because it is what published numbers used."""

PA_HMDB51_TO_VISPR_VALUEWISE: ValueMap = {
    **PA_HMDB51_TO_VISPR,
    "face": {1: "a10_face_partial", 2: "a9_face_complete"},
    "nudity": {2: "a12_semi_nudity"},
}
"""``mapping="valuewise"``: each value to the VISPR attribute that names it: face 1 (partial) →
``a10_face_partial``, face 2 (complete) → ``a9_face_complete``; only nudity 2 (semi) is VISPR's
``a12_semi_nudity`` (1, partial, is not)."""

MAPPINGS: dict[str, ValueMap] = {
    "present": PA_HMDB51_TO_VISPR,
    "valuewise": PA_HMDB51_TO_VISPR_VALUEWISE,
}
META_KEYS = {"review", "note"}

Range = tuple[int, int, frozenset[int]]


@dataclass(frozen=True)
class PAAnnotation:
    """The privacy annotation of one video: ``ranges[attribute] = ((start, end, values), ...)``
    with ``values`` the set of values present in frames ``start..end`` (inclusive)."""

    action: str
    video: str
    ranges: dict[str, tuple[Range, ...]]
    reviewed: bool = True

    def vispr_ids(
        self, frames: Iterable[int] | None, table: Mapping[str, Mapping[int, str]]
    ) -> set[str]:
        """VISPR ids present in any of ``frames`` (``None``: anywhere in the video): the union
        over ranges covering them of every value's id in ``table``."""
        wanted = None if frames is None else set(frames)
        ids = set()
        for attribute, ranges in self.ranges.items():
            targets = table.get(attribute, {})
            for start, end, values in ranges:
                found = {targets[v] for v in values if v in targets}
                if found and (wanted is None or any(start <= f <= end for f in wanted)):
                    ids |= found
        return ids

    @property
    def has_list_values(self) -> bool:
        """Whether a range holds several values at once (a list in the JSON)."""
        return any(len(v) > 1 for ranges in self.ranges.values() for _, _, v in ranges)


def _parse_range(item: object, attribute: str, where: str) -> Range:
    """One ``[start, end, value]``; ``value`` an integer or a non-empty list of them."""
    known = PA_VALUES[attribute]

    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    ok = isinstance(item, list) and len(item) == 3 and is_int(item[0]) and is_int(item[1])
    value = item[2] if ok else None
    values = value if isinstance(value, list) else [value]
    ok = ok and 0 <= item[0] <= item[1] and bool(values)
    if not ok or not all(is_int(v) and v in known for v in values):
        meanings = ", ".join(f"{k} {m}" for k, m in known.items())
        raise ValueError(
            f"{where}: {attribute!r} range {item!r} is not [start, end, value] with integers "
            f"0 <= start <= end and value one of {sorted(known)} ({meanings}) or a list of them"
        )
    return item[0], item[1], frozenset(values)


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
        review = record.get("review", True)
        if not isinstance(review, bool):
            raise ValueError(f"{where}: 'review' must be true or false, got {review!r}")
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
            ranges[key] = tuple(_parse_range(item, key, where) for item in value)
        out.append(PAAnnotation(action, video, ranges, review))
    return out


def read_pa_folder(folder: Path) -> list[PAAnnotation]:
    """All annotations of a ``PrivacyAttributes`` folder, sorted by action then video."""
    if not folder.is_dir():
        raise FileNotFoundError(f"missing PA-HMDB51 annotation folder {folder}")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no PA-HMDB51 annotation files (<action>.json) in {folder}")
    return [a for f in files for a in sorted(read_pa_file(f), key=lambda a: a.video)]


def value_map(
    mapping: str = "present", override: Mapping[str, str | Mapping] | None = None
) -> ValueMap:
    """The table of ``mapping`` (``present`` or ``valuewise``) with ``override``'s entries
    replacing whole attributes: an id (every non-zero value) or ``{value: id}``."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {list(MAPPINGS)}, got {mapping!r}")
    table = {k: dict(v) for k, v in MAPPINGS[mapping].items()}
    for key, entry in (override or {}).items():
        if key not in PA_ATTRIBUTES:
            raise ValueError(
                f"attribute_map: unknown PA-HMDB51 attribute {key!r}; expected one of "
                f"{PA_ATTRIBUTES}"
            )
        known = PA_VALUES[key]
        if isinstance(entry, str):
            table[key] = {v: entry for v in known if v != 0}
            continue
        values = {int(v): i for v, i in entry.items()}
        if not set(values) <= set(known) or not all(isinstance(i, str) for i in values.values()):
            raise ValueError(
                f"attribute_map: {key!r} must map values among {sorted(known)} to VISPR ids, "
                f"got {dict(entry)}"
            )
        table[key] = values
    return table


class PAHMDB51Clips(VideoClips):
    """Evaluation clips with ``action`` and the clip's privacy ``attributes``."""

    def __init__(
        self,
        annotations: list[PAAnnotation],
        video_root: Path,
        classes: list[str],
        table: AttributeTable,
        mapping: Mapping[str, Mapping[int, str]],
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
        mapping: ``present`` (:data:`PA_HMDB51_TO_VISPR`, the prior works') or ``valuewise``
            (:data:`PA_HMDB51_TO_VISPR_VALUEWISE`).
        attribute_map: replaces whole attributes of that table (an id, or ``{value: id}``).
        include_unreviewed: keep the videos marked ``"review": false`` (the default).
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
        mapping: Literal["present", "valuewise"] = "present",
        attribute_map: dict[str, str | dict[int, str]] | None = None,
        include_unreviewed: bool = True,
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
        self.mapping_name, self.include_unreviewed = mapping, include_unreviewed
        self.mapping = value_map(mapping, attribute_map)
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
        """The test videos: every annotated one (unreviewed ones unless dropped)."""
        annotations = read_pa_folder(self.annotation_root)
        classes = set(self.classes)
        for a in annotations:
            if a.action not in classes:
                raise ValueError(
                    f"{self.annotation_root / (a.action + '.json')}: action {a.action!r} has no "
                    f"video folder in {self.video_root}"
                )
        return [a for a in annotations if a.reviewed or self.include_unreviewed]

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
        annotations: list[PAAnnotation] = []
        unread = 0
        for file in files:
            if file.stem not in HMDB51_ACTIONS:
                report.error(file, f"{file.stem!r} is not an HMDB51 action")
                continue
            try:
                annotations += read_pa_file(file)
            except ValueError as err:
                report.error_from(err)
                unread += 1
        report.count(f"{folder} videos", len(annotations), OFFICIAL_VIDEOS)
        if unread:
            report.warn(folder, f"the videos of {unread} unreadable file(s) are not counted")
        unreviewed = sum(not a.reviewed for a in annotations)
        if unreviewed:
            fate = "kept" if self.include_unreviewed else "dropped (include_unreviewed: false)"
            report.note(f'{folder}: {unreviewed} videos marked "review": false, {fate}')
        listed = sum(a.has_list_values for a in annotations)
        if listed:
            report.note(f"{folder}: {listed} videos with several values in a range (united)")
        used = [a for a in annotations if a.reviewed or self.include_unreviewed]
        present: set[str] = set()
        videos = []
        for a in used:
            present |= a.vispr_ids(None, self.mapping)
            path = self.video_root / a.action / a.video
            if not path.is_file():
                report.error(path, f"missing video (annotated in {folder / (a.action + '.json')})")
            else:
                videos.append(path)
        report.note(f"{folder}: {len(used)} test videos, mapping {self.mapping_name!r}")
        for name, members in zip(self.table.names, self.table.members, strict=True):
            if used and not members & present:
                report.warn(
                    folder,
                    f"no video shows {name!r} under the mapping {self.mapping_name!r}: its AP is "
                    "undefined (left out of cMAP)",
                )
        check_videos(videos, report, decode)
