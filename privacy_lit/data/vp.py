"""VP-HMDB51 and VP-UCF101 (Li et al., STPrivacy, ICCV 2023): HMDB51 / UCF101 videos with
*video-level* privacy labels, the same-dataset benchmarks of Tab. B10.

The release (github.com/ming1993li/stprivacy, ``annotations/``) is one pickle per dataset:
``hmdb51_privacy_attribute_label.pickle`` (6,766 videos) and
``ucf101_privacy_attribute_label.pickle`` (13,320), each a dict from ``"<action>/<video>.mp4"`` to
an int64 array of shape (1, 5) of 0/1. The ``.mp4`` keys name the official ``.avi`` videos: they
are matched by file stem (every video of both datasets has exactly one key).

The five columns are not named in the release. Their order, :data:`VP_COLUMNS` = skin colour,
face, gender, nudity, relationship, is the order in which PA-HMDB51 lists its five attributes
("skin color, face, gender, nudity, and relationship", Wu et al.), and the labels confirm it: all
515 PA-HMDB51 videos are VP-HMDB51 videos, and of the 120 possible column orders this one agrees
best with PA-HMDB51's "present anywhere in the video" labels (per column 0.95, 0.81, 0.93, 0.71,
0.84), and each PA-HMDB51 attribute correlates most with its own column (phi 0.47, 0.54, 0.24,
0.52, 0.45). Skin colour and gender are present in ≈90 % of videos, so agreement alone barely
separates those two; the correlation does (column 0: 0.47 with skin colour, 0.14 with gender;
gender: 0.24 with column 2, 0.14 with column 0). ``tests/test_real_annotations.py`` recomputes
this from the real files. ``columns`` overrides the order.

Pickles are read with a restricted unpickler that admits only numpy's array reconstruction
(``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype`` without object
fields): a downloaded pickle can never run code, and anything else is refused with an error
naming the file and the refused global.

Your own labels work too (``label_format`` ``json`` or ``csv``, by extension when ``auto``):

- JSON: ``{"<video>": ["face", "gender"], ...}`` or ``{"<video>": {"face": 1, "gender": 0}, ...}``
  (:func:`to_json` writes a pickle's labels in the first form);
- CSV: a ``video`` column and either an ``attributes`` column (names separated by ``;``, ``|`` or
  spaces) or one 0/1 column per attribute.

``<video>`` may be the relative path, the file name or its stem: videos are matched by stem.
``attributes`` fixes the label order (default: :data:`VP_COLUMNS`); a name outside it is an error.
Videos of a split without a label entry are left out of the privacy samples (``data check``
counts them).

Splits and actions are HMDB51's and UCF101's official ones; the utility side is unchanged.
Privacy samples are single frames (``privacy_view="frame"``: random when training, segment
centres when testing) or whole clips (``"clip"``, for video-level reviewers such as ViT-S over
frames).

    python -m privacy_lit.data.vp LABELS.pickle OUT.json   # the labels as JSON, to read or edit
"""

from __future__ import annotations

import csv
import json
import pickle
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from privacy_lit.data.base import CheckReport
from privacy_lit.data.hmdb51 import HMDB51
from privacy_lit.data.ucf101 import UCF101
from privacy_lit.data.video import VideoClips, VideoFrames

VP_COLUMNS: tuple[str, ...] = ("skin_color", "face", "gender", "nudity", "relationship")
"""The column order of the released pickles (evidence: the module docstring); also the default
label order."""

LabelFormat = Literal["auto", "pickle", "json", "csv"]
_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's _reconstruct, wherever this numpy keeps it
PICKLE_SUFFIXES = (".pickle", ".pkl")


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else: ``find_class`` is the only way
    a pickle reaches code, and it returns numpy's array reconstruction or refuses."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in (
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
        ):
            return _RECONSTRUCT
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return _plain_dtype
        raise pickle.UnpicklingError(
            f"refused global {module}.{name}: only numpy arrays may be unpickled"
        )


