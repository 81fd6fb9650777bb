"""The real benchmarks' loaders on tiny fixtures in their distributed layouts (tests/fixtures.py):
splits, class indexing, attribute mapping, the compositions of every config, bad data and
``data check``."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from privacy_lit.data.base import collate, readable
from privacy_lit.data.check import load_data_module
from privacy_lit.data.check import main as check_main
from privacy_lit.data.hmdb51 import HMDB51, HMDB51Clips
from privacy_lit.data.okvqa import OKVQA
from privacy_lit.data.pa_hmdb51 import PA_HMDB51_TO_VISPR, PAHMDB51, read_pa_file
from privacy_lit.data.ucf101 import UCF101
from privacy_lit.data.video import ClipSpec, VideoClips, check_video, frame_indices, read_frames
from privacy_lit.data.vispr import (
    SETTINGS,
    VISPR,
    VISPR7,
    AttributeRow,
    VISPRImages,
    attribute_table,
    resolve_attributes,
)
from privacy_lit.data.vp import VP_COLUMNS, VPHMDB51, read_vp_labels
from privacy_lit.data.vp import main as vp_main
from tests import fixtures
from tests.fixtures import GREY_STEP, HMDB_ACTIONS, HMDB_SPLIT_IDS, UCF_CLASSES, VISPR2_IDS

CONFIGS = ["hmdb", "ucf101", "okvqa", "novel", "vp_hmdb", "vp_ucf101"]
SMALL = {"num_frames": 4, "stride": 2, "size": 32}


@pytest.fixture
def root(layouts_root: Path) -> Path:
    """Every dataset in its real layout (built once per session, shared with other modules)."""
    return layouts_root


# --------------------------------------------------------------------------- video reading
def test_frame_indices() -> None:
    assert frame_indices(100, 16, 2, "center") == list(range(34, 65, 2))
    rng = np.random.default_rng(0)
    starts = {frame_indices(100, 16, 2, "random", rng)[0] for _ in range(50)}
    assert len(starts) > 10 and min(starts) >= 0 and max(starts) <= 100 - 31
    assert frame_indices(24, 8, 2, "uniform") == [1, 4, 7, 10, 13, 16, 19, 22]
    assert frame_indices(5, 4, 2, "center") == [0, 2, 4, 4]  # short video: last frame repeats


def test_clips_are_uint8_and_take_the_frames_they_say(root: Path) -> None:
    video = root / "hmdb51" / "hmdb51" / "catch" / "catch_1.avi"
    clip, indices, total = read_frames(video, ClipSpec(4, 2, 32))
    assert total == fixtures.FRAMES and indices == [8, 10, 12, 14]
    assert clip.dtype == torch.uint8 and clip.shape == (4, 32, 32, 3)
    # the centre crop drops the bright bar on the left edge: every pixel is the frame's grey
    grey = clip.float().mean(dim=(1, 2, 3))
    assert torch.allclose(grey, torch.tensor([GREY_STEP * i for i in indices]).float(), atol=3)
    train, _, _ = read_frames(
        video, ClipSpec(16, 2, 112, (0.6, 1.0), True), np.random.default_rng(1)
    )
    assert train.shape == (16, 112, 112, 3) and train.dtype == torch.uint8


def test_video_datasets_pickle_into_workers(root: Path) -> None:
    dataset = HMDB51(data_dir=str(root), **SMALL).utility_dataset("train")
    blob = pickle.dumps(dataset)  # paths only: no decord reader travels to the workers
    assert b"decord" not in blob
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["clip"].shape == (2, 4, 32, 32, 3) and batch["clip"].dtype == torch.uint8


# --------------------------------------------------------------------------- HMDB51, UCF101
@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb51_official_split_ids(root: Path, split: int) -> None:
    module = HMDB51(split=split, data_dir=str(root), **SMALL)
    for stage, wanted in (("train", 1), ("test", 2)):
        dataset = module.utility_dataset(stage)
        names = {p.name for p, _ in dataset.samples}
        expected = {
            f"{a}_{k}.avi"
            for a in HMDB_ACTIONS
            for k in range(4)
            if HMDB_SPLIT_IDS[split][k] == wanted
        }
        assert names == expected  # ids 0 (unused) never appear
        for path, label in dataset.samples:
            assert module.classes[label] == path.parent.name
    assert module.classes == sorted(HMDB_ACTIONS)
    assert module.class_names == ["brush hair", "catch", "wave"]


def test_hmdb51_training_leaves_pa_hmdb51_videos_out(root: Path) -> None:
    module = HMDB51(exclude_pa_hmdb51="pa_hmdb51/PrivacyAttributes", data_dir=str(root), **SMALL)
    names = {p.name for p, _ in module.utility_dataset("train").samples}
    assert names == {f"{a}_1.avi" for a in HMDB_ACTIONS}  # _0 is annotated in PA-HMDB51
    assert len(module.utility_dataset("test")) == len(HMDB_ACTIONS)  # test untouched


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_one_indexed_class_ind(root: Path, split: int) -> None:
    module = UCF101(split=split, data_dir=str(root), **SMALL)
    assert module.classes == list(UCF_CLASSES)
    assert module.class_names == ["apply eye makeup", "basketball", "yo yo"]
    train, test = module.utility_dataset("train"), module.utility_dataset("test")
    for path, label in train.samples + test.samples:
        assert label == UCF_CLASSES.index(path.parent.name)  # "1 ApplyEyeMakeup" -> 0
    assert {p.name[-10:-8] for p, _ in test.samples} == {f"{split:02d}"}
    assert len(train) == 6 and len(test) == 3
    item = test[0]
    assert item["clip"].shape == (4, 32, 32, 3) and int(item["action"]) == 0


def test_ucf101_label_disagreeing_with_class_ind_is_named(root: Path, tmp_path: Path) -> None:
    shutil.copytree(root / "ucf101" / "ucfTrainTestlist", tmp_path / "lists")
    trainlist = tmp_path / "lists" / "trainlist01.txt"
    lines = trainlist.read_text().splitlines()
    trainlist.write_text("\n".join([lines[0].rsplit(" ", 1)[0] + " 3", *lines[1:]]))
    module = UCF101(root=str(root / "ucf101"), lists=str(tmp_path / "lists"), **SMALL)
    with pytest.raises(ValueError, match=r"trainlist01.txt:1: label 3 disagrees"):
        module.utility_dataset("train")
    (tmp_path / "lists" / "classInd.txt").write_text("0 ApplyEyeMakeup\n1 Basketball\n")
    with pytest.raises(ValueError, match=r"classInd.txt:1: .*1-indexed"):
        _ = module.classes


# --------------------------------------------------------------------------- VISPR settings
def test_vispr_label_vectors_per_setting(root: Path) -> None:
    labels = fixtures.vispr_labels("train2017", 0)
    for setting, n in (("ucf101", 7), ("hmdb51", 6), ("vita", 5), ("vispr1", 7), ("vispr2", 7)):
        module = VISPR(setting=setting, data_dir=str(root), size=32)
        dataset = module.privacy_dataset("test")
        assert len(module.attribute_names) == n
        for k in range(len(dataset)):
            ids = set(fixtures.vispr_labels("test2017", k))
            expected = [float(any(i in ids for i in m)) for m in module.table.members]
            assert dataset.labels(k).tolist() == expected
        sample = module.privacy_dataset("train")[0]
        assert sample["image"].shape == (32, 32, 3) and sample["image"].dtype == torch.uint8
    assert SETTINGS["hmdb51"].names == VISPR7[:6]
    vita = SETTINGS["vita"]
    assert vita.vector(["a10_face_partial", "a65_rel_social"]).tolist() == [0, 1, 0, 0, 1]
    assert labels  # the fixture labels are never empty


def test_novel_attributes_are_looked_up_and_disjoint(root: Path) -> None:
    vispr2 = attribute_table("vispr2", tsv=root / "vispr" / "attributes.tsv")
    assert vispr2.names == VISPR2_IDS
    assert not set(vispr2.names) & set(attribute_table("vispr1").names)
    # names match id parts when descriptions say something else; ambiguity is an error
    rows = [
        AttributeRow(0, "a2_weight_approx", "p", "Approximate weight"),
        AttributeRow(1, "a6_hair_color", "p", ""),
        AttributeRow(2, "a5_eye_color", "p", ""),
    ]
    where = Path("attributes.tsv")
    assert resolve_attributes(["weight group", "hair color"], rows, where) == [
        "a2_weight_approx",
        "a6_hair_color",
    ]
    with pytest.raises(ValueError, match="'color' must match exactly one row"):
        resolve_attributes(["color"], rows, where)


# --------------------------------------------------------------------------- PA-HMDB51
def test_pa_hmdb51_frame_ranges_become_clip_labels(root: Path) -> None:
    module = PAHMDB51(data_dir=str(root), **SMALL)
    dataset = module.utility_dataset("test")
    index = [p.name for p, _ in dataset.samples].index("brush_hair_0.avi")
    item = dataset[index]  # centre clip: frames 8, 10, 12, 14
    got = dict(zip(module.attribute_names, item["attributes"].tolist(), strict=True))
    # face (frames 0-9) -> a10 through the table; skin everywhere; nudity value 0; relationship
    # only in frames 20-23, which the clip does not take
    assert got == {
        "a4_gender": 0,
        "a9_face_complete": 0,
        "a10_face_partial": 1,
        "a17_color": 1,
        "a12_semi_nudity": 0,
        "a64_rel_personal": 0,
    }
    assert module.classes[int(item["action"])] == "brush_hair"
    annotation = read_pa_file(root / "pa_hmdb51" / "PrivacyAttributes" / "brush_hair.json")[0]
    assert annotation.vispr_ids([20, 22], PA_HMDB51_TO_VISPR) == {"a17_color", "a64_rel_personal"}
    video = PAHMDB51(label_mode="video", data_dir=str(root), **SMALL).utility_dataset("test")
    assert video[index]["attributes"][5] == 1  # relationship somewhere in the video
    valued = PAHMDB51(attribute_map={"face": {2: "a9_face_complete"}}, data_dir=str(root), **SMALL)
    assert valued.utility_dataset("test")[index]["attributes"][1:3].tolist() == [1, 0]
    frames = PAHMDB51(frames_per_video=2, data_dir=str(root), **SMALL).privacy_dataset("test")
    first, second = frames[2 * index], frames[2 * index + 1]  # frames 6 and 18
    assert first["image"].shape == (32, 32, 3)
    assert first["attributes"][2] == 1 and second["attributes"][2] == 0
    with pytest.raises(ValueError, match="PA-HMDB51 is a test set"):
        module.utility_dataset("train")


# --------------------------------------------------------------------------- OK-VQA
def test_okvqa_question_types_and_ten_answers(root: Path) -> None:
    module = OKVQA(data_dir=str(root), size=32)
    train = module.utility_dataset("train")
    assert [q.question_type for q in train.questions] == ["four", "seven", "four", "seven"]
    batch = collate([train[0], train[1]])
    assert batch["image"].shape == (2, 32, 32, 3) and batch["image"].dtype == torch.uint8
    assert batch["question"] == ["What sport 0?", "What sport 1?"]
    assert len(batch["answers"]) == 2 and all(len(a) == 10 for a in batch["answers"])
    assert batch["answers"][0][:3] == ["answer0", "answer1", "answer2"]
    assert len(OKVQA(question_types=["one"], data_dir=str(root)).utility_dataset("test")) == 1
    privacy = module.privacy_dataset("test")
    vectors = {p.name: privacy[i]["attributes"].tolist() for i, p in enumerate(privacy.paths)}
    assert vectors["COCO_val2014_000000002000.jpg"] == [0, 0, 0, 1, 0, 0, 0]  # "a17_color"
    assert vectors["COCO_val2014_000000002001.jpg"] == [1, 1, 0, 0, 0, 0, 0]  # {"choices"}
    assert vectors["COCO_val2014_000000002005.jpg"] == [0] * 7  # no "choice": none
    with pytest.raises(ValueError, match="privacy labels for its test images only"):
        module.privacy_dataset("train")


# --------------------------------------------------------------------------- VP-*
def test_video_level_labels_pickle_json_and_csv(root: Path, tmp_path: Path) -> None:
    released = root / "vp_hmdb51" / "hmdb51_privacy_attribute_label.pickle"
    labels = read_vp_labels(released)  # .mp4 keys as released, matched by stem
    assert labels["brush_hair_0"] == {"face", "gender"} and labels["brush_hair_2"] == set()
    as_json = tmp_path / "labels.json"
    assert vp_main([str(released), str(as_json)]) == 0
    assert json.loads(as_json.read_text())["brush_hair/brush_hair_0.mp4"] == ["face", "gender"]
    assert read_vp_labels(as_json) == labels
    wide = tmp_path / "wide.csv"
    wide.write_text(
        "video,face,skin_color,gender,nudity,relationship\nbrush_hair_0.avi,1,0,1,0,0\n"
    )
    listed = tmp_path / "listed.csv"
    listed.write_text("video,attributes\nbrush_hair/brush_hair_0.avi,face;gender\n")
    assert read_vp_labels(wide) == read_vp_labels(listed) == {"brush_hair_0": {"face", "gender"}}
    module = VPHMDB51(data_dir=str(root), **SMALL)
    assert module.attribute_names == list(VP_COLUMNS)
    privacy = module.privacy_dataset("test")
    for i, video in enumerate(privacy.videos):
        expected = [float(a in labels[video.stem]) for a in VP_COLUMNS]
        assert privacy[i]["attributes"].tolist() == expected
    clips = VPHMDB51(privacy_view="clip", data_dir=str(root), **SMALL).privacy_dataset("train")
    assert clips[0]["clip"].shape == (4, 32, 32, 3) and clips[0]["attributes"].shape == (5,)
    # another column order reads the same pickle into other names
    swapped = read_vp_labels(released, columns=["face", "skin_color", "gender", "nudity",
                                                "relationship"])  # fmt: skip
    assert swapped["brush_hair_1"] == {"face"} and labels["brush_hair_1"] == {"skin_color"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"brush_hair_0.avi": ["face", "tattoo"]}))
    with pytest.raises(ValueError, match=r"bad.json: video 'brush_hair_0.avi'.*\['tattoo'\]"):
        read_vp_labels(bad)
    shape = tmp_path / "shape.pickle"
    shape.write_bytes(pickle.dumps({"wave/wave_0.mp4": np.zeros((1, 4), np.int64)}))
    with pytest.raises(ValueError, match=r"shape.pickle: entry 'wave/wave_0.mp4': expected an "
                                         r"integer array of 5 values 0/1"):  # fmt: skip
        read_vp_labels(shape)
    twice = tmp_path / "twice.pickle"
    one = np.ones((1, 5), np.int64)
    twice.write_bytes(pickle.dumps({"wave/wave_0.mp4": one, "other/wave_0.mp4": one}))
    with pytest.raises(ValueError, match="a second entry for the video 'wave_0'"):
        read_vp_labels(twice)


class _RunsCode:
    """What a malicious pickle holds: unpickling it would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps({"wave/wave_0.mp4": _RunsCode(marker)}))
    refused = r"evil.pickle: not a VP label pickle .*refused global (posix|os|nt)\.system"
    with pytest.raises(ValueError, match=refused):
        read_vp_labels(evil)
    assert not marker.exists()
    objects = tmp_path / "objects.pickle"
    objects.write_bytes(pickle.dumps({"wave/wave_0.mp4": np.array([[0, 1, 0, 1, 0]], object)}))
    with pytest.raises(ValueError, match="refused object dtype"):
        read_vp_labels(objects)


