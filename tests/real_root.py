"""A dataset root built from the real annotation files plus tiny stand-in media, for the tests.

The public annotation and split files of every benchmark live in ``../shared/real_annotations``
(beside the repository; ``PRIVACY_LIT_REAL_ANNOTATIONS`` points elsewhere). They are never copied
into the project: :func:`build_real_root` copies them into a temporary folder, in the layouts of
``data/README.md``, and writes stand-ins for what is not public there — every listed video (a
tiny MJPEG AVI; PA-HMDB51's videos get as many frames as their annotation covers, so clip labels
fall where the frame ranges say), every VISPR image and per-image annotation (made-up labels that
cover every attribute), the OK-VQA question and answer files (one question per labelled test
image) and the COCO images. Identical stand-ins are hard links to one file, so 20,000 videos cost
seconds. Build one by hand to run ``data check`` or ``fit`` on it::

    python -m tests.real_root /tmp/real_root
    python -m privacy_lit data check --config conf/hmdb.yaml --root /tmp/real_root
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from privacy_lit.data.pa_hmdb51 import read_pa_folder
from privacy_lit.data.vispr import VISPR7, attribute_table
from tests.fixtures import write_image, write_video

REPO = Path(__file__).resolve().parents[1]
REAL = Path(
    os.environ.get("PRIVACY_LIT_REAL_ANNOTATIONS", REPO.parent / "shared" / "real_annotations")
)
STANDIN_FRAMES = 40  # enough for a 16-frame clip with stride 2 (31 frames)
NEEDS = (
    f"needs the real annotation files in {REAL} (../shared/real_annotations beside the "
    "repository: the public split lists and labels of every benchmark, see its README.md; "
    "PRIVACY_LIT_REAL_ANNOTATIONS points at another copy)"
)


def require_real() -> Path:
    """The real annotation folder, or skip the calling test saying what it needs."""
    if not (REAL / "SOURCES.md").is_file():
        pytest.skip(NEEDS)
    return REAL


class Linker:
    """Writes each distinct stand-in once (under ``store``) and hard-links it wherever needed."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.made: dict[str, Path] = {}

    def place(self, key: str, dest: Path, make: Callable[[Path], object]) -> None:
        if key not in self.made:
            self.made[key] = self.store / key
            make(self.made[key])
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.made[key], dest)
        except OSError:  # another file system: copy
            shutil.copyfile(self.made[key], dest)

    def video(self, dest: Path, frames: int = STANDIN_FRAMES) -> None:
        self.place(f"video_{frames}.avi", dest, lambda p: write_video(p, frames, 32, 24))

    def image(self, dest: Path) -> None:
        self.place("image.jpg", dest, lambda p: write_image(p, 40, 30))


def _hmdb51(real: Path, root: Path, linker: Linker) -> None:
    splits = root / "hmdb51" / "testTrainMulti_7030_splits"
    shutil.copytree(real / "hmdb51" / "testTrainMulti_7030_splits", splits)
    # PA-HMDB51's videos as long as their annotation (the last annotated frame + 1)
    lengths = {
        a.video: 1 + max(end for ranges in a.ranges.values() for _, end, _ in ranges)
        for a in read_pa_folder(real / "pa_hmdb51" / "PrivacyAttributes")
    }
    for split_file in sorted(splits.glob("*_test_split1.txt")):
        action = split_file.name.rsplit("_test_split", 1)[0]
        for line in split_file.read_text().splitlines():
            if line.strip():
                video = line.split()[0]
                dest = root / "hmdb51" / "hmdb51" / action / video
                linker.video(dest, lengths.get(video, STANDIN_FRAMES))
    shutil.copytree(real / "pa_hmdb51", root / "pa_hmdb51")


def _ucf101(real: Path, root: Path, linker: Linker) -> None:
    lists = root / "ucf101" / "ucfTrainTestlist"
    shutil.copytree(real / "ucf101" / "ucfTrainTestlist", lists)
    videos = set()
    for name in ("trainlist01.txt", "testlist01.txt"):  # each video is in one of the two
        videos |= {line.split()[0] for line in (lists / name).read_text().splitlines() if line}
    for video in sorted(videos):
        linker.video(root / "ucf101" / "UCF-101" / video)


def _vispr(real: Path, root: Path, linker: Linker) -> None:
    vispr = root / "vispr"
    vispr.mkdir(parents=True)
    for name in ("attributes.tsv", "train2017.txt", "val2017.txt", "test2017.txt"):
        shutil.copyfile(real / "vispr" / name, vispr / name)
    pool = list(VISPR7) + list(attribute_table("vispr2", tsv=vispr / "attributes.tsv").names)
    for split in ("train2017", "val2017", "test2017"):
        for k, entry in enumerate((vispr / f"{split}.txt").read_text().split()):
            image_path = f"images/{split}/{Path(entry).stem}.jpg"
            labels = [pool[(k + 5 * j) % len(pool)] for j in range(3)]
            annotation = vispr / entry
            annotation.parent.mkdir(parents=True, exist_ok=True)
            annotation.write_text(json.dumps({"image_path": image_path, "labels": labels}))
            linker.image(vispr / image_path)


def _okvqa(real: Path, root: Path, linker: Linker) -> None:
    okvqa, coco = root / "okvqa", root / "coco"
    okvqa.mkdir(parents=True)
    shutil.copyfile(real / "okvqa" / "privacy_labels.json", okvqa / "privacy_labels.json")
    labelled = sorted({e["image"] for e in json.loads((okvqa / "privacy_labels.json").read_text())})
    images = {
        "val2014": [int(name.rsplit("_", 1)[1].split(".")[0]) for name in labelled],
        "train2014": list(range(1, 9)),
    }
    for split, image_ids in images.items():
        questions, annotations = [], []
        for k, image_id in enumerate(image_ids):
            linker.image(coco / split / f"COCO_{split}_{image_id:012d}.jpg")
            qid = image_id * 10 + 1
            questions.append({"image_id": image_id, "question": f"Who {k}?", "question_id": qid})
            answers = [
                {"answer": "a player", "raw_answer": "a player", "answer_confidence": "yes",
                 "answer_id": j + 1}
                for j in range(10)
            ]  # fmt: skip
            qtype = ("four", "seven")[k % 2]
            annotations.append(
                {"image_id": image_id, "question_id": qid, "question_type": qtype,
                 "answer_type": "other", "answers": answers}
            )  # fmt: skip
        (okvqa / f"OpenEnded_mscoco_{split}_questions.json").write_text(
            json.dumps({"questions": questions})
        )
        (okvqa / f"mscoco_{split}_annotations.json").write_text(
            json.dumps({"annotations": annotations})
        )


def build_real_root(root: Path, real: Path = REAL) -> Path:
    """Every benchmark under ``root`` with the folder names of ``conf/*.yaml``: the real
    annotation files (copied) and stand-in media (see the module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    linker = Linker(root / "_standins")
    linker.store.mkdir()
    _hmdb51(real, root, linker)
    _ucf101(real, root, linker)
    _vispr(real, root, linker)
    _okvqa(real, root, linker)
    for name in ("vp_hmdb51", "vp_ucf101"):
        shutil.copytree(real / name, root / name)
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (REAL / "SOURCES.md").is_file():
        sys.exit(f"usage: python -m tests.real_root DEST ({NEEDS})")
    print(build_real_root(Path(sys.argv[1])))
