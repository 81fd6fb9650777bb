"""VISPR as distributed, and the privacy-attribute settings every benchmark maps its labels to.

Layout (``<root>`` = ``data/vispr`` by default)::

    attributes.tsv                      idx, attribute_id, group, description (68 rows)
    train2017.txt val2017.txt test2017.txt   lines "annotations/<split>/<id>.json"
    annotations/<split>/<id>.json       {"image_path": "images/<split>/<id>.jpg", "labels": [...]}
    images/<split>/<id>.jpg

Settings (the label vector of every privacy sample, whatever dataset it comes from, is built from
VISPR attribute ids through an :class:`AttributeTable`):

- ``ucf101``: the 7 attributes of UCF101-VISPR (:data:`VISPR7`); ``vispr1`` is the same set,
  named for the novel-attribute protocol.
- ``hmdb51``: HMDB51-VISPR's 6 (the 7 without ``a65_rel_social``).
- ``vita``: the older 5-class grouping of Wu et al.: gender | face (complete or partial) |
  semi-nudity | skin colour | relationship (personal or social).
- ``vispr2``: the novel attributes of the protocol of Tab. B9 (supplementary): "the framework is
  evaluated using VISPR testing set with 7 different privacy attributes (i.e., tattoo, race,
  sports, weight group, age group, hair color, and landmark), denoted as VISPR2. The action
  classes and privacy attributes during training and testing do not overlap." Their ids are
  looked up by name in ``attributes.tsv`` (never hard-coded) and must be disjoint from VISPR1.

The novel protocol as this project runs it (``conf/novel.yaml``): the anonymizer and its reviewer
train on VISPR ``train2017`` labelled over VISPR1; the fresh evaluation reviewer trains on the
anonymized ``train2017`` images labelled over VISPR2 and is tested on ``test2017`` over VISPR2.
The images are the official splits in both cases; only the attribute sets differ.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from privacy_lit.data.base import CheckReport, DatasetModule, decode_budget
from privacy_lit.data.video import crop_resize, sample_rng

VISPR7: tuple[str, ...] = (
    "a4_gender",
    "a9_face_complete",
    "a10_face_partial",
    "a17_color",
    "a12_semi_nudity",
    "a64_rel_personal",
    "a65_rel_social",
)
"""The 7 attributes of the UCF101-VISPR setting; HMDB51-VISPR uses the first six."""

VISPR2_NAMES: tuple[str, ...] = (
    "tattoo",
    "race",
    "sports",
    "weight group",
    "age group",
    "hair color",
    "landmark",
)
"""The novel attributes of Tab. B9, by the names the paper gives; resolved in attributes.tsv."""

SPLITS = {"train": "train2017", "val": "val2017", "test": "test2017"}
OFFICIAL_SIZES = {"train2017": 10_000, "val2017": 4_167, "test2017": 8_000}
OFFICIAL_ATTRIBUTES = 68


@dataclass(frozen=True)
class AttributeTable:
    """Label-vector entries, each present when any of its VISPR ids is present."""

    names: tuple[str, ...]
    members: tuple[frozenset[str], ...]

    @classmethod
    def of(cls, ids: Sequence[str]) -> AttributeTable:
        return cls(tuple(ids), tuple(frozenset([i]) for i in ids))

    @property
    def ids(self) -> frozenset[str]:
        return frozenset().union(*self.members)

    def vector(self, ids: Iterable[str]) -> torch.Tensor:
        present = set(ids)
        return torch.tensor([float(bool(m & present)) for m in self.members])

    def __len__(self) -> int:
        return len(self.names)


SETTINGS: dict[str, AttributeTable] = {
    "ucf101": AttributeTable.of(VISPR7),
    "vispr1": AttributeTable.of(VISPR7),
    "hmdb51": AttributeTable.of(VISPR7[:6]),
    "vita": AttributeTable(
        ("gender", "face", "semi_nudity", "skin_color", "relationship"),
        (
            frozenset({"a4_gender"}),
            frozenset({"a9_face_complete", "a10_face_partial"}),
            frozenset({"a12_semi_nudity"}),
            frozenset({"a17_color"}),
            frozenset({"a64_rel_personal", "a65_rel_social"}),
        ),
    ),
}
SETTING_NAMES = (*SETTINGS, "vispr2")


@dataclass(frozen=True)
class AttributeRow:
    idx: int
    attribute_id: str
    group: str
    description: str


def read_attributes_tsv(path: Path) -> list[AttributeRow]:
    """The rows of ``attributes.tsv`` (a header line, if there is one, is skipped)."""
    if not path.is_file():
        raise FileNotFoundError(f"missing VISPR attribute list {path}")
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if line_no == 1 and not parts[0].strip().isdigit():
            continue  # header
        if len(parts) < 2 or not parts[0].strip().isdigit():
            raise ValueError(
                f"{path}:{line_no}: expected 'idx<TAB>attribute_id<TAB>group<TAB>description', "
                f"got {line!r}"
            )
        parts += [""] * (4 - len(parts))
        rows.append(
            AttributeRow(int(parts[0]), parts[1].strip(), parts[2].strip(), parts[3].strip())
        )
    if not rows:
        raise ValueError(f"VISPR attribute list {path} has no rows")
    return rows


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _id_words(attribute_id: str) -> list[str]:
    return _words(re.sub(r"^a\d+_", "", attribute_id))


def resolve_attributes(
    names: Sequence[str], rows: Sequence[AttributeRow], where: Path
) -> list[str]:
    """VISPR ids for attribute ids or names (``"hair color"``), looked up in ``attributes.tsv``:
    an id as is, else a unique exact match of the description or the id's name part, else the
    unique row whose id name and description contain every word of the name (``group`` aside)."""
    ids = {r.attribute_id for r in rows}
    out = []
    for name in names:
        if name in ids:
            out.append(name)
            continue
        want = _words(name)
        exact = [
            r for r in rows if _words(r.description) == want or _id_words(r.attribute_id) == want
        ]
        if len(exact) != 1:
            words = set(want) - {"group"}
            exact = [
                r
                for r in rows
                if words <= set(_id_words(r.attribute_id)) | set(_words(r.description))
            ]
        if len(exact) != 1:
            found = ", ".join(f"{r.attribute_id} ({r.description})" for r in exact) or "none"
            raise ValueError(
                f"{where}: attribute {name!r} must match exactly one row, matches {found}; "
                "give its attribute_id instead"
            )
        out.append(exact[0].attribute_id)
    return out


def attribute_table(
    setting: str, attributes: Sequence[str] | None = None, tsv: Path | None = None
) -> AttributeTable:
    """The label table of a setting; ``attributes`` (ids or names) replaces it when given."""
    if attributes is not None:
        if tsv is None:
            return AttributeTable.of(list(attributes))
        return AttributeTable.of(resolve_attributes(attributes, read_attributes_tsv(tsv), tsv))
    if setting in SETTINGS:
        return SETTINGS[setting]
    if setting != "vispr2":
        raise ValueError(f"unknown VISPR setting {setting!r}; expected one of {SETTING_NAMES}")
    if tsv is None:
        raise ValueError("the vispr2 setting needs attributes.tsv to look its ids up")
    ids = resolve_attributes(VISPR2_NAMES, read_attributes_tsv(tsv), tsv)
    overlap = set(ids) & set(VISPR7)
    if overlap or len(set(ids)) != len(ids):
        raise ValueError(
            f"{tsv}: VISPR2 must be 7 distinct attributes disjoint from VISPR1, got {ids}"
        )
    return AttributeTable.of(ids)


def read_vispr_annotation(path: Path) -> tuple[str, list[str]]:
    """``(image_path, labels)`` of one annotation file; errors name the file."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"bad VISPR annotation {path}: {err}") from err
    if not isinstance(record, dict):
        raise ValueError(f"bad VISPR annotation {path}: expected a JSON object")
    missing = {"image_path", "labels"} - set(record)
    if missing:
        raise ValueError(f"bad VISPR annotation {path}: missing keys {sorted(missing)}")
    if not isinstance(record["labels"], list):
        raise ValueError(f"bad VISPR annotation {path}: 'labels' must be a list of attribute ids")
    return record["image_path"], record["labels"]


