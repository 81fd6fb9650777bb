"""HMDB51 as distributed: ``<root>/hmdb51/<action>/<video>.avi`` and the official splits.

Layout (``<root>`` = ``data/hmdb51`` by default; folder names configurable)::

    hmdb51/<action>/<video>.avi                                 51 action folders, 6,766 videos
    testTrainMulti_7030_splits/<action>_test_split{1,2,3}.txt   lines "<video>.avi <id>"

Split ids: 1 = train, 2 = test, 0 = unused (70 train and 30 test videos per action and split:
3,570 / 1,530). Class indices follow the sorted action folder names; class names for the
retrieval scoring are the folder names as words (``brush_hair`` → ``brush hair``).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Literal

from privacy_lit.data.base import CheckReport, DatasetModule, check_videos, readable
from privacy_lit.data.video import ClipSpec, Temporal, VideoClips

SPLIT_IDS = {"train": 1, "test": 2}
HMDB51_ACTIONS: tuple[str, ...] = (
    "brush_hair", "cartwheel", "catch", "chew", "clap", "climb", "climb_stairs", "dive",
    "draw_sword", "dribble", "drink", "eat", "fall_floor", "fencing", "flic_flac", "golf",
    "handstand", "hit", "hug", "jump", "kick", "kick_ball", "kiss", "laugh", "pick", "pour",
    "pullup", "punch", "push", "pushup", "ride_bike", "ride_horse", "run", "shake_hands",
    "shoot_ball", "shoot_bow", "shoot_gun", "sit", "situp", "smile", "smoke", "somersault",
    "stand", "swing_baseball", "sword", "sword_exercise", "talk", "throw", "turn", "walk", "wave",
)  # fmt: skip
"""The 51 action folders of the official release (sorted)."""
OFFICIAL_SPLIT_SIZES = {"train": 3_570, "test": 1_530}
OFFICIAL_VIDEOS = 6_766


def read_split_file(path: Path) -> list[tuple[str, int]]:
    """``(video, id)`` pairs of one ``<action>_test_split<n>.txt``; errors name file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"missing split file {path}")
    pairs = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in {"0", "1", "2"}:
            raise ValueError(f"{path}:{line_no}: expected '<video>.avi <0|1|2>', got {line!r}")
        pairs.append((parts[0], int(parts[1])))
    return pairs


class HMDB51Clips(VideoClips):
    """Video clips with action labels for one official split (1, 2 or 3) and stage.

    ``random_start`` makes training clips (random start, random crop); ``seed`` fixes them per
    sample (``None``: new ones every epoch). ``exclude`` drops videos by file name (e.g. the
    PA-HMDB51 test videos from training).
    """

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
        seed: int | None = 0,
        crop_scale: tuple[float, float] = (1.0, 1.0),
        hflip: bool = False,
        test_temporal: Temporal = "center",
        exclude: Collection[str] = (),
    ):
        self.video_root, self.split_root = Path(video_root), Path(split_root)
        if split not in (1, 2, 3):
            raise ValueError(f"HMDB51 has splits 1, 2 and 3, got {split}")
        if not self.video_root.is_dir():
            raise FileNotFoundError(f"missing HMDB51 video folder {self.video_root}")
        self.classes = sorted(p.name for p in self.video_root.iterdir() if p.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"no action folders under {self.video_root}")
        excluded = set(exclude)
        samples = []
        for label, action in enumerate(self.classes):
            split_file = self.split_root / f"{action}_test_split{split}.txt"
            if not split_file.is_file():
                raise FileNotFoundError(f"missing split file {split_file} for action {action!r}")
            for video, split_id in read_split_file(split_file):
                if split_id == SPLIT_IDS[stage] and video not in excluded:
                    samples.append((self.video_root / action / video, label))
        if not samples:
            raise ValueError(f"split {split} has no {stage} videos under {self.split_root}")
        spec = ClipSpec(num_frames, stride, size, tuple(crop_scale), hflip, test_temporal)
        super().__init__(samples, spec, train=random_start, seed=seed)