# --------------------------------------------------------------------------- every setting
@pytest.mark.parametrize("name", CONFIGS)
def test_configs_compose_every_setting(root: Path, name: str) -> None:
    config = yaml.safe_load(Path(f"conf/{name}.yaml").read_text())
    module = load_data_module(f"conf/{name}.yaml")
    assert module.root == "data"  # the default: data/<name>/
    module.set_data_dir(str(root))
    module.validate()
    module.batch_size, module.privacy_batch_size = 2, 2
    assert len(module.test_attribute_names) == config["model"]["num_attributes"]
    batch, _, _ = next(iter(module.train_dataloader()))
    utility, privacy = batch["utility"], batch["privacy"]
    if module.utility_task == "vqa":
        assert utility["image"].shape == (2, 224, 224, 3) and len(utility["answers"][0]) == 10
    else:
        assert utility["clip"].shape == (2, 16, 112, 112, 3) and utility["action"].shape == (2,)
    assert privacy["image"].dtype == torch.uint8 and privacy["image"].shape[0] == 2
    assert privacy["attributes"].shape == (2, len(module.attribute_names))
    test = module.privacy_dataset("test")[0]
    assert test["attributes"].shape == (len(module.test_attribute_names),)
    reviewer = module.reviewer_dataset("train")[0]
    assert reviewer["attributes"].shape == (len(module.test_attribute_names),)


