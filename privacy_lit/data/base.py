"""The shared base of the per-dataset modules, the batch collation and the ``data check`` report.

A :class:`DatasetModule` is one benchmark dataset in its distributed layout. It may offer
*utility* samples (clips with actions, or images with questions) and/or *privacy* samples (images
with multi-hot attribute labels), each for ``"train"``, ``"val"`` and ``"test"``. A paper setting
pairs two of them in :class:`privacy_lit.data.joint.JointDataModule`; a module also works on its
own as a LightningDataModule over its main role (e.g. to train a reviewer on VISPR).

Paths: ``root`` (and any other path argument) is relative to ``data_dir`` (``data/`` unless the
joint module's ``root`` says otherwise) unless it is absolute.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

Role = Literal["utility", "privacy"]
STAGES = ("train", "val", "test")

log = logging.getLogger(__name__)


def collate(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Tensors are stacked; anything else (questions, answer lists, names) stays a list.

    Samples that :class:`SkipUnreadable` replaced by None are left out and counted in
    ``batch["skipped"]``."""
    present = [s for s in samples if s is not None]
    if not present:
        raise OSError(
            f"all {len(samples)} samples of a batch are unreadable (each is named in a warning "
            "above): check the dataset with `python -m privacy_lit data check`"
        )
    batch: dict[str, Any] = {}
    for key in present[0]:
        values = [s[key] for s in present]
        batch[key] = default_collate(values) if isinstance(values[0], torch.Tensor) else values
    if len(present) < len(samples):
        batch["skipped"] = len(samples) - len(present)
    return batch


class SkipUnreadable(Dataset):
    """``dataset`` with its unreadable samples (a video that cannot be read in full, an image
    that does not decode: an ``OSError`` naming the file) as None, each one logged as a warning;
    :func:`collate` leaves them out of the batch and counts them. Without it such a sample is an
    error that stops the run, which is the default: a skip must be asked for."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            return self.dataset[index]
        except OSError as error:
            log.warning("skipping sample %d: %s", index, error)
            return None


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return stage


def readable(name: str) -> str:
    """A class folder name as words: ``brush_hair`` → ``brush hair``,
    ``ApplyEyeMakeup`` → ``apply eye makeup`` (what the retrieval scoring embeds)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(spaced.replace("_", " ").lower().split())


@dataclass
class CheckReport:
    """Findings of ``data check``: errors make the folder unusable, warnings only deserve a look
    (e.g. a subset whose counts differ from the official ones)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repeated: int = 0  # errors left out because an earlier report already named them

    def drop_repeated(self, seen: set[str]) -> None:
        """Leave out errors already in ``seen`` (another dataset module's report found the same
        bad file), so each is printed once; ``seen`` grows by this report's errors."""
        fresh = [e for e in self.errors if e not in seen]
        self.repeated += len(self.errors) - len(fresh)
        self.errors = fresh
        seen.update(fresh)

    def error(self, where: str | Path, what: str) -> None:
        self.errors.append(f"{where}: {what}")

    def warn(self, where: str | Path, what: str) -> None:
        self.warnings.append(f"{where}: {what}")

    def error_from(self, err: Exception) -> None:
        """A reader's exception: its message already names the file (and line or sample), so it
        is recorded as it is, never prefixed with the path a second time."""
        self.errors.append(str(err))

    def warn_from(self, warning: Warning | str) -> None:
        """A reader's warning, whose message already names the file."""
        self.warnings.append(str(warning))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def count(self, where: str, found: int, official: int | None) -> None:
        """Record a split size; empty is an error, a mismatch with the official size a warning."""
        if found == 0:
            self.error(where, "empty: no samples")
        elif official is not None and found != official:
            self.warn(where, f"{found} samples, the official release has {official}")
        else:
            self.note(f"{where}: {found} samples" + (" (official)" if official else ""))

    @property
    def failed(self) -> bool:
        return bool(self.errors) or self.repeated > 0

    def render(self, max_lines: int = 200) -> str:
        lines = [f"  ok    {n}" for n in self.notes]
        lines += [f"  WARN  {w}" for w in self.warnings[:max_lines]]
        if len(self.warnings) > max_lines:
            lines.append(f"  WARN  ... and {len(self.warnings) - max_lines} more warnings")
        lines += [f"  ERROR {e}" for e in self.errors[:max_lines]]
        if len(self.errors) > max_lines:
            lines.append(f"  ERROR ... and {len(self.errors) - max_lines} more errors")
        verdict = "BROKEN" if self.failed else "OK"
        repeated = f" (and {self.repeated} reported above)" if self.repeated else ""
        lines.append(
            f"{verdict}: {len(self.errors)} error(s){repeated}, {len(self.warnings)} warning(s)"
        )
        return "\n".join(lines)


