"""OK-VQA (Marino et al., CVPR 2019) as distributed, with the paper's question-type filter and the
authors' privacy labels of the test images.

Layout (``<root>`` = ``data/okvqa``, COCO images in ``coco`` = ``data/coco``)::

    okvqa/OpenEnded_mscoco_{train,val}2014_questions.json   {"questions": [{image_id, question,
                                                              question_id}]}
    okvqa/mscoco_{train,val}2014_annotations.json           {"annotations": [{image_id,
                                                              question_id, question_type,
                                                              answer_type, answers: 10 × {...}}]}
    okvqa/privacy_labels.json                               the authors' release (name is
                                                              configurable, see below)
    coco/{train,val}2014/COCO_{train,val}2014_{image_id:012d}.jpg

``train2014`` is OK-VQA's training split, ``val2014`` its test split. Question types are OK-VQA's
codes (``one`` … ``ten``, ``other``); the paper keeps ``four`` (Sports and Recreation) and
``seven`` (People and Everyday life). A utility sample is ``{"image", "question", "answers" (the 10
``answer`` strings), "question_id", "question_type"}``.

Privacy labels (test images only): a JSON list of ``{"image": "COCO_val2014_000000010825.jpg",
"id": 33, "choice": "a17_color" | {"choices": [...]}}``; no ``choice`` means none of the 7
attributes. Labels are VISPR ids of UCF101-VISPR's 7 and go through the setting's table. The
release (github.com/phoebehxf/okvqa-privacy-attribute, ``annotations.json``) has 994 entries for
993 images: ``COCO_val2014_000000067422.jpg`` is listed twice with different labels; the loader
unites them and warns, naming the image.

Images are fitted to ``size × size``: ``fit="pad"`` pads to a square with the CLIP mean colour
(as LLaVA-1.5 does) so no question-relevant content is cut; ``"crop"`` takes the centre square.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from privacy_lit.data.base import CheckReport, DatasetModule, decode_budget
from privacy_lit.data.vispr import VISPR7, AttributeTable, attribute_table, read_image

QUESTION_TYPES = {
    "one": "Vehicles and Transportation",
    "two": "Brands, Companies and Products",
    "three": "Objects, Material and Clothing",
    "four": "Sports and Recreation",
    "five": "Cooking and Food",
    "six": "Geography, History, Language and Culture",
    "seven": "People and Everyday life",
    "eight": "Plants and Animals",
    "nine": "Science and Technology",
    "ten": "Weather and Climate",
    "other": "Other",
}
SPLITS = {"train": "train2014", "val": "val2014", "test": "val2014"}
OFFICIAL_QUESTIONS = {"train2014": 9_009, "val2014": 5_046}
OFFICIAL_LABELLED_IMAGES = 993  # the authors' privacy labels: 994 entries, one image twice
ANSWERS_PER_QUESTION = 10
PAD_COLOUR = (122, 116, 104)  # CLIP's mean pixel, LLaVA-1.5's padding colour


@dataclass(frozen=True)
class Question:
    question_id: int
    image_id: int
    question: str
    question_type: str
    answers: tuple[str, ...]


def _load(path: Path, key: str) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"missing OK-VQA file {path}")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"bad OK-VQA file {path}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ValueError(f"bad OK-VQA file {path}: expected an object with a {key!r} list")
    return data[key]


def read_questions(root: Path, split: str) -> list[Question]:
    """Questions joined with their annotations (all types); errors name file and question id."""
    q_path = root / f"OpenEnded_mscoco_{split}_questions.json"
    a_path = root / f"mscoco_{split}_annotations.json"
    questions = {}
    for q in _load(q_path, "questions"):
        try:
            questions[int(q["question_id"])] = (int(q["image_id"]), str(q["question"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{q_path}: bad question {q!r}: {err}") from err
    out = []
    for a in _load(a_path, "annotations"):
        qid = a.get("question_id")
        where = f"{a_path}: question_id {qid}"
        if qid not in questions:
            raise ValueError(f"{where}: not in {q_path.name}")
        qtype = a.get("question_type")
        if qtype not in QUESTION_TYPES:
            raise ValueError(f"{where}: question_type {qtype!r} is not an OK-VQA code")
        answers = a.get("answers")
        if not isinstance(answers, list) or len(answers) != ANSWERS_PER_QUESTION:
            n = len(answers) if isinstance(answers, list) else answers
            raise ValueError(f"{where}: expected {ANSWERS_PER_QUESTION} answers, got {n}")
        try:
            texts = tuple(str(x["answer"]) for x in answers)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{where}: every answer needs an 'answer' field") from err
        image_id, question = questions[qid]
        out.append(Question(int(qid), image_id, question, qtype, texts))
    return out


def coco_image(coco_root: Path, split: str, image_id: int) -> Path:
    return coco_root / split / f"COCO_{split}_{image_id:012d}.jpg"


def fit_square(
    image: np.ndarray, size: int | None, fit: Literal["pad", "crop"] = "pad"
) -> torch.Tensor:
    """``size × size`` uint8: pad to a square (``pad``) or take the centre square (``crop``)."""
    if size is None:
        return torch.from_numpy(np.ascontiguousarray(image))
    h, w = image.shape[:2]
    side = max(h, w) if fit == "pad" else min(h, w)
    if fit == "pad":
        square = np.empty((side, side, 3), np.uint8)
        square[:] = PAD_COLOUR
        y0, x0 = (side - h) // 2, (side - w) // 2
        square[y0 : y0 + h, x0 : x0 + w] = image
    else:
        y0, x0 = (h - side) // 2, (w - side) // 2
        square = image[y0 : y0 + side, x0 : x0 + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    if side != size:
        square = cv2.resize(square, (size, size), interpolation=interpolation)
    return torch.from_numpy(np.ascontiguousarray(square))


class OKVQAQuestions(Dataset):
    """Image–question samples with the 10 ground-truth answers."""

    def __init__(
        self, questions: list[Question], coco_root: Path, split: str, size: int | None, fit: str
    ):
        self.questions, self.coco_root, self.split = questions, coco_root, split
        self.size, self.fit = size, fit

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict:
        q = self.questions[index]
        image = read_image(coco_image(self.coco_root, self.split, q.image_id))
        return {
            "image": fit_square(image, self.size, self.fit),
            "question": q.question,
            "answers": list(q.answers),
            "question_id": torch.tensor(q.question_id),
            "question_type": q.question_type,
            "index": torch.tensor(index),
        }


def read_privacy_labels(path: Path, allowed: frozenset[str]) -> dict[str, list[str]]:
    """``{image file name: [VISPR ids]}`` from the authors' labels; errors name file and entry."""
    if not path.is_file():
        raise FileNotFoundError(f"missing OK-VQA privacy labels {path}")
    try:
        entries = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"bad OK-VQA privacy labels {path}: {err}") from err
    if not isinstance(entries, list):
        raise ValueError(f"bad OK-VQA privacy labels {path}: expected a JSON list of entries")
    labels: dict[str, list[str]] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise ValueError(f"{where}: expected an object with an 'image' file name")
        choice = entry.get("choice")
        if choice is None:
            ids = []
        elif isinstance(choice, str):
            ids = [choice]
        elif isinstance(choice, dict) and isinstance(choice.get("choices"), list):
            ids = list(choice["choices"])
        else:
            raise ValueError(f"{where} ({entry['image']}): 'choice' must be an id or {{'choices'}}")
        unknown = sorted(set(ids) - allowed)
        if unknown:
            raise ValueError(
                f"{where} ({entry['image']}): unknown attribute ids {unknown}; "
                f"expected ids among {sorted(allowed)}"
            )
        name = entry["image"]
        if name in labels:  # the release lists COCO_val2014_000000067422.jpg twice
            warnings.warn(
                f"{path}: entry {i}: image {name} is listed again (labels {labels[name]}, now "
                f"{ids}); its labels are united",
                UserWarning,
                stacklevel=2,
            )
        labels.setdefault(name, [])
        labels[name] += [x for x in ids if x not in labels[name]]
    if not labels:
        raise ValueError(f"OK-VQA privacy labels {path} have no entries")
    return labels