def test_novel_protocol_composition(root: Path) -> None:
    module = load_data_module("conf/novel.yaml")
    module.set_data_dir(str(root))
    assert module.attribute_names == list(VISPR7)
    assert module.test_attribute_names == list(VISPR2_IDS)
    assert module.class_names == [readable(c) for c in UCF_CLASSES]
    assert module.test_class_names == [readable(a) for a in sorted(HMDB_ACTIONS)]
    test_clip = module.utility_dataset("test")[0]
    assert test_clip["clip"].shape == (16, 112, 112, 3)


def test_lightning_cli_reads_a_setting_config(root: Path) -> None:
    from lightning.pytorch.cli import LightningCLI

    from privacy_lit.data.joint import JointDataModule, PrivacyUtilityDataModule
    from privacy_lit.system import PrivacySystem

    cli = LightningCLI(
        PrivacySystem,
        PrivacyUtilityDataModule,
        subclass_mode_data=True,
        run=False,
        args=[
            "--config",
            "conf/hmdb.yaml",
            "--data.init_args.root",
            str(root),
            "--trainer.logger",
            "false",
        ],
    )
    assert isinstance(cli.datamodule, JointDataModule)
    assert cli.datamodule.utility.root == root / "hmdb51"
    assert cli.datamodule.attribute_names == list(VISPR7[:6])


