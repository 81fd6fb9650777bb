"""The real releases' annotation files (``../shared/real_annotations``, see tests/real_root.py)
load with the official sizes and the labels they say; skipped where those files are absent."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from privacy_lit.data.check import main as check_main
from privacy_lit.data.hmdb51 import HMDB51
from privacy_lit.data.okvqa import OKVQA, read_privacy_labels
from privacy_lit.data.pa_hmdb51 import (
    PA_ATTRIBUTES,
    PA_HMDB51_TO_VISPR,
    PAHMDB51,
    read_pa_folder,
)
from privacy_lit.data.ucf101 import UCF101
from privacy_lit.data.vispr import VISPR, VISPR7
from privacy_lit.data.vp import VP_COLUMNS, read_vp_labels
from privacy_lit.data.vp import main as vp_main
from tests.real_root import require_real

SMALL = {"num_frames": 16, "stride": 2, "size": 16}  # the paper's clips, tiny pixels
HMDB51_VISPR = list(VISPR7[:6])  # gender, face complete, face partial, skin colour, nudity, rel.

# Hand-checked PA-HMDB51 labels over HMDB51-VISPR's 6 attributes [a4_gender, a9_face_complete,
# a10_face_partial, a17_color, a12_semi_nudity, a64_rel_personal], read off the JSON by hand.
# The centre clip of T frames takes frames s, s+2, ..., s+30 with s = (T - 31) // 2.
# (action, video, T, clip "present", video "present", clip "valuewise", video "valuewise")
HAND_CHECKED = [
    # every range 0-229: skin 2, face 1, gender [1, 2] (a man and a woman), nudity 0, rel. 1
    ("brush_hair", "brushing_hair_brush_hair_f_nm_np2_ri_goo_1.avi", 230,
     [1, 0, 1, 1, 0, 1], [1, 0, 1, 1, 0, 1], [1, 0, 1, 1, 0, 1], [1, 0, 1, 1, 0, 1]),
    # clip frames 6-36: face 1 (4-21), 2 (22-34), 1 (35-39); gender 1, then [1, 2] from 22;
    # skin 2 throughout; face 0 only in 40-42; nudity and relationship 0
    ("punch", "LivefreeorDieHard_punch_u_cm_np1_fr_med_1.avi", 43,
     [1, 0, 1, 1, 0, 0], [1, 0, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]),
    # clip frames 23-53: face 2, skin 3, gender 1; nudity 1 only in 74-77 (outside the clip)
    ("walk", "21_walk_u_cm_np1_fr_med_15.avi", 78,
     [1, 0, 1, 1, 0, 0], [1, 0, 1, 1, 1, 0], [1, 1, 0, 1, 0, 0], [1, 1, 0, 1, 0, 0]),
    # gender [0, 1] (unidentifiable and a man: present), face 2, skin 1, nudity 1, rel. 1
    ("clap", "Aishwarya_Rai_Burns_David_Letterman_in_his_own_show_clap_u_cm_np1_fr_bad_1.avi", 55,
     [1, 0, 1, 1, 1, 1], [1, 0, 1, 1, 1, 1], [1, 1, 0, 1, 0, 1], [1, 1, 0, 1, 0, 1]),
    # "review": false; clip frames 114-144: face 2 (0-195; 1 after), gender [1, 2], rel. 1
    ("kiss", "5GreatHollywoodKisses_kiss_h_cm_np2_ri_goo_1.avi", 259,
     [1, 0, 1, 1, 0, 1], [1, 0, 1, 1, 0, 1], [1, 1, 0, 1, 0, 1], [1, 1, 1, 1, 0, 1]),
    # skin [1, 3] and gender [1, 2] from frame 12; face 1, nudity 1, relationship 0
    ("shake_hands", "Finding_Forrester_2_shake_hands_u_cm_np2_le_med_0.avi", 113,
     [1, 0, 1, 1, 1, 0], [1, 0, 1, 1, 1, 0], [1, 0, 1, 1, 0, 0], [1, 0, 1, 1, 0, 0]),
]  # fmt: skip


# ----------------------------------------------------------------------------- the files
@pytest.mark.slow  # builds the real root: 20,000 stand-in media files
def test_every_real_file_loads_with_the_official_sizes(real_root: Path) -> None:
    for split in (1, 2, 3):
        module = HMDB51(split=split, data_dir=str(real_root), **SMALL)
        sizes = (len(module.utility_dataset("train")), len(module.utility_dataset("test")))
        assert sizes == (3_570, 1_530), split
    ucf = {1: (9_537, 3_783), 2: (9_586, 3_734), 3: (9_624, 3_696)}
    for split, sizes in ucf.items():
        module = UCF101(split=split, data_dir=str(real_root), **SMALL)
        assert (len(module.utility_dataset("train")), len(module.utility_dataset("test"))) == sizes
        assert len(module.classes) == 101
    vispr = VISPR(data_dir=str(real_root))
    assert [len(vispr.privacy_dataset(s)) for s in ("train", "val", "test")] == [
        10_000, 4_167, 8_000]  # fmt: skip
    assert len(VISPR(setting="vispr2", data_dir=str(real_root)).attribute_names) == 7
    pa = PAHMDB51(data_dir=str(real_root), **SMALL)
    assert len(pa.annotations()) == 515 and len(pa.classes) == 51
    assert sum(not a.reviewed for a in pa.annotations()) == 39
    assert sum(a.has_list_values for a in pa.annotations()) == 42
    assert len(PAHMDB51(include_unreviewed=False, data_dir=str(real_root)).annotations()) == 476
    okvqa = OKVQA(data_dir=str(real_root), size=16)
    with pytest.warns(UserWarning, match="COCO_val2014_000000067422.jpg is listed again"):
        assert len(okvqa.privacy_dataset("test")) == 993


def test_okvqa_duplicate_label_is_united_with_a_warning() -> None:
    path = require_real() / "okvqa" / "privacy_labels.json"
    assert len(json.loads(path.read_text())) == 994
    with pytest.warns(UserWarning, match="COCO_val2014_000000067422.jpg") as caught:
        labels = read_privacy_labels(path, frozenset(VISPR7))
    assert len(caught) == 1 and len(labels) == 993
    assert labels["COCO_val2014_000000067422.jpg"] == ["a17_color", "a4_gender"]


@pytest.mark.slow
def test_hmdb51_training_leaves_the_pa_hmdb51_videos_out(real_root: Path) -> None:
    module = HMDB51(exclude_pa_hmdb51="pa_hmdb51/PrivacyAttributes", data_dir=str(real_root))
    train = module.utility_dataset("train")
    pa_videos = {a.video for a in read_pa_folder(real_root / "pa_hmdb51" / "PrivacyAttributes")}
    assert len(train) == 3_570 - 286 and not {p.name for p, _ in train.samples} & pa_videos


# ----------------------------------------------------------------------------- PA-HMDB51 labels
@pytest.mark.slow
@pytest.mark.parametrize("mapping", ["present", "valuewise"])
def test_hand_checked_pa_hmdb51_labels_per_clip_and_per_video(
    real_root: Path,
    mapping: str,
) -> None:
    clips = PAHMDB51(mapping=mapping, data_dir=str(real_root), **SMALL).utility_dataset("test")
    whole = PAHMDB51(mapping=mapping, label_mode="video", data_dir=str(real_root), **SMALL)
    videos = whole.utility_dataset("test")
    index = {(p.parent.name, p.name): i for i, (p, _) in enumerate(clips.samples)}
    for action, video, frames, *expected in HAND_CHECKED:
        i = index[(action, video)]
        clip = clips[i]
        assert len(clip["clip"]) == 16
        s = (frames - 31) // 2
        assert clips.annotations[i].vispr_ids(range(s, s + 31, 2), clips.mapping) == {
            n for n, v in zip(HMDB51_VISPR, expected[0 if mapping == "present" else 2],
                              strict=True) if v
        }  # fmt: skip
        want_clip, want_video = expected[0:2] if mapping == "present" else expected[2:4]
        assert clip["attributes"].tolist() == want_clip, (video, "clip")
        assert videos[i]["attributes"].tolist() == want_video, (video, "video")


def test_pa_hmdb51_frame_labels_are_unions_of_list_values() -> None:
    folder = require_real() / "pa_hmdb51" / "PrivacyAttributes"
    punch = {a.video: a for a in read_pa_folder(folder)}[
        "LivefreeorDieHard_punch_u_cm_np1_fr_med_1.avi"
    ]
    assert punch.ranges["gender"][2] == (22, 34, frozenset({1, 2}))
    # frame 42: face 0 (invisible), gender [1, 2], skin 2
    assert punch.vispr_ids([42], PA_HMDB51_TO_VISPR) == {"a4_gender", "a17_color"}
    assert punch.vispr_ids([0], PA_HMDB51_TO_VISPR) == {
        "a4_gender",
        "a17_color",
        "a10_face_partial",
    }


# ----------------------------------------------------------------------------- VP-* pickles
@pytest.mark.parametrize(
    ("name", "videos"),
    [("vp_hmdb51/hmdb51_privacy_attribute_label.pickle", 6_766),
     ("vp_ucf101/ucf101_privacy_attribute_label.pickle", 13_320)],
)  # fmt: skip
def test_vp_pickles_load_and_agree_with_their_json_conversion(
    name: str, videos: int, tmp_path: Path
) -> None:
    path = require_real() / name
    labels = read_vp_labels(path)
    assert len(labels) == videos
    assert vp_main([str(path), str(tmp_path / "labels.json")]) == 0
    converted = json.loads((tmp_path / "labels.json").read_text())
    assert len(converted) == videos and all(k.endswith(".mp4") for k in converted)
    assert read_vp_labels(tmp_path / "labels.json") == labels


def _pa_video_labels(folder: Path) -> dict[str, list[int]]:
    """Per PA-HMDB51 video stem: each attribute present (a non-zero value) anywhere."""
    return {
        Path(a.video).stem: [
            int(any(v != 0 for _, _, vs in a.ranges.get(at, ()) for v in vs))
            for at in PA_ATTRIBUTES
        ]
        for a in read_pa_folder(folder)
    }


def test_vp_column_order_is_the_one_pa_hmdb51_agrees_with() -> None:
    """The evidence for :data:`VP_COLUMNS` (privacy_lit/data/vp.py): recomputed here."""
    real = require_real()
    pa = _pa_video_labels(real / "pa_hmdb51" / "PrivacyAttributes")
    path = real / "vp_hmdb51" / "hmdb51_privacy_attribute_label.pickle"
    vp = read_vp_labels(path, columns=[str(j) for j in range(5)], attributes=list("01234"))
    shared = sorted(set(pa) & set(vp))
    assert len(shared) == 515  # every PA-HMDB51 video is a VP-HMDB51 video
    P = np.array([pa[v] for v in shared])  # noqa: N806
    V = np.array([[int(str(j) in vp[v]) for j in range(5)] for v in shared])  # noqa: N806
    agreement = (P[:, :, None] == V[:, None, :]).mean(0)  # PA attribute x VP column
    best = max(
        itertools.permutations(range(5)), key=lambda p: sum(agreement[i, p[i]] for i in range(5))
    )
    assert [PA_ATTRIBUTES[best.index(j)] for j in range(5)] == list(VP_COLUMNS)
    np.testing.assert_allclose(np.diag(agreement), [0.946, 0.806, 0.926, 0.709, 0.837], atol=1e-3)
    phi = np.corrcoef(P.T, V.T)[:5, 5:]
    assert list(phi.argmax(1)) == [0, 1, 2, 3, 4]  # each attribute correlates most with its column
    np.testing.assert_allclose(np.diag(phi), [0.468, 0.536, 0.242, 0.515, 0.450], atol=1e-3)


# ----------------------------------------------------------------------------- data check
@pytest.mark.slow
@pytest.mark.parametrize("name", ["hmdb", "novel", "vp_hmdb", "vp_ucf101", "ucf101", "okvqa"])
def test_data_check_passes_every_config_on_the_real_files(
    real_root: Path,
    name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        check_main(["--config", f"conf/{name}.yaml", "--root", str(real_root), "--decode", "2"])
        == 0
    )
    out = capsys.readouterr().out
    assert "data check: passed" in out and "ERROR" not in out
    if name in ("hmdb", "novel"):
        assert "PrivacyAttributes videos: 515 samples (official)" in out
        assert '39 videos marked "review": false, kept' in out
    if name == "hmdb":
        assert "split 1 train: 3570 listed, 286 PA-HMDB51 test videos left out" in out
    if name.startswith("vp_"):
        assert "split 1 train: " in out and "videos labelled" in out and "no label" not in out
    if name == "okvqa":
        assert "COCO_val2014_000000067422.jpg is listed again" in out
