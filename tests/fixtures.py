"""Tiny datasets in the real benchmarks' on-disk layouts (DATA_FORMATS.md), for the tests.

``build_all(root)`` writes every dataset under ``root`` with the folder names the configs in
``conf/`` expect (``hmdb51/``, ``pa_hmdb51/``, ``ucf101/``, ``vispr/``, ``okvqa/``, ``coco/``,
``vp_hmdb51/``, ``vp_ucf101/``), so ``--data.init_args.root <root>`` points a config at them.

Videos are short MJPEG AVIs written with OpenCV; frame ``i`` is filled with grey level
``GREY_STEP * i`` so a test can tell which frames a clip took from its pixels.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np

from privacy_lit.data.vispr import VISPR7
from privacy_lit.data.vp import VP_COLUMNS

GREY_STEP = 8
FRAMES = 24
HMDB_ACTIONS = ("brush_hair", "catch", "wave")
UCF_CLASSES = ("ApplyEyeMakeup", "Basketball", "YoYo")
# split ids of the 4 videos of every HMDB51 action, per split (1 train, 2 test, 0 unused)
HMDB_SPLIT_IDS = {1: (1, 1, 2, 0), 2: (2, 1, 1, 0), 3: (1, 0, 2, 2)}

ATTRIBUTE_ROWS = (
    ("a0_safe", "safe", "Safe"),
    ("a1_age_approx", "personal", "Age Group"),
    ("a2_weight_approx", "personal", "Weight Group"),
    ("a3_height_approx", "personal", "Height Group"),
    ("a4_gender", "personal", "Gender"),
    ("a5_eye_color", "personal", "Eye Color"),
    ("a6_hair_color", "personal", "Hair Color"),
    ("a9_face_complete", "personal", "Face Complete"),
    ("a10_face_partial", "personal", "Face Partial"),
    ("a11_tattoo", "personal", "Tattoo"),
    ("a12_semi_nudity", "nudity", "Semi-nudity"),
    ("a16_race", "personal", "Race"),
    ("a17_color", "personal", "Skin Color"),
    ("a59_sports", "interests", "Sports"),
    ("a64_rel_personal", "relationship", "Personal Relationship"),
    ("a65_rel_social", "relationship", "Social Relationship"),
    ("a73_landmark", "location", "Landmark"),
)
VISPR2_IDS = (
    "a11_tattoo",
    "a16_race",
    "a59_sports",
    "a2_weight_approx",
    "a1_age_approx",
    "a6_hair_color",
    "a73_landmark",
)
VISPR_SPLITS = {"train2017": 6, "val2017": 2, "test2017": 4}


def write_video(
    path: Path, frames: int = FRAMES, width: int = 80, height: int = 60, fourcc: str = "MJPG"
) -> Path:
    """A video whose frame ``i`` is uniformly grey ``GREY_STEP * i`` (a bright bar marks the
    left edge, so flips and crops are visible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    for i in range(frames):
        frame = np.full((height, width, 3), GREY_STEP * i % 256, np.uint8)
        frame[:, :4] = 255
        writer.write(frame)
    writer.release()
    return path


def write_image(path: Path, width: int = 48, height: int = 36, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((height, width, 3), value, np.uint8)
    cv2.imwrite(str(path), image)
    return path


def make_hmdb51(root: Path) -> Path:
    """``root/hmdb51/<action>/<action>_<k>.avi`` and the three splits (:data:`HMDB_SPLIT_IDS`)."""
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True, exist_ok=True)
    for action in HMDB_ACTIONS:
        for k in range(4):
            write_video(root / "hmdb51" / action / f"{action}_{k}.avi")
        for split, ids in HMDB_SPLIT_IDS.items():
            lines = [f"{action}_{k}.avi {ids[k]} " for k in range(4)]  # trailing space: as shipped
            (splits / f"{action}_test_split{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_pa_hmdb51(root: Path) -> Path:
    """``root/PrivacyAttributes/<action>.json`` for two videos of each action.

    ``brush_hair_0``: a face in frames 0–9 only (value 2), skin colour everywhere (value 1),
    nudity value 0 (absent), relationship in frames 20–23."""
    folder = root / "PrivacyAttributes"
    folder.mkdir(parents=True, exist_ok=True)
    for action in HMDB_ACTIONS:
        record = {
            f"{action}_0.avi": {
                "face": [[0, 9, 2], [10, 23, 0]],
                "skin_color": [[0, 23, 1]],
                "nudity": [[0, 23, 0]],
                "relationship": [[20, 23, 1]],
                "review": True,
                "note": "",
            },
            f"{action}_3.avi": {"gender": [[0, 23, 1]], "review": False, "note": "checked"},
        }
        (folder / f"{action}.json").write_text(json.dumps(record))
    return root


def make_ucf101(root: Path) -> Path:
    """``UCF-101/<Class>/v_<Class>_gXX_c01.avi`` (3 groups) and ``ucfTrainTestlist``."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text(
        "".join(f"{i} {c}\r\n" for i, c in enumerate(UCF_CLASSES, 1))  # CRLF as shipped
    )
    for c in UCF_CLASSES:
        for g in (1, 2, 3):
            write_video(root / "UCF-101" / c / f"v_{c}_g{g:02d}_c01.avi")
    for split in (1, 2, 3):
        test_group = split  # group `split` is the test group of that split
        train, test = [], []
        for i, c in enumerate(UCF_CLASSES, 1):
            for g in (1, 2, 3):
                rel = f"{c}/v_{c}_g{g:02d}_c01.avi"
                (test if g == test_group else train).append(
                    rel if g == test_group else f"{rel} {i}"
                )
        (lists / f"trainlist{split:02d}.txt").write_text("\r\n".join(train) + "\r\n")
        (lists / f"testlist{split:02d}.txt").write_text("\r\n".join(test) + "\r\n")
    return root


def vispr_labels(split: str, k: int) -> list[str]:
    """Deterministic labels covering every attribute of VISPR1 and VISPR2 in every split."""
    pool = list(VISPR7) + list(VISPR2_IDS) + ["a0_safe", "a5_eye_color"]
    return [pool[(k + j * 5) % len(pool)] for j in range(3)]


def make_vispr(root: Path) -> Path:
    rows = ["idx\tattribute_id\tgroup\tdescription"]
    rows += [f"{i}\t{a}\t{g}\t{d}" for i, (a, g, d) in enumerate(ATTRIBUTE_ROWS)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "attributes.tsv").write_text("\n".join(rows) + "\n")
    for s, (split, count) in enumerate(VISPR_SPLITS.items()):
        listing = []
        for k in range(count):
            image_id = f"2017_{s + 1}{k:07d}"
            image_path = f"images/{split}/{image_id}.jpg"
            write_image(root / image_path, 48 + 8 * (k % 2), 36, 40 + 10 * k)
            annotation = f"annotations/{split}/{image_id}.json"
            (root / annotation).parent.mkdir(parents=True, exist_ok=True)
            (root / annotation).write_text(
                json.dumps({"image_path": image_path, "labels": vispr_labels(split, k)})
            )
            listing.append(annotation)
        (root / f"{split}.txt").write_text("\n".join(listing) + "\n")
    return root


OKVQA_TYPES = ("four", "seven", "one", "four", "eight", "seven")


def make_okvqa(root: Path, coco: Path) -> Path:
    """Six questions per split (types :data:`OKVQA_TYPES`), COCO images, privacy labels."""
    root.mkdir(parents=True, exist_ok=True)
    for s, split in enumerate(("train2014", "val2014")):
        questions, annotations = [], []
        for k, qtype in enumerate(OKVQA_TYPES):
            image_id = 1000 * (s + 1) + k
            qid = image_id * 10 + 5
            write_image(coco / split / f"COCO_{split}_{image_id:012d}.jpg", 64, 40, 30 * k)
            questions.append(
                {"image_id": image_id, "question": f"What sport {k}?", "question_id": qid}
            )
            answers = [
                {
                    "answer": f"answer{j % 3}",
                    "raw_answer": f"Answer{j % 3}",
                    "answer_confidence": "yes",
                    "answer_id": j + 1,
                }
                for j in range(10)
            ]
            annotations.append(
                {
                    "image_id": image_id,
                    "question_id": qid,
                    "question_type": qtype,
                    "answer_type": "other",
                    "answers": answers,
                }
            )
        (root / f"OpenEnded_mscoco_{split}_questions.json").write_text(
            json.dumps({"questions": questions})
        )
        (root / f"mscoco_{split}_annotations.json").write_text(
            json.dumps({"annotations": annotations})
        )
    labels = [
        {"image": "COCO_val2014_000000002000.jpg", "id": 1, "choice": "a17_color"},
        {
            "image": "COCO_val2014_000000002001.jpg",
            "id": 2,
            "choice": {"choices": ["a4_gender", "a9_face_complete"]},
        },
        {"image": "COCO_val2014_000000002005.jpg", "id": 3},
    ]
    (root / "privacy_labels.json").write_text(json.dumps(labels))
    return root


VP_SETS = (["face", "gender"], ["skin_color"], [], ["nudity", "relationship", "face"])


def make_vp_labels(path: Path, videos: list[str]) -> Path:
    """Video-level labels in the STPrivacy release's form: a pickle of ``{"<action>/<video>.mp4":
    int64 array (1, 5)}`` over :data:`VP_COLUMNS`, for ``videos`` (relative ``.avi`` paths),
    with the attribute sets :data:`VP_SETS` in turn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = {
        str(Path(v).with_suffix(".mp4")): np.array(
            [[int(c in VP_SETS[i % len(VP_SETS)]) for c in VP_COLUMNS]], np.int64
        )
        for i, v in enumerate(videos)
    }
    path.write_bytes(pickle.dumps(labels))
    return path


def build_all(root: Path) -> Path:
    """Every dataset under ``root`` with the folder names of ``conf/*.yaml``."""
    make_hmdb51(root / "hmdb51")
    make_pa_hmdb51(root / "pa_hmdb51")
    make_ucf101(root / "ucf101")
    make_vispr(root / "vispr")
    make_okvqa(root / "okvqa", root / "coco")
    hmdb = [f"{a}/{a}_{k}.avi" for a in HMDB_ACTIONS for k in range(4)]
    make_vp_labels(root / "vp_hmdb51" / "hmdb51_privacy_attribute_label.pickle", hmdb)
    ucf = [f"{c}/v_{c}_g{g:02d}_c01.avi" for c in UCF_CLASSES for g in (1, 2, 3)]
    make_vp_labels(root / "vp_ucf101" / "ucf101_privacy_attribute_label.pickle", ucf)
    return root