def read_split_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"missing VISPR split list {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_image(path: Path, where: Path | None = None) -> np.ndarray:
    """RGB uint8 ``H × W × 3``; the error names the image (and the file that listed it)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        listed = f" (listed in {where})" if where else ""
        raise OSError(f"cannot read image {path}{listed}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_tensor(
    image: np.ndarray,
    size: int | None,
    rng: np.random.Generator | None = None,
    crop_scale: tuple[float, float] = (1.0, 1.0),
    hflip: bool = False,
) -> torch.Tensor:
    """Square crop and resize, as video frames get (:func:`privacy_lit.data.video.crop_resize`)."""
    return torch.from_numpy(crop_resize(image[None], size, rng, crop_scale, hflip)[0])


class VISPRImages(Dataset):
    """Images with multi-hot privacy labels over ``attributes`` (ids, or an AttributeTable).

    Labels outside the chosen set are ignored (VISPR has 68); labels that ``attributes.tsv`` does
    not list are an error naming the annotation file. ``train`` draws a random crop (and flip).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train2017",
        attributes: Sequence[str] | AttributeTable = VISPR7,
        size: int | None = None,
        train: bool = False,
        crop_scale: tuple[float, float] = (1.0, 1.0),
        hflip: bool = False,
        seed: int | None = None,
    ):
        self.root, self.size = Path(root), size
        self.table = (
            attributes
            if isinstance(attributes, AttributeTable)
            else AttributeTable.of(list(attributes))
        )
        self.attributes = self.table.names
        self.train, self.crop_scale, self.hflip, self.seed = train, tuple(crop_scale), hflip, seed
        listing = self.root / f"{split}.txt"
        self.annotations = read_split_list(listing)
        if not self.annotations:
            raise ValueError(f"VISPR split list {listing} is empty")
        tsv = self.root / "attributes.tsv"
        self.known = {r.attribute_id for r in read_attributes_tsv(tsv)}
        unknown = self.table.ids - self.known
        if unknown:
            raise ValueError(f"attributes {sorted(unknown)} of the setting are not in {tsv}")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.annotations)

    def _record(self, index: int) -> tuple[Path, str, list[str]]:
        path = self.root / self.annotations[index]
        image_path, labels = read_vispr_annotation(path)
        unknown = sorted(set(labels) - self.known)
        if unknown:
            raise ValueError(
                f"bad VISPR annotation {path}: unknown attribute ids {unknown} "
                f"(not in {self.root / 'attributes.tsv'})"
            )
        return path, image_path, labels

    def labels(self, index: int) -> torch.Tensor:
        """The multi-hot label vector of one sample, without reading its image."""
        return self.table.vector(self._record(index)[2])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, image_path, labels = self._record(index)
        image = read_image(self.root / image_path, path)
        rng = sample_rng(self.seed, index, self.epoch) if self.train else None
        return {
            "image": image_tensor(image, self.size, rng, self.crop_scale, self.hflip),
            "attributes": self.table.vector(labels),
        }