def _plain_dtype(*args: object) -> np.dtype:
    """``numpy.dtype`` for the unpickler, refusing object dtypes (whose items would be arbitrary
    Python objects)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refused object dtype {dtype}: only numeric arrays")
    return dtype


def read_vp_pickle(path: Path, columns: Sequence[str] = VP_COLUMNS) -> dict[str, set[str]]:
    """``{key: present columns}`` of a released label pickle (keys as released,
    ``"<action>/<video>.mp4"``); errors name the file and the key."""
    try:
        with path.open("rb") as f:
            data = ArrayOnlyUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(
            f"{path}: not a VP label pickle of numpy arrays ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict from video to label array, got {type(data)}")
    rows = {}
    for key, value in data.items():
        ok = (
            isinstance(key, str)
            and isinstance(value, np.ndarray)
            and value.dtype.kind in "iub"
            and value.size == len(columns)
            and value.ndim <= 2
            and bool(np.isin(value, (0, 1)).all())
        )
        if not ok:
            shape = getattr(value, "shape", None)
            raise ValueError(
                f"{path}: entry {key!r}: expected an integer array of {len(columns)} values 0/1 "
                f"(shape (1, {len(columns)})), got {type(value).__name__} of shape {shape}"
            )
        rows[key] = {c for c, v in zip(columns, value.reshape(-1).tolist(), strict=True) if v}
    return rows


def _read_json(path: Path) -> dict[str, set[str]]:
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"bad video-level privacy labels {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object mapping video names to attributes")
    rows = {}
    for video, value in data.items():
        if isinstance(value, list):
            rows[video] = {str(v) for v in value}
        elif isinstance(value, dict):
            rows[video] = {str(k) for k, v in value.items() if v}
        else:
            raise ValueError(f"{path}: video {video!r}: expected a list or an object of 0/1")
    return rows


def _read_csv(path: Path) -> dict[str, set[str]]:
    rows = {}
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
            rows[row["video"]] = names
    return rows


def label_format_of(path: Path, label_format: LabelFormat = "auto") -> str:
    """The format of a label file: ``label_format``, or by extension when ``auto``."""
    if label_format != "auto":
        return label_format
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    if suffix in (".json", ".csv"):
        return suffix[1:]
    raise ValueError(
        f"{path}: cannot tell the label format from the extension; expected .pickle, .json or "
        ".csv, or set label_format"
    )


def read_vp_labels(
    path: Path,
    attributes: Sequence[str] = VP_COLUMNS,
    label_format: LabelFormat = "auto",
    columns: Sequence[str] = VP_COLUMNS,
) -> dict[str, set[str]]:
    """``{video stem: present attributes}``; errors name the file, the video and the attribute.

    ``columns`` is the pickle's column order (JSON and CSV name their attributes)."""
    if not path.is_file():
        raise FileNotFoundError(f"missing video-level privacy labels {path}")
    fmt = label_format_of(path, label_format)
    if fmt == "pickle":
        rows = read_vp_pickle(path, columns)
    elif fmt == "json":
        rows = _read_json(path)
    elif fmt == "csv":
        rows = _read_csv(path)
    else:
        raise ValueError(f"label_format must be auto, pickle, json or csv, got {label_format!r}")
    labels: dict[str, set[str]] = {}
    for video, names in rows.items():
        unknown = sorted(names - set(attributes))
        if unknown:
            raise ValueError(
                f"{path}: video {video!r}: unknown attributes {unknown}; "
                f"expected among {list(attributes)}"
            )
        stem = Path(video).stem
        if stem in labels:
            raise ValueError(f"{path}: video {video!r}: a second entry for the video {stem!r}")
        labels[stem] = names
    if not labels:
        raise ValueError(f"video-level privacy labels {path} have no entries")
    return labels


def to_json(rows: dict[str, set[str]], attributes: Sequence[str] = VP_COLUMNS) -> str:
    """Labels as the JSON form ``{"<video>": ["face", ...]}`` (attributes in label order)."""
    return json.dumps({k: [a for a in attributes if a in v] for k, v in rows.items()}, indent=1)


class VPClips(VideoClips):
    """Clips with the video's ``attributes`` added (the ``clip`` privacy view)."""

    def __init__(self, base: VideoClips, labels: list[torch.Tensor]):
        super().__init__(base.samples, base.spec, base.train, base.seed)
        self.labels = labels

    def extras(self, index: int, indices: list[int], total: int) -> dict[str, torch.Tensor]:
        return {"attributes": self.labels[index]}