# --------------------------------------------------------------------------- bad data
def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _cut_after_frames(path: Path, frames: int) -> None:
    """Cut an AVI cleanly before its frame ``frames`` (a download that stopped early)."""
    data = path.read_bytes()
    chunks = [i for i in range(len(data)) if data.startswith(b"00dc", i)]
    path.write_bytes(data[: chunks[frames]])


def test_bad_data_gets_an_error_naming_the_file(root: Path, tmp_path: Path) -> None:
    video = fixtures.write_video(tmp_path / "hmdb51" / "wave" / "wave_0.avi")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "wave_test_split1.txt").write_text("wave_0.avi 1\n")
    _truncate(video, 0.4)
    clips = HMDB51Clips(tmp_path / "hmdb51", tmp_path / "splits", 1, "train", 4, 2, 32)
    with pytest.raises(OSError, match="cannot read video .*wave_0.avi"):
        clips[0]
    with pytest.raises(ValueError, match="split 1 has no test videos"):  # empty split
        HMDB51Clips(tmp_path / "hmdb51", tmp_path / "splits", 1, "test", 4, 2, 32)

    vispr = tmp_path / "vispr"
    shutil.copytree(root / "vispr", vispr)
    images = VISPRImages(vispr, "train2017", VISPR7)
    (vispr / images.annotations[0]).unlink()
    with pytest.raises(ValueError, match=f"bad VISPR annotation .*{images.annotations[0]}"):
        images[0]
    record = json.loads((vispr / images.annotations[1]).read_text())
    (vispr / images.annotations[1]).write_text(
        json.dumps({**record, "labels": ["a4_gender", "a999_made_up"]})
    )
    with pytest.raises(ValueError, match=r"unknown attribute ids \['a999_made_up'\]"):
        images[1]
    (vispr / "val2017.txt").write_text("\n")
    with pytest.raises(ValueError, match="val2017.txt is empty"):
        VISPRImages(vispr, "val2017")
    with pytest.raises(FileNotFoundError, match="missing PA-HMDB51 annotation folder"):
        PAHMDB51(root=str(tmp_path / "nowhere"), data_dir=str(root), **SMALL).utility_dataset(
            "test"
        )
    okvqa = tmp_path / "okvqa"
    shutil.copytree(root / "okvqa", okvqa)
    path = okvqa / "mscoco_val2014_annotations.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["answers"] = data["annotations"][0]["answers"][:9]
    path.write_text(json.dumps(data))
    module = OKVQA(root=str(okvqa), data_dir=str(root))
    with pytest.raises(
        ValueError, match=r"annotations.json: question_id 20005: expected 10 answers"
    ):
        module.utility_dataset("test")
    with pytest.raises(ValueError, match="no train2014 question of types"):
        OKVQA(question_types=["ten"], data_dir=str(root)).utility_dataset("train")