def labelled_image_path(coco_root: Path, name: str, where: Path) -> Path:
    parts = name.split("_")
    if len(parts) != 3 or parts[0] != "COCO":
        raise ValueError(f"{where}: image {name!r} is not a COCO file name")
    return coco_root / parts[1] / name


class OKVQAPrivacyImages(Dataset):
    """The labelled OK-VQA test images as ``{"image", "attributes"}``."""

    def __init__(
        self,
        labels: dict[str, list[str]],
        coco_root: Path,
        where: Path,
        table: AttributeTable,
        size: int | None,
        fit: str,
    ):
        self.items = sorted(labels.items())
        self.paths = [labelled_image_path(coco_root, name, where) for name, _ in self.items]
        self.table, self.size, self.fit = table, size, fit

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = read_image(self.paths[index])
        return {
            "image": fit_square(image, self.size, self.fit),
            "attributes": self.table.vector(self.items[index][1]),
        }


class OKVQA(DatasetModule):
    """OK-VQA questions of the chosen types (utility) and the labelled test images (privacy).

    Args:
        root: the OK-VQA folder (question and annotation JSONs), relative to ``data_dir``.
        coco: the COCO folder holding ``train2014/`` and ``val2014/``, relative to ``data_dir``.
        question_types: OK-VQA codes to keep (the paper: ``four`` and ``seven``); None keeps all.
        privacy_labels: the authors' privacy-label file, relative to ``data_dir`` (None: none).
        setting: the VISPR setting of the privacy label vector (the 7 of UCF101-VISPR).
        size, fit: images become ``size × size`` by padding (``pad``) or centre crop (``crop``).
    """

    roles = ("utility", "privacy")
    task = "vqa"

    def __init__(
        self,
        root: str = "okvqa",
        coco: str = "coco",
        question_types: list[str] | None = None,
        privacy_labels: str | None = "okvqa/privacy_labels.json",
        setting: str = "ucf101",
        size: int | None = 224,
        fit: Literal["pad", "crop"] = "pad",
        data_dir: str = "data",
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        super().__init__(root, data_dir, batch_size, num_workers)
        self.question_types = ["four", "seven"] if question_types is None else list(question_types)
        unknown = set(self.question_types) - set(QUESTION_TYPES)
        if unknown:
            raise ValueError(
                f"unknown OK-VQA question types {sorted(unknown)}; "
                f"expected codes among {list(QUESTION_TYPES)}"
            )
        self.coco, self.privacy_labels = coco, privacy_labels
        self.table = attribute_table(setting)
        self.size, self.fit = size, fit

    @property
    def coco_root(self) -> Path:
        return self.path(self.coco)

    def questions(self, split: str) -> list[Question]:
        """The split's questions of the chosen types; an empty result is an error."""
        kept = [
            q for q in read_questions(self.root, split) if q.question_type in self.question_types
        ]
        if not kept:
            raise ValueError(
                f"{self.root}: no {split} question of types {self.question_types} (empty split)"
            )
        return kept

    def utility_dataset(self, stage: str) -> OKVQAQuestions:
        split = SPLITS[stage]
        return self._cached(
            "utility",
            stage,
            lambda: OKVQAQuestions(
                self.questions(split), self.coco_root, split, self.size, self.fit
            ),
        )

    def privacy_dataset(self, stage: str) -> OKVQAPrivacyImages:
        if stage == "train" or self.privacy_labels is None:
            raise ValueError(
                "OK-VQA has privacy labels for its test images only (privacy_labels file): "
                "train the privacy side on VISPR"
            )
        path = self.path(self.privacy_labels)
        return self._cached(
            "privacy",
            stage,
            lambda: OKVQAPrivacyImages(
                read_privacy_labels(path, frozenset(VISPR7)),
                self.coco_root,
                path,
                self.table,
                self.size,
                self.fit,
            ),
        )

    @property
    def attribute_names(self) -> list[str]:
        return list(self.table.names) if self.privacy_labels else []

    def check(self, report: CheckReport, decode: int | None = None) -> None:
        decoded = 0
        test_images: set[str] = set()
        for split, official in OFFICIAL_QUESTIONS.items():
            try:
                questions = read_questions(self.root, split)
            except (OSError, ValueError) as err:
                report.error_from(err)
                continue
            report.count(f"{self.root} {split} questions", len(questions), official)
            kept = [q for q in questions if q.question_type in self.question_types]
            report.count(
                f"{self.root} {split} questions of types {self.question_types}", len(kept), None
            )
            for image_id in sorted({q.image_id for q in kept}):
                path = coco_image(self.coco_root, split, image_id)
                if split == "val2014":
                    test_images.add(path.name)
                if not path.is_file() or path.stat().st_size == 0:
                    report.error(path, "missing or empty COCO image")
                elif decode_budget(decode, decoded):
                    decoded += 1
                    if cv2.imread(str(path), cv2.IMREAD_COLOR) is None:
                        report.error(path, "unreadable COCO image")
        if self.privacy_labels is None:
            return
        path = self.path(self.privacy_labels)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                labels = read_privacy_labels(path, frozenset(VISPR7))
        except (OSError, ValueError) as err:
            report.error_from(err)
            return
        for warning in caught:
            report.warn_from(warning.message)
        report.count(f"{path} labelled images", len(labels), OFFICIAL_LABELLED_IMAGES)
        for name in labels:
            try:
                image = labelled_image_path(self.coco_root, name, path)
            except ValueError as err:
                report.error_from(err)
                continue
            if not image.is_file():
                report.error(image, f"missing COCO image (labelled in {path})")
        unlabelled = test_images - set(labels)
        if test_images and unlabelled:
            report.warn(
                path,
                f"{len(unlabelled)} of {len(test_images)} filtered test images have "
                f"no privacy label entry, e.g. {sorted(unlabelled)[:3]}",
            )
