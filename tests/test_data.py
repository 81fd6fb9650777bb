"""The embedded benchmark writes the real layouts, deterministically, and the loaders read them."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest
import torch

from privacy_lit.data.hmdb51 import HMDB51Clips
from privacy_lit.data.synthetic import ACTIONS, SyntheticConfig, generate
from privacy_lit.data.vispr import VISPR7, VISPRImages
from tests.conftest import TINY_IMAGES, TINY_VIDEOS


def test_hmdb51_layout(tiny_root: Path) -> None:
    for action in ACTIONS:
        lines = (
            (tiny_root / "testTrainMulti_7030_splits" / f"{action}_test_split1.txt")
            .read_text()
            .split("\n")
        )
        ids = [line.split()[1] for line in lines if line]
        assert ids.count("1") == TINY_VIDEOS["train"] and ids.count("2") == TINY_VIDEOS["test"]
        assert ids.count("0") == TINY_VIDEOS["unused"]
        for line in lines:
            if line:
                assert (tiny_root / "hmdb51" / action / line.split()[0]).is_file()


def test_vispr_layout(tiny_root: Path) -> None:
    vispr = tiny_root / "vispr"
    header, *rows = (vispr / "attributes.tsv").read_text().strip().split("\n")
    assert header.split("\t") == ["idx", "attribute_id", "group", "description"]
    assert [r.split("\t")[1] for r in rows] == list(VISPR7)
    for split, count in TINY_IMAGES.items():
        listing = (vispr / f"{split}.txt").read_text().split()
        assert len(listing) == count
        record = json.loads((vispr / listing[0]).read_text())
        assert set(record) == {"image_path", "labels"}
        assert record["image_path"].startswith(f"images/{split}/")
        assert (vispr / record["image_path"]).is_file()
        assert set(record["labels"]) <= set(VISPR7)


def test_generation_is_deterministic(tiny_root: Path, tmp_path: Path) -> None:
    again = generate(
        tmp_path, SyntheticConfig(seed=0, videos_per_action=TINY_VIDEOS, images=TINY_IMAGES)
    )
    for rel in ["videos.json", "vispr/train2017.txt", "hmdb51/wave/wave_0000.avi",
                "vispr/images/test2017/2017_30000003.jpg"]:  # fmt: skip
        assert filecmp.cmp(tiny_root / rel, again / rel, shallow=False), rel


def test_loaders_read_uint8_pixels_and_labels(tiny_root: Path) -> None:
    clips = HMDB51Clips(tiny_root / "hmdb51", tiny_root / "testTrainMulti_7030_splits", 1, "test",
                        num_frames=8, stride=2, size=64)  # fmt: skip
    assert len(clips) == len(ACTIONS) * TINY_VIDEOS["test"]
    item = clips[0]
    assert item["clip"].dtype == torch.uint8 and item["clip"].shape == (8, 64, 64, 3)
    assert clips.classes == sorted(ACTIONS)
    images = VISPRImages(tiny_root / "vispr", "test2017")
    sample = images[0]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (64, 64, 3)
    assert sample["attributes"].shape == (7,)


def test_attributes_vary_independently_of_the_action(tiny_root: Path) -> None:
    labels = json.loads((tiny_root / "videos.json").read_text())
    assert len({tuple(v) for v in labels.values()}) > len(ACTIONS)


def test_bad_data_names_the_file(tiny_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "hmdb51" / "wave"
    bad.mkdir(parents=True)
    (bad / "wave_0000.avi").write_bytes(b"not a video")
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "wave_test_split1.txt").write_text("wave_0000.avi 1\n")
    clips = HMDB51Clips(tmp_path / "hmdb51", splits, 1, "train", 8, 2, 64)
    with pytest.raises(OSError, match="wave_0000.avi"):
        clips[0]
    (splits / "wave_test_split1.txt").write_text("wave_0000.avi train\n")
    with pytest.raises(ValueError, match="wave_test_split1.txt:1"):
        HMDB51Clips(tmp_path / "hmdb51", splits, 1, "train", 8, 2, 64)
    with pytest.raises(FileNotFoundError, match="missing VISPR split list"):
        VISPRImages(tmp_path, "train2017")
