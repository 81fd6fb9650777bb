"""The one place where a utility dataset and a privacy dataset are paired into a benchmark.

Every setting of the paper is such a pair, and :class:`JointDataModule` is the pairing: which
dataset module gives the utility side and which the privacy side, for training and for testing.

========================  ==================  ==============  =================  ===============
setting (config)          utility (train)     privacy train   utility test       privacy test
========================  ==================  ==============  =================  ===============
HMDB51-VISPR (hmdb)       HMDB51 split 1      VISPR, 6 attr.  PA-HMDB51          PA-HMDB51
UCF101-VISPR (ucf101)     UCF101 split 1      VISPR, 7 attr.  UCF101 test        VISPR test
OK-VQA + VISPR (okvqa)    OK-VQA four+seven   VISPR, 7 attr.  OK-VQA val2014     OK-VQA labels
UCF101 → PA-HMDB51,       UCF101 split 1      VISPR1          PA-HMDB51          VISPR2 test
VISPR1 → VISPR2 (novel)                                                          (reviewer: VISPR2)
VP-HMDB51 / VP-UCF101     HMDB51 / UCF101     the same videos' video-level labels
========================  ==================  ==============  =================  ===============

The fresh reviewer of the evaluation protocol trains on :meth:`reviewer_dataset` ``("train")``
(anonymized): the training privacy data unless ``reviewer_train`` names another module (the novel
protocol trains it on VISPR2 labels). A batch is::

    {"utility": {"clip": uint8 B×T×H×W×3, "action": int64 B, ...}        # action settings
               | {"image": uint8 B×H×W×3, "question": [str], "answers": [[str] × 10], ...},  # VQA
     "privacy": {"image": uint8 B×H×W×3, "attributes": float B×A}}
"""

from __future__ import annotations

from abc import abstractmethod

import lightning as L
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from privacy_lit.data.base import DatasetModule, SkipUnreadable, collate
from privacy_lit.data.resumable import ResumableLoader


class PrivacyUtilityDataModule(L.LightningDataModule):
    """Base class: subclasses provide the datasets, this class the loaders.

    Stages: ``"train"`` is what the anonymizer trains on; ``"val"`` / ``"test"`` the evaluation.
    Test-time names (:attr:`test_class_names`, :attr:`test_attribute_names`) default to the
    training ones; they differ only in the novel-class / novel-attribute protocol.

    ``skip_unreadable``: a training sample that cannot be read in full (a truncated video, an
    image that does not decode) is left out of its batch, logged by name and counted
    (``data/skipped``) instead of stopping the run with an error naming it (the default).
    """

    def __init__(
        self,
        batch_size: int = 16,
        privacy_batch_size: int = 32,
        num_workers: int = 0,
        skip_unreadable: bool = False,
    ):
        super().__init__()
        self.batch_size = batch_size
        self.privacy_batch_size = privacy_batch_size
        self.num_workers = num_workers
        self.skip_unreadable = skip_unreadable

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

    def reviewer_dataset(self, stage: str) -> Dataset:
        """What the evaluation's fresh reviewer trains (``"train"``) and is tested on."""
        return self.privacy_dataset(stage)

    @property
    def test_class_names(self) -> list[str]:
        """Class names of the test utility labels (UCF101 → PA-HMDB51: HMDB51's)."""
        return self.class_names

    @property
    def test_attribute_names(self) -> list[str]:
        """Attributes of the test privacy labels (VISPR1 → VISPR2: VISPR2's)."""
        return self.attribute_names

    @property
    def utility_task(self) -> str:
        """``"action"`` (clips, retrieval top-1) or ``"vqa"`` (images, VQA accuracy)."""
        return "action"

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        if shuffle and self.skip_unreadable:  # training only: evaluation must see every sample
            dataset = SkipUnreadable(dataset)
        settings = {
            "batch_size": batch_size,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "drop_last": shuffle,
            "collate_fn": collate,
        }
        if shuffle:
            # a checkpoint taken mid-epoch puts it back where it was (the same order, the same
            # next batch): a resumed run asks the black box what the uninterrupted one would
            return ResumableLoader(dataset, **settings)
        return DataLoader(dataset, shuffle=shuffle, **settings)

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