class DatasetModule(L.LightningDataModule):
    """One dataset in its distributed layout (see the module docstring).

    Subclasses implement :meth:`utility_dataset` and/or :meth:`privacy_dataset`, the names of
    their labels, and :meth:`check`. Datasets are built on first use and cached per stage.
    """

    roles: ClassVar[tuple[Role, ...]] = ()
    task: ClassVar[str] = "action"  # the utility task: "action" (clips) or "vqa" (questions)

    def __init__(
        self,
        root: str,
        data_dir: str = "data",
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        super().__init__()
        self.root_arg, self.data_dir = root, data_dir
        self.batch_size, self.num_workers = batch_size, num_workers
        self._datasets: dict[tuple[str, str], Dataset] = {}

    # ---------------------------------------------------------------- paths
    def path(self, value: str | Path) -> Path:
        value = Path(value)
        return value if value.is_absolute() else Path(self.data_dir) / value

    @property
    def root(self) -> Path:
        return self.path(self.root_arg)

    def set_data_dir(self, data_dir: str | Path) -> None:
        """Resolve relative paths against ``data_dir`` from now on (drops cached datasets)."""
        self.data_dir = str(data_dir)
        self._datasets.clear()

    @property
    def name(self) -> str:
        return f"{type(self).__name__} ({self.root})"

    # ---------------------------------------------------------------- datasets
    def _cached(self, role: Role, stage: str, build) -> Dataset:
        key = (role, check_stage(stage))
        if key not in self._datasets:
            self._datasets[key] = build()
        return self._datasets[key]

    def utility_dataset(self, stage: str) -> Dataset:
        """Utility samples: ``{"clip", "action", ...}`` or ``{"image", "question", ...}``."""
        raise NotImplementedError(f"{self.name} has no utility samples (it is a privacy dataset)")

    def privacy_dataset(self, stage: str) -> Dataset:
        """Privacy samples for ``stage``: ``{"image": uint8 H×W×3, "attributes": float A}``."""
        raise NotImplementedError(f"{self.name} has no privacy labels")

    @property
    def class_names(self) -> list[str]:
        """Utility class names in label order (empty for open-ended VQA)."""
        return []

    @property
    def attribute_names(self) -> list[str]:
        """Privacy attribute names in label order (empty without privacy labels)."""
        return []

    def check(self, report: CheckReport, decode: int | None = None) -> None:
        """Validate the folder into ``report``; decode at most ``decode`` files (None = all)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- loaders (standalone use)
    def _main_dataset(self, stage: str) -> Dataset:
        role = self.roles[0]
        return self.utility_dataset(stage) if role == "utility" else self.privacy_dataset(stage)

    def _loader(self, stage: str) -> DataLoader:
        return DataLoader(
            self._main_dataset(stage),
            batch_size=self.batch_size,
            shuffle=stage == "train",
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def decode_budget(decode: int | None, done: int) -> bool:
    """Whether another file may be decoded under a ``decode`` limit (None = no limit)."""
    return decode is None or done < decode


def spread(items: Sequence[Any], n: int | None) -> list[Any]:
    """``n`` of ``items`` evenly spaced from the first to the last (all of them for None): a
    sample of a folder reaches its end too, where a copy that stopped early breaks files."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        return []
    if n == 1:
        return [items[0]]
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def check_videos(files: Sequence[Path], report: CheckReport, decode: int | None) -> None:
    """Decode-check videos (``decode`` of them spread over the list; None: all), reporting each
    bad file."""
    from tqdm import tqdm

    from privacy_lit.data.video import check_video

    todo = spread(list(files), decode)
    for file in tqdm(
        todo, desc="decoding videos", unit="video", leave=False, disable=len(todo) < 50
    ):
        problem = check_video(file)
        if problem:
            report.error(file, problem)
    if len(todo) < len(files):
        report.note(f"decoded {len(todo)} of {len(files)} videos (--sample)")