class _VideoLevelPrivacy:
    """Adds video-level privacy labels to a video DatasetModule (HMDB51 or UCF101)."""

    def _init_vp(
        self,
        labels: str,
        attributes: Sequence[str] | None,
        columns: Sequence[str] | None,
        label_format: LabelFormat,
        privacy_view: str,
        frames_per_video: int,
    ) -> None:
        self.labels_file, self.label_format = labels, label_format
        self.vp_columns = list(columns) if columns is not None else list(VP_COLUMNS)
        self.vp_attributes = list(attributes) if attributes is not None else list(self.vp_columns)
        self.privacy_view, self.frames_per_video = privacy_view, frames_per_video

    @property
    def attribute_names(self) -> list[str]:
        return list(self.vp_attributes)

    def video_labels(self) -> dict[str, set[str]]:
        return read_vp_labels(
            self.path(self.labels_file), self.vp_attributes, self.label_format, self.vp_columns
        )

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
            report.error_from(err)
            return
        report.note(
            f"{path}: {len(labels)} labelled videos, columns {self.vp_columns}, positives "
            + ", ".join(f"{a} {sum(a in v for v in labels.values())}" for a in self.vp_attributes)
        )
        for stage in ("train", "test"):
            try:
                samples = self.utility_dataset(stage).samples
            except (OSError, ValueError) as err:
                report.error_from(err)
                continue
            stems = {p.stem for p, _ in samples}
            found = len(stems & set(labels))
            if found == 0:
                report.error(path, f"no {stage} video of split {self.split} has a label")
                continue
            report.note(f"split {self.split} {stage}: {found} of {len(stems)} videos labelled")
            if found < len(stems):
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
        labels: the label file, relative to ``data_dir`` (the released pickle, or JSON / CSV).
        attributes: label order (default: ``columns``).
        columns: the pickle's column order (default :data:`VP_COLUMNS`).
        label_format: ``auto`` (by extension), ``pickle``, ``json`` or ``csv``.
        privacy_view: privacy samples as single ``frame``s or whole ``clip``s.
        frames_per_video: evaluation frames per video in the ``frame`` view.
    """

    roles = ("utility", "privacy")

    def __init__(
        self,
        labels: str = "vp_hmdb51/hmdb51_privacy_attribute_label.pickle",
        attributes: list[str] | None = None,
        columns: list[str] | None = None,
        label_format: LabelFormat = "auto",
        privacy_view: Literal["frame", "clip"] = "frame",
        frames_per_video: int = 1,
        **hmdb51,
    ):
        super().__init__(**hmdb51)
        self._init_vp(labels, attributes, columns, label_format, privacy_view, frames_per_video)

    def check(self, report: CheckReport, decode: int | None = None) -> None:
        HMDB51.check(self, report, decode)
        self._check_vp(report)


class VPUCF101(_VideoLevelPrivacy, UCF101):
    """VP-UCF101: UCF101 (all of :class:`UCF101`'s arguments) + video-level privacy labels
    (arguments as :class:`VPHMDB51`)."""

    roles = ("utility", "privacy")

    def __init__(
        self,
        labels: str = "vp_ucf101/ucf101_privacy_attribute_label.pickle",
        attributes: list[str] | None = None,
        columns: list[str] | None = None,
        label_format: LabelFormat = "auto",
        privacy_view: Literal["frame", "clip"] = "frame",
        frames_per_video: int = 1,
        **ucf101,
    ):
        super().__init__(**ucf101)
        self._init_vp(labels, attributes, columns, label_format, privacy_view, frames_per_video)

    def check(self, report: CheckReport, decode: int | None = None) -> None:
        UCF101.check(self, report, decode)
        self._check_vp(report)


def main(argv: list[str] | None = None) -> int:
    """``python -m privacy_lit.data.vp LABELS OUT.json``: any label file as the JSON form."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m privacy_lit.data.vp", description=main.__doc__)
    parser.add_argument("labels", type=Path, help="a released pickle (or JSON / CSV)")
    parser.add_argument("out", type=Path, help="the JSON file to write")
    parser.add_argument("--columns", nargs=5, default=list(VP_COLUMNS), help="pickle column order")
    args = parser.parse_args(argv)
    if label_format_of(args.labels) == "pickle":
        rows = read_vp_pickle(args.labels, args.columns)  # keys as released
    else:
        rows = read_vp_labels(args.labels, args.columns)
    args.out.write_text(to_json(rows, args.columns) + "\n")
    print(f"{len(rows)} videos written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
