"""UCF101 as distributed: ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and ``ucfTrainTestlist``.

Layout (``<root>`` = ``data/ucf101`` by default)::

    UCF-101/<Class>/v_<Class>_gXX_cYY.avi                  101 classes, 13,320 videos
    ucfTrainTestlist/classInd.txt                          "1 ApplyEyeMakeup" ... "101 YoYo"
    ucfTrainTestlist/trainlist0{1,2,3}.txt                 "ApplyEyeMakeup/v_..._g08_c01.avi 1"
    ucfTrainTestlist/testlist0{1,2,3}.txt                  "ApplyEyeMakeup/v_..._g01_c01.avi"

``classInd.txt`` is 1-indexed; labels here are 0-indexed (``id - 1``). A train list's label must
agree with ``classInd.txt`` for the video's folder; test lists carry none and take it from there.
Class names for the retrieval scoring are the class names as words (``apply eye makeup``).
"""

from __future__ import annotations

from pathlib import Path

from privacy_lit.data.base import CheckReport, DatasetModule, check_videos, readable
from privacy_lit.data.video import ClipSpec, Temporal, VideoClips

OFFICIAL_CLASSES = 101
OFFICIAL_VIDEOS = 13_320
OFFICIAL_SPLIT_SIZES = {
    1: {"train": 9_537, "test": 3_783},
    2: {"train": 9_586, "test": 3_734},
    3: {"train": 9_624, "test": 3_696},
}


def read_class_index(path: Path) -> list[str]:
    """Class names in label order from ``classInd.txt`` (ids must run 1, 2, ..., n)."""
    if not path.is_file():
        raise FileNotFoundError(f"missing UCF101 class index {path}")
    classes = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{line_no}: expected '<id> <ClassName>', got {line!r}")
        if int(parts[0]) != len(classes) + 1:
            raise ValueError(
                f"{path}:{line_no}: class ids must run 1, 2, ... (1-indexed), got {parts[0]} "
                f"where {len(classes) + 1} was expected"
            )
        classes.append(parts[1])
    if not classes:
        raise ValueError(f"UCF101 class index {path} is empty")
    return classes


def read_list(path: Path, classes: list[str]) -> list[tuple[str, int]]:
    """``(relative video path, 0-indexed label)`` of a train or test list."""
    if not path.is_file():
        raise FileNotFoundError(f"missing UCF101 split list {path}")
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        where = f"{path}:{line_no}"
        if len(parts) not in (1, 2) or "/" not in parts[0]:
            raise ValueError(f"{where}: expected '<Class>/<video>.avi [<id>]', got {line!r}")
        folder = parts[0].split("/")[0]
        if folder not in index:
            raise ValueError(f"{where}: class {folder!r} is not in classInd.txt")
        label = index[folder]
        if len(parts) == 2 and (not parts[1].isdigit() or int(parts[1]) != label + 1):
            raise ValueError(
                f"{where}: label {parts[1]} disagrees with classInd.txt ({folder} = {label + 1})"
            )
        out.append((parts[0], label))
    return out


class UCF101Clips(VideoClips):
    """Clips with 0-indexed action labels of one official split (1, 2 or 3) and stage."""

    def __init__(
        self,
        video_root: Path,
        list_root: Path,
        split: int,
        stage: str,
        spec: ClipSpec,
        train: bool = False,
        seed: int | None = None,
    ):
        if split not in (1, 2, 3):
            raise ValueError(f"UCF101 has splits 1, 2 and 3, got {split}")
        self.classes = read_class_index(list_root / "classInd.txt")
        name = f"{'trainlist' if stage == 'train' else 'testlist'}{split:02d}.txt"
        entries = read_list(list_root / name, self.classes)
        if not entries:
            raise ValueError(f"UCF101 split list {list_root / name} is empty")
        super().__init__([(video_root / p, y) for p, y in entries], spec, train, seed)


class UCF101(DatasetModule):
    """UCF101 action clips, one of the three official splits (arguments as HMDB51's)."""

    roles = ("utility",)

    def __init__(
        self,
        root: str = "ucf101",
        split: int = 1,
        videos: str = "UCF-101",
        lists: str = "ucfTrainTestlist",
        num_frames: int = 16,
        stride: int = 2,
        size: int | None = 112,
        train_crop_scale: tuple[float, float] = (0.6, 1.0),
        train_hflip: bool = True,
        test_temporal: Temporal = "center",
        seed: int | None = None,
        data_dir: str = "data",
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        super().__init__(root, data_dir, batch_size, num_workers)
        if split not in (1, 2, 3):
            raise ValueError(f"UCF101 has splits 1, 2 and 3, got {split}")
        self.split, self.videos, self.lists, self.seed = split, videos, lists, seed
        self.train_spec = ClipSpec(num_frames, stride, size, tuple(train_crop_scale), train_hflip)
        self.test_spec = ClipSpec(num_frames, stride, size, test_temporal=test_temporal)

    @property
    def video_root(self) -> Path:
        return self.root / self.videos

    @property
    def list_root(self) -> Path:
        return self.root / self.lists

    def utility_dataset(self, stage: str) -> UCF101Clips:
        train = stage == "train"
        spec = self.train_spec if train else self.test_spec
        return self._cached(
            "utility",
            stage,
            lambda: UCF101Clips(
                self.video_root, self.list_root, self.split, stage, spec, train, self.seed
            ),
        )

    @property
    def classes(self) -> list[str]:
        return read_class_index(self.list_root / "classInd.txt")

    @property
    def class_names(self) -> list[str]:
        return [readable(c) for c in self.classes]

    def check(self, report: CheckReport, decode: int | None = None) -> None:
        check_ucf101(self.video_root, self.list_root, report, decode)


def check_ucf101(
    video_root: Path, list_root: Path, report: CheckReport, decode: int | None
) -> None:
    """Validate the UCF101 videos, ``classInd.txt`` and the three splits."""
    index = list_root / "classInd.txt"
    try:
        classes = read_class_index(index)
    except (OSError, ValueError) as err:
        report.error_from(err)
        return
    if len(classes) != OFFICIAL_CLASSES:
        report.warn(index, f"{len(classes)} classes, the official release has {OFFICIAL_CLASSES}")
    if not video_root.is_dir():
        report.error(video_root, "missing UCF101 video folder (UCF-101/)")
        return
    videos = [p for c in classes if (video_root / c).is_dir() for p in (video_root / c).iterdir()]
    report.count(str(video_root), len(videos), OFFICIAL_VIDEOS)
    for c in classes:
        if not (video_root / c).is_dir():
            report.error(video_root / c, "missing class folder (listed in classInd.txt)")
    used: set[Path] = set()
    for split in (1, 2, 3):
        for stage, prefix in (("train", "trainlist"), ("test", "testlist")):
            path = list_root / f"{prefix}{split:02d}.txt"
            try:
                entries = read_list(path, classes)
            except (OSError, ValueError) as err:
                report.error_from(err)
                continue
            report.count(str(path), len(entries), OFFICIAL_SPLIT_SIZES[split][stage])
            for rel, _ in entries:
                file = video_root / rel
                if not file.is_file():
                    report.error(file, f"missing video (listed in {path})")
                else:
                    used.add(file)
    check_videos(sorted(used), report, decode)
