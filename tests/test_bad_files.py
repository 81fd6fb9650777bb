"""No file silently wrong: ``data check`` reads every file of the synthetic benchmark too, ``fit``
stops on a video it cannot read in full (or skips it, counted and logged, when asked), the
deployed anonymizer takes a 1×1 and a very large image, ``report`` refuses a NaN figure."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from privacy_lit.anonymize import main as anonymize_main
from privacy_lit.data.check import main as check_main
from privacy_lit.data.video import UnreadableVideo
from privacy_lit.deploy import AnonymizerPipeline, save_anonymizer
from privacy_lit.models.anonymizer import Anonymizer
from privacy_lit.report import main as report_main
from privacy_lit.system import PrivacySystem
from tests.conftest import DEMO_CONFIG, TINY_CONFIG, FixedAnswerMLLM, TinyBenchmark

ROOT = Path(__file__).resolve().parents[1]


def _cut_after_frames(path: Path, frames: int) -> None:
    """Cut an MJPG AVI cleanly before its frame ``frames`` (a copy that stopped early)."""
    data = path.read_bytes()
    chunks = [i for i in range(len(data)) if data.startswith(b"00dc", i)]
    path.write_bytes(data[: chunks[frames]])


@pytest.fixture
def broken_root(tiny: TinyBenchmark, tmp_path: Path) -> Path:
    """The tiny benchmark with one truncated training video and one truncated test video."""
    root = tmp_path / "synthetic"
    shutil.copytree(tiny.root, root)
    _cut_after_frames(root / "hmdb51" / "walk" / "walk_0001.avi", 6)
    _cut_after_frames(root / "hmdb51" / "walk" / "walk_0004.avi", 6)
    return root


# ----------------------------------------------------------------------------- data check
def test_data_check_reads_every_file_of_the_synthetic_benchmark(
    broken_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = ["--config", DEMO_CONFIG, "--config", TINY_CONFIG]
    assert check_main([*configs, f"--data.init_args.root={broken_root}"]) == 1
    out = capsys.readouterr().out
    for name in ("walk_0001.avi", "walk_0004.avi"):  # a training and a test video
        video = broken_root / "hmdb51" / "walk" / name
        assert f"video {video} cannot be read in full: truncated" in out
    assert "privacy val" in out  # every split served, the privacy validation images too

    # --sample 2: two samples per split, the first and the last, both readable here
    assert check_main([*configs, f"--data.init_args.root={broken_root}", "--sample", "2"]) == 0
    out = capsys.readouterr().out
    assert "read 2 of 24 samples (--sample)" in out and "data check: passed" in out
    assert "cannot be read in full" not in out


# ----------------------------------------------------------------------------- fit
def _reconstruction_fit(tiny: TinyBenchmark, root: Path, out: Path, **data_args) -> None:
    L.seed_everything(0)
    system = PrivacySystem(FixedAnswerMLLM(), reviewer_arch="resnet18", recon_epochs=1,
                           reviewer_epochs=0, **tiny.system_args)  # fmt: skip
    trainer = L.Trainer(max_epochs=1, logger=CSVLogger(out), log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0,
                        accelerator="cpu")  # fmt: skip
    trainer.fit(system, datamodule=TinyBenchmark(root).data(**data_args))


def test_fit_stops_at_a_video_it_cannot_read_in_full_naming_it(
    tiny: TinyBenchmark, broken_root: Path, tmp_path: Path
) -> None:
    video = broken_root / "hmdb51" / "walk" / "walk_0001.avi"
    with pytest.raises(UnreadableVideo, match=f"video {video} cannot be read in full: truncated"):
        _reconstruction_fit(tiny, broken_root, tmp_path)


def test_fit_skips_unreadable_samples_when_asked_counting_and_naming_them(
    tiny: TinyBenchmark, broken_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = next((broken_root / "vispr" / "images" / "train2017").glob("*.jpg"))
    image.write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING, logger="privacy_lit.data.base"):
        _reconstruction_fit(tiny, broken_root, tmp_path, skip_unreadable=True)
    skipped = [r for r in caplog.records if r.getMessage().startswith("skipping sample")]
    named = " ".join(r.getMessage() for r in skipped)
    assert "walk_0001.avi cannot be read in full" in named and image.name in named
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    counted = sum(float(r["data/skipped"]) for r in rows if r.get("data/skipped"))
    # one video in one epoch; the privacy loader cycles twice over its 24 images per epoch
    assert counted == len(skipped) == 1 + 2


# ----------------------------------------------------------------------------- anonymize
def _checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = Anonymizer((8, 16), (8,))
    for parameter in model.head.parameters():  # not the identity: the output must differ
        torch.nn.init.normal_(parameter, std=0.3)
    return save_anonymizer(model, path)


def test_a_one_pixel_image_is_refused_by_name_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _checkpoint(tmp_path / "a.ckpt")
    good, tiny = tmp_path / "good.png", tmp_path / "tiny.png"
    cv2.imwrite(str(good), np.full((16, 16, 3), 200, np.uint8))
    cv2.imwrite(str(tiny), np.full((1, 1, 3), 200, np.uint8))
    out = tmp_path / "out"
    assert anonymize_main(["--ckpt", str(checkpoint), "--out", str(out), "--quiet", str(good),
                           str(tiny)]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert f"cannot anonymize {tiny}: 1×1 px, the anonymizer needs at least 2 px a side" in error
    assert not out.exists()  # the good image was not written either: nothing half done
    assert anonymize_main(["--ckpt", str(checkpoint), "--out", str(out), "--quiet",
                           str(good)]) == 0  # fmt: skip
    assert not (cv2.imread(str(out / "good.png")) == 200).all()  # anonymized, not copied


def test_large_frames_go_in_tiles_that_match_the_whole_frame() -> None:
    torch.manual_seed(0)
    model = Anonymizer((8, 16), (8,))
    for parameter in model.head.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    image = torch.randint(0, 256, (1, 203, 317, 3), dtype=torch.uint8)
    whole = AnonymizerPipeline(model)(image)
    tiled = AnonymizerPipeline(model, max_pixels=64 * 64, tile=64, margin=64)(image)
    difference = (whole.int() - tiled.int()).abs()
    assert (whole != image).float().mean() > 0.5
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01  # float rounding
    with pytest.raises(ValueError, match="multiples of 2"):
        AnonymizerPipeline(model, tile=63)


@pytest.mark.slow
def test_an_8000_pixel_square_photo_is_anonymized_under_2_gb(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "a.ckpt")
    y, x = np.mgrid[0:8000, 0:8000]
    photo = np.stack([(x // 7) % 256, (y // 5) % 256, ((x + y) // 11) % 256], -1)
    cv2.imwrite(str(tmp_path / "huge.jpg"), photo.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    del photo, x, y
    # the command in a process of its own, reporting its own peak resident memory (VmHWM: the
    # peak of this program; getrusage's ru_maxrss would also hold the forking test's)
    script = (
        "import re, sys; from pathlib import Path; from privacy_lit.cli import main; "
        "main(sys.argv[1:]); status = Path('/proc/self/status').read_text(); "
        "print('peak_rss_mb', int(re.search(r'VmHWM:\\s+(\\d+)', status)[1]) / 1024)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "anonymize", "--ckpt", str(checkpoint), "--out",
         str(tmp_path / "out"), "--quiet", str(tmp_path / "huge.jpg")],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    peak = float(done.stdout.split("peak_rss_mb")[1])
    print(f"anonymize 8000x8000: peak RSS {peak:.0f} MB")
    assert peak < 2048, f"peak RSS {peak:.0f} MB"
    assert cv2.imread(str(tmp_path / "out" / "huge.jpg")).shape == (8000, 8000, 3)


# ----------------------------------------------------------------------------- report
@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"top1": math.nan, "cmap": 0.5}, "top1"),
        ({"top1": 0.9, "cmap": math.inf}, "cmap"),
        ({"top1": 0.9, "cmap": 0.5, "attribute_precision": {"a4_gender": -math.inf}},
         "attribute_precision.a4_gender"),
    ],
)  # fmt: skip
def test_report_rejects_a_figure_that_is_not_finite_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], row: dict, field: str
) -> None:
    results = tmp_path / "run" / "results.json"
    results.parent.mkdir()
    rows = [{"method": "raw", "top1": 1.0, "cmap": 0.8}, {"method": "ours", **row}]
    results.write_text(json.dumps({"rows": rows}))  # json writes NaN and Infinity
    assert report_main([str(results.parent)]) == 2
    error = capsys.readouterr().err
    assert f"{results}: row 1 (ours): {field} must be a number (finite)" in error
