"""The one place where a utility dataset and a privacy dataset are paired into a benchmark.

Every setting of the paper is such a pair — HMDB51 clips + VISPR images, OK-VQA + VISPR, ... —
so a benchmark DataModule only says *which* datasets to use; batching, the combined training
loader and the evaluation loaders live here. A training batch is::

    {"utility": {"clip": uint8 B×T×H×W×3, "action": int64 B, ...},
     "privacy": {"image": uint8 B×H×W×3, "attributes": float B×A}}
"""

from __future__ import annotations

from abc import abstractmethod

import lightning as L
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset


class PrivacyUtilityDataModule(L.LightningDataModule):
    """Base class: subclasses provide the datasets, this class the loaders."""

    def __init__(
        self,
        batch_size: int = 16,
        privacy_batch_size: int = 32,
        num_workers: int = 0,
    ):
        super().__init__()
        self.batch_size = batch_size
        self.privacy_batch_size = privacy_batch_size
        self.num_workers = num_workers

    @abstractmethod
    def utility_dataset(self, stage: str) -> Dataset:
        """Utility samples (clips with actions) for ``"train"`` or ``"test"``."""

    @abstractmethod
    def privacy_dataset(self, stage: str) -> Dataset:
        """Privacy samples (images with attribute labels) for ``"train"`` or ``"test"``."""

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """Utility class names, in label order (what the black box's answers are scored against)."""

    @property
    @abstractmethod
    def attribute_names(self) -> list[str]:
        """Privacy attribute ids, in label order."""

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> CombinedLoader:
        return CombinedLoader(
            {
                "utility": self._loader(self.utility_dataset("train"), self.batch_size, True),
                "privacy": self._loader(
                    self.privacy_dataset("train"), self.privacy_batch_size, True
                ),
            },
            mode="max_size_cycle",
        )

    def _evaluation_loader(self) -> CombinedLoader:
        return CombinedLoader(
            {
                "utility": self._loader(self.utility_dataset("test"), self.batch_size, False),
                "privacy": self._loader(
                    self.privacy_dataset("test"), self.privacy_batch_size, False
                ),
            },
            mode="max_size",
        )

    def val_dataloader(self) -> CombinedLoader:
        return self._evaluation_loader()

    def test_dataloader(self) -> CombinedLoader:
        return self._evaluation_loader()