def test_check_video_finds_truncation(tmp_path: Path) -> None:
    good = fixtures.write_video(tmp_path / "good.avi")
    assert check_video(good) is None
    cut = fixtures.write_video(tmp_path / "cut.avi")
    _cut_after_frames(cut, 12)  # still opens: decord finds the 12 frames before the cut
    assert check_video(cut).startswith("truncated: the header promises 24 frames, only 1")
    broken = fixtures.write_video(tmp_path / "broken.avi")
    _truncate(broken, 0.3)
    assert check_video(broken).startswith("unreadable")
    assert check_video(tmp_path / "missing.avi") == "missing file"


def test_data_check_passes_a_good_folder_and_names_every_bad_file(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_main(["--config", "conf/hmdb.yaml", "--root", str(root)]) == 0
    assert "data check: passed" in capsys.readouterr().out

    bad = tmp_path / "data"
    shutil.copytree(root, bad)
    truncated = bad / "hmdb51" / "hmdb51" / "catch" / "catch_1.avi"
    _cut_after_frames(truncated, 10)
    vispr_listing = (bad / "vispr" / "train2017.txt").read_text().split()
    missing = bad / "vispr" / vispr_listing[0]
    missing.unlink()
    unknown = bad / "vispr" / vispr_listing[1]
    unknown.write_text(
        json.dumps(
            {
                "image_path": json.loads(unknown.read_text())["image_path"],
                "labels": ["a999_made_up"],
            }
        )
    )
    pa_file = bad / "pa_hmdb51" / "PrivacyAttributes" / "wave.json"
    pa_file.write_text(json.dumps({"wave_0.avi": {"hair": [[0, 3, 1]]}}))
    (bad / "ucf101" / "ucfTrainTestlist" / "testlist02.txt").write_text("")
    (bad / "okvqa" / "privacy_labels.json").unlink()

    assert check_main(["--config", "conf/hmdb.yaml", "--root", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"ERROR {truncated}: truncated" in out
    assert f"ERROR {missing}: missing annotation file" in out
    assert f"ERROR {unknown}: unknown attribute ids ['a999_made_up']" in out
    assert f"ERROR {pa_file}" in out and "unknown attribute 'hair'" in out
    assert check_main(["--config", "conf/ucf101.yaml", "--root", str(bad), "--decode", "0"]) == 1
    out = capsys.readouterr().out
    assert "testlist02.txt: empty: no samples" in out
    assert check_main(["--config", "conf/okvqa.yaml", "--root", str(bad), "--decode", "0"]) == 1
    assert "missing OK-VQA privacy labels" in capsys.readouterr().out
    assert check_main(["--config", "conf/nowhere.yaml"]) == 2


def test_data_check_honours_config_overlays_like_fit(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        "data:\n  init_args:\n    utility:\n      init_args:\n        split: 2\n"
        "    test_utility:\n      init_args:\n        include_unreviewed: false\n"
    )
    module = load_data_module("conf/hmdb.yaml", overlay)
    assert module.utility.split == 2 and module.test_utility.include_unreviewed is False
    assert module.utility.num_frames == 16  # the rest of conf/hmdb.yaml stays
    args = ["--config", "conf/hmdb.yaml", "--config", str(overlay), "--root", str(root)]
    assert check_main([*args, "--decode", "0"]) == 0
    out = capsys.readouterr().out
    assert "split 2 train: " in out and "dropped (include_unreviewed: false)" in out
    # --data.* overrides as for fit
    assert check_main([*args, "--data.init_args.utility.init_args.split=1", "--decode=0"]) == 0
    assert "split 1 train: " in capsys.readouterr().out


def test_data_check_names_each_bad_file_once(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "data"
    shutil.copytree(root, bad)
    listing = (bad / "vispr" / "train2017.txt").read_text().split()
    broken = bad / "vispr" / listing[0]
    broken.write_text("{not json")
    pa_file = bad / "pa_hmdb51" / "PrivacyAttributes" / "wave.json"
    pa_file.write_text(json.dumps({"wave_0.avi": {"gender": [[0, 3, [1, 7]]]}}))
    # novel.yaml reads the VISPR folder for VISPR1 and for VISPR2
    assert check_main(["--config", "conf/novel.yaml", "--root", str(bad), "--decode", "0"]) == 1
    out = capsys.readouterr().out
    assert out.count(str(broken)) == 1 and "(and 1 reported above)" in out
    assert out.count(str(pa_file)) == 1
    assert "'gender' range [0, 3, [1, 7]] is not [start, end, value]" in out
    assert "value one of [0, 1, 2] (0 unidentifiable, 1 male, 2 female) or a list of them" in out
    assert "the videos of 1 unreadable file(s) are not counted" in out


def test_bench_data_reports_clips_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    from privacy_lit.bench.data import main as bench_main

    args = [
        "--videos",
        "2",
        "--frames",
        "40",
        "--width",
        "80",
        "--height",
        "60",
        "--workers",
        "0",
        "--batch-size",
        "2",
        "--batches",
        "2",
        "--warmup",
        "1",
    ]
    assert bench_main(args) == 0
    assert "clips/s (4 clips of 16x112x112" in capsys.readouterr().out


def test_generic_video_clips_train_randomly(root: Path) -> None:
    video = root / "hmdb51" / "hmdb51" / "wave" / "wave_1.avi"
    dataset = VideoClips([(video, 0)], ClipSpec(4, 2, 32), train=True)
    torch.manual_seed(0)
    starts = {round(float(dataset[0]["clip"][0].float().median()) / GREY_STEP) for _ in range(8)}
    assert len(starts) > 1  # no fixed seed: a new clip every time (epoch)
    fixed = VideoClips([(video, 0)], ClipSpec(4, 2, 32), train=True, seed=3)
    assert torch.equal(fixed[0]["clip"], fixed[0]["clip"])