class VISPR(DatasetModule):
    """VISPR privacy images for one attribute ``setting`` (see the module docstring).

    Args:
        root: the VISPR folder (relative to ``data_dir``).
        setting: ``ucf101`` (7), ``hmdb51`` (6), ``vita`` (5 groups), ``vispr1`` or ``vispr2``.
        attributes: explicit VISPR ids or names instead of a setting.
        size: images are centre-cropped to a square and resized to ``size``.
        train_crop_scale, train_hflip: training augmentation (SPAct: U(0.6, 1) crops, flips).
        seed: fixed training crops per sample (None: new ones every epoch).
    """

    roles = ("privacy",)

    def __init__(
        self,
        root: str = "vispr",
        setting: str = "ucf101",
        attributes: list[str] | None = None,
        size: int | None = 112,
        train_crop_scale: tuple[float, float] = (0.6, 1.0),
        train_hflip: bool = True,
        seed: int | None = None,
        data_dir: str = "data",
        batch_size: int = 32,
        num_workers: int = 0,
    ):
        super().__init__(root, data_dir, batch_size, num_workers)
        if setting not in SETTING_NAMES:
            raise ValueError(f"unknown VISPR setting {setting!r}; expected one of {SETTING_NAMES}")
        self.setting, self.attributes = setting, attributes
        self.size, self.seed = size, seed
        self.train_crop_scale, self.train_hflip = tuple(train_crop_scale), train_hflip

    @cached_property
    def table(self) -> AttributeTable:
        return attribute_table(self.setting, self.attributes, self.root / "attributes.tsv")

    def set_data_dir(self, data_dir: str | Path) -> None:
        super().set_data_dir(data_dir)
        self.__dict__.pop("table", None)

    @property
    def name(self) -> str:
        return f"VISPR {self.setting} ({self.root})"

    @property
    def attribute_names(self) -> list[str]:
        return list(self.table.names)

    def privacy_dataset(self, stage: str) -> VISPRImages:
        def build() -> VISPRImages:
            train = stage == "train"
            return VISPRImages(
                self.root,
                SPLITS[stage],
                self.table,
                self.size,
                train,
                self.train_crop_scale if train else (1.0, 1.0),
                self.train_hflip and train,
                self.seed,
            )

        return self._cached("privacy", stage, build)

    def check(self, report: CheckReport, decode: int | None = None) -> None:
        tsv = self.root / "attributes.tsv"
        try:
            rows = read_attributes_tsv(tsv)
        except (OSError, ValueError) as err:
            report.error_from(err)
            return
        if len(rows) != OFFICIAL_ATTRIBUTES:
            report.warn(tsv, f"{len(rows)} attributes, the official list has {OFFICIAL_ATTRIBUTES}")
        known = {r.attribute_id for r in rows}
        try:
            table = self.table
        except ValueError as err:
            report.error_from(err)
            return
        if table.ids - known:
            report.error(tsv, f"setting attributes {sorted(table.ids - known)} are not listed")
        report.note(f"{self.name}: setting {self.setting!r} = {list(table.names)}")
        decoded = 0
        for split, official in OFFICIAL_SIZES.items():
            listing = self.root / f"{split}.txt"
            try:
                entries = read_split_list(listing)
            except OSError as err:
                report.error_from(err)
                continue
            report.count(str(listing), len(entries), official)
            positives = np.zeros(len(table))
            for entry in entries:
                path = self.root / entry
                if not path.is_file():
                    report.error(path, f"missing annotation file (listed in {listing})")
                    continue
                try:
                    image_path, labels = read_vispr_annotation(path)
                except ValueError as err:
                    report.error_from(err)
                    continue
                unknown = sorted(set(labels) - known)
                if unknown:
                    report.error(path, f"unknown attribute ids {unknown} (not in {tsv})")
                positives += table.vector(labels).numpy()
                image = self.root / image_path
                if not image.is_file() or image.stat().st_size == 0:
                    report.error(image, f"missing or empty image (listed in {path})")
                elif decode_budget(decode, decoded):
                    decoded += 1
                    if cv2.imread(str(image), cv2.IMREAD_COLOR) is None:
                        report.error(image, f"unreadable image (listed in {path})")
            for name, count in zip(table.names, positives, strict=True):
                if entries and count == 0:
                    report.warn(listing, f"no positive sample of {name!r}: its AP is undefined")