class HMDB51(DatasetModule):
    """HMDB51 action clips, one of the three official splits.

    Args:
        root: the HMDB51 folder (relative to ``data_dir``), holding ``videos`` and ``splits``.
        split: 1, 2 or 3.
        num_frames, stride, size: 16 frames, skip 2, 112×112 as the prior works.
        train_crop_scale, train_hflip: training augmentation (SPAct: U(0.6, 1) crops, flips).
        test_temporal: evaluation clip placement, ``center`` or ``uniform``.
        exclude_pa_hmdb51: a PA-HMDB51 ``PrivacyAttributes`` folder (relative to ``data_dir``)
            whose videos are left out of training: PA-HMDB51 is the test set of HMDB51-VISPR and
            its videos are HMDB51 videos.
        seed: fixed training clips per sample (None: new ones every epoch).
    """

    roles = ("utility",)

    def __init__(
        self,
        root: str = "hmdb51",
        split: int = 1,
        videos: str = "hmdb51",
        splits: str = "testTrainMulti_7030_splits",
        num_frames: int = 16,
        stride: int = 2,
        size: int | None = 112,
        train_crop_scale: tuple[float, float] = (0.6, 1.0),
        train_hflip: bool = True,
        test_temporal: Temporal = "center",
        exclude_pa_hmdb51: str | None = None,
        seed: int | None = None,
        data_dir: str = "data",
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        super().__init__(root, data_dir, batch_size, num_workers)
        if split not in (1, 2, 3):
            raise ValueError(f"HMDB51 has splits 1, 2 and 3, got {split}")
        self.split, self.videos, self.splits = split, videos, splits
        self.num_frames, self.stride, self.size = num_frames, stride, size
        self.train_crop_scale, self.train_hflip = tuple(train_crop_scale), train_hflip
        self.test_temporal, self.exclude_pa_hmdb51, self.seed = (
            test_temporal,
            exclude_pa_hmdb51,
            seed,
        )

    @property
    def video_root(self) -> Path:
        return self.root / self.videos

    @property
    def split_root(self) -> Path:
        return self.root / self.splits

    def _excluded(self) -> set[str]:
        if self.exclude_pa_hmdb51 is None:
            return set()
        from privacy_lit.data.pa_hmdb51 import read_pa_folder

        return {a.video for a in read_pa_folder(self.path(self.exclude_pa_hmdb51))}

    def clips(self, stage: str) -> HMDB51Clips:
        train = stage == "train"
        return HMDB51Clips(
            self.video_root,
            self.split_root,
            self.split,
            "train" if train else "test",
            self.num_frames,
            self.stride,
            self.size,
            random_start=train,
            seed=self.seed,
            crop_scale=self.train_crop_scale if train else (1.0, 1.0),
            hflip=self.train_hflip and train,
            test_temporal=self.test_temporal,
            exclude=self._excluded() if train else (),
        )

    def utility_dataset(self, stage: str) -> HMDB51Clips:
        return self._cached("utility", stage, lambda: self.clips(stage))

    @property
    def classes(self) -> list[str]:
        if not self.video_root.is_dir():
            raise FileNotFoundError(f"missing HMDB51 video folder {self.video_root}")
        return sorted(p.name for p in self.video_root.iterdir() if p.is_dir())

    @property
    def class_names(self) -> list[str]:
        return [readable(c) for c in self.classes]

    def check(self, report: CheckReport, decode: int | None = None) -> None:
        check_hmdb51(self.video_root, self.split_root, report, decode)
        if self.exclude_pa_hmdb51 is None or report.failed:
            return
        try:
            listed = len(HMDB51Clips(self.video_root, self.split_root, self.split, "train"))
            used = len(self.utility_dataset("train"))
        except (OSError, ValueError) as err:
            report.error_from(err)
            return
        report.note(
            f"split {self.split} train: {listed} listed, {listed - used} PA-HMDB51 test "
            f"videos left out (exclude_pa_hmdb51), {used} used for training"
        )


def check_hmdb51(
    video_root: Path, split_root: Path, report: CheckReport, decode: int | None
) -> dict[str, Path]:
    """Validate HMDB51 videos and all three splits; returns the videos found by file name."""
    if not video_root.is_dir():
        report.error(video_root, "missing HMDB51 video folder")
        return {}
    actions = sorted(p.name for p in video_root.iterdir() if p.is_dir())
    missing = sorted(set(HMDB51_ACTIONS) - set(actions))
    if missing:
        report.warn(video_root, f"{len(missing)} official actions missing: {missing[:10]}")
    extra = sorted(set(actions) - set(HMDB51_ACTIONS))
    if extra:
        report.warn(video_root, f"folders that are not HMDB51 actions: {extra[:10]}")
    videos = {p.name: p for a in actions for p in (video_root / a).iterdir() if p.is_file()}
    report.count(str(video_root), len(videos), OFFICIAL_VIDEOS)
    if not split_root.is_dir():
        report.error(split_root, "missing split folder (testTrainMulti_7030_splits)")
        return videos
    used: set[Path] = set()
    missing: dict[Path, list[Path]] = {}  # each missing video reported once, with its lists
    for split in (1, 2, 3):
        counts = {"train": 0, "test": 0}
        for action in actions:
            path = split_root / f"{action}_test_split{split}.txt"
            try:
                pairs = read_split_file(path)
            except (OSError, ValueError) as err:
                report.error_from(err)
                continue
            for video, split_id in pairs:
                if split_id == 0:
                    continue
                counts["train" if split_id == 1 else "test"] += 1
                file = video_root / action / video
                if not file.is_file():
                    missing.setdefault(file, []).append(path)
                else:
                    used.add(file)
        for stage, count in counts.items():
            report.count(f"{split_root} split {split} {stage}", count, OFFICIAL_SPLIT_SIZES[stage])
    for file, lists in missing.items():
        more = f" and {len(lists) - 1} more" if len(lists) > 1 else ""
        report.error(file, f"missing video (listed in {lists[0]}{more})")
    check_videos(sorted(used), report, decode)
    return videos
