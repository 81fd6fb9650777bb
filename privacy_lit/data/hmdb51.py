"""HMDB51 as distributed: ``<root>/<action>/<video>.avi`` and ``testTrainMulti_7030_splits``.

Split files ``<action>_test_split{1,2,3}.txt`` hold lines ``<video>.avi <id>`` with
1 = train, 2 = test, 0 = unused. Class indices follow the sorted action folder names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from privacy_lit.data.video import read_clip

SPLIT_IDS = {"train": 1, "test": 2}


class HMDB51Clips(Dataset):
    """Video clips with action labels for one official split (1, 2 or 3) and stage."""

    def __init__(
        self,
        video_root: str | Path,
        split_root: str | Path,
        split: int = 1,
        stage: Literal["train", "test"] = "train",
        num_frames: int = 8,
        stride: int = 2,
        size: int | None = 112,
        random_start: bool = False,
        seed: int = 0,
    ):
        self.video_root, self.split_root = Path(video_root), Path(split_root)
        if split not in (1, 2, 3):
            raise ValueError(f"HMDB51 has splits 1, 2 and 3, got {split}")
        self.num_frames, self.stride, self.size = num_frames, stride, size
        self.random_start, self.seed = random_start, seed
        self.classes = sorted(p.name for p in self.video_root.iterdir() if p.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"no action folders under {self.video_root}")
        self.samples: list[tuple[Path, int]] = []
        for label, action in enumerate(self.classes):
            split_file = self.split_root / f"{action}_test_split{split}.txt"
            if not split_file.is_file():
                raise FileNotFoundError(f"missing split file {split_file} for action {action!r}")
            for line_no, line in enumerate(split_file.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 2 or parts[1] not in {"0", "1", "2"}:
                    raise ValueError(
                        f"{split_file}:{line_no}: expected '<video>.avi <0|1|2>', got {line!r}"
                    )
                if int(parts[1]) == SPLIT_IDS[stage]:
                    self.samples.append((self.video_root / action / parts[0], label))
        if not self.samples:
            raise ValueError(f"split {split} has no {stage} videos under {self.split_root}")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, label = self.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.random_start else None
        clip = read_clip(path, self.num_frames, self.stride, self.size, rng)
        return {"clip": clip, "action": torch.tensor(label), "index": torch.tensor(index)}
