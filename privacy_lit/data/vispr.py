"""VISPR as distributed: split lists of annotation files, one JSON per image.

``<root>/train2017.txt`` lists ``annotations/train2017/<id>.json``; each holds
``{"image_path": "images/train2017/<id>.jpg", "labels": ["a4_gender", ...]}``. Labels outside
the chosen attribute set are ignored (VISPR has 68); the label vector follows ``attributes``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

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


class VISPRImages(Dataset):
    """Images with multi-hot privacy labels over ``attributes``."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train2017",
        attributes: Sequence[str] = VISPR7,
        size: int | None = None,
    ):
        self.root, self.attributes, self.size = Path(root), tuple(attributes), size
        listing = self.root / f"{split}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"missing VISPR split list {listing}")
        self.annotations = [
            line.strip() for line in listing.read_text().splitlines() if line.strip()
        ]
        if not self.annotations:
            raise ValueError(f"VISPR split list {listing} is empty")
        self._index = {a: i for i, a in enumerate(self.attributes)}

    def __len__(self) -> int:
        return len(self.annotations)

    def _record(self, index: int) -> tuple[Path, dict]:
        path = self.root / self.annotations[index]
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"bad VISPR annotation {path}: {err}") from err
        missing = {"image_path", "labels"} - set(record)
        if missing:
            raise ValueError(f"bad VISPR annotation {path}: missing keys {sorted(missing)}")
        return path, record

    def _target(self, labels: list[str]) -> torch.Tensor:
        target = torch.zeros(len(self.attributes))
        for label in labels:
            if label in self._index:
                target[self._index[label]] = 1.0
        return target

    def labels(self, index: int) -> torch.Tensor:
        """The multi-hot label vector of one sample, without reading its image."""
        return self._target(self._record(index)[1]["labels"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, record = self._record(index)
        image_path = self.root / record["image_path"]
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot read image {image_path} (listed in {path})")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if self.size is not None and image.shape[:2] != (self.size, self.size):
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "attributes": self._target(record["labels"]),
        }