class JointDataModule(PrivacyUtilityDataModule):
    """A paper setting: utility samples from one dataset module, privacy samples from another.

    Args:
        utility: the training utility data (HMDB51, UCF101, OK-VQA, VP-*).
        privacy: the training privacy data (VISPR); None: ``utility``'s own labels (VP-*).
        test_utility: the evaluation utility data (None: ``utility``'s test split).
        test_privacy: the evaluation privacy data (None: ``privacy``'s test split).
        reviewer_train: the data the fresh evaluation reviewer trains on (None: ``privacy``);
            its attributes must be ``test_privacy``'s.
        root: folder holding every dataset folder; the components' relative paths resolve
            against it (``--data.init_args.root /datasets``). None keeps each one's ``data_dir``.
        batch_size, privacy_batch_size, num_workers: the loaders'.
        skip_unreadable: see :class:`PrivacyUtilityDataModule`.
    """

    def __init__(
        self,
        utility: DatasetModule,
        privacy: DatasetModule | None = None,
        test_utility: DatasetModule | None = None,
        test_privacy: DatasetModule | None = None,
        reviewer_train: DatasetModule | None = None,
        root: str | None = None,
        batch_size: int = 16,
        privacy_batch_size: int = 32,
        num_workers: int = 0,
        skip_unreadable: bool = False,
    ):
        super().__init__(batch_size, privacy_batch_size, num_workers, skip_unreadable)
        self.utility = utility
        self.privacy = privacy if privacy is not None else utility
        self.test_utility = test_utility if test_utility is not None else utility
        self.test_privacy = test_privacy if test_privacy is not None else self.privacy
        self.reviewer_train = reviewer_train if reviewer_train is not None else self.privacy
        self.root = root
        if root is not None:
            self.set_data_dir(root)

    @property
    def components(self) -> list[DatasetModule]:
        """The distinct dataset modules of this setting (what ``data check`` validates)."""
        out: list[DatasetModule] = []
        for m in (
            self.utility,
            self.privacy,
            self.test_utility,
            self.test_privacy,
            self.reviewer_train,
        ):
            if all(m is not o for o in out):
                out.append(m)
        return out

    def set_data_dir(self, root: str) -> None:
        self.root = root
        for module in self.components:
            module.set_data_dir(root)

    def setup(self, stage: str) -> None:
        self.validate()

    def validate(self) -> None:
        """The label spaces must fit together; raise before any training starts if not."""
        for module, role in (
            (self.utility, "utility"),
            (self.test_utility, "utility"),
            (self.privacy, "privacy"),
            (self.test_privacy, "privacy"),
            (self.reviewer_train, "privacy"),
        ):
            if role not in module.roles:
                raise ValueError(f"{module.name} has no {role} samples")
        if self.utility.task != self.test_utility.task:
            raise ValueError(
                f"training utility task {self.utility.task!r} ({self.utility.name}) differs from "
                f"the test task {self.test_utility.task!r} ({self.test_utility.name})"
            )
        if self.reviewer_train.attribute_names != self.test_privacy.attribute_names:
            raise ValueError(
                f"the evaluation reviewer would train on {self.reviewer_train.attribute_names} "
                f"({self.reviewer_train.name}) but be tested on "
                f"{self.test_privacy.attribute_names} ({self.test_privacy.name}); set "
                "reviewer_train to a module with the test attributes"
            )
        novel = self.reviewer_train is not self.privacy
        if not novel and self.privacy.attribute_names != self.test_privacy.attribute_names:
            raise ValueError(
                f"training attributes {self.privacy.attribute_names} ({self.privacy.name}) differ "
                f"from test attributes {self.test_privacy.attribute_names} "
                f"({self.test_privacy.name})"
            )

    # ----------------------------------------------------------------- the pairing
    def utility_dataset(self, stage: str) -> Dataset:
        source = self.utility if stage == "train" else self.test_utility
        return source.utility_dataset(stage)

    def privacy_dataset(self, stage: str) -> Dataset:
        source = self.privacy if stage == "train" else self.test_privacy
        return source.privacy_dataset(stage)

    def reviewer_dataset(self, stage: str) -> Dataset:
        source = self.reviewer_train if stage == "train" else self.test_privacy
        return source.privacy_dataset(stage)

    @property
    def class_names(self) -> list[str]:
        return self.utility.class_names

    @property
    def test_class_names(self) -> list[str]:
        return self.test_utility.class_names

    @property
    def attribute_names(self) -> list[str]:
        return self.privacy.attribute_names

    @property
    def test_attribute_names(self) -> list[str]:
        return self.test_privacy.attribute_names

    @property
    def utility_task(self) -> str:
        return self.utility.task
