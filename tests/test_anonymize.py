"""The anonymize CLI: a checkpoint's anonymizer on images, videos and folders, with clear errors;
and the Python API it shares with ``serve`` (PIL, numpy, tensors, videos)."""

from __future__ import annotations

from pathlib import Path

import cv2
import decord
import numpy as np
import pytest
import torch
from PIL import Image

from privacy_lit.anonymize import benchmark, collect_jobs, load_anonymizer, main
from privacy_lit.deploy import AnonymizerPipeline, InputError, load, save_anonymizer
from privacy_lit.models.anonymizer import Anonymizer, anonymize_pixels

FPS, FRAMES = 12.5, 20


def small_anonymizer() -> Anonymizer:
    """A small anonymizer whose head is not the identity (its last layer starts at zero)."""
    torch.manual_seed(0)
    model = Anonymizer((4, 8), (8,))
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> Anonymizer:
    return small_anonymizer()


@pytest.fixture(scope="module")
def ckpt(model: Anonymizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What Lightning saves for a PrivacySystem: the anonymizer among other weights and state."""
    state = {f"anonymizer.{k}": v for k, v in model.state_dict().items()}
    state["reviewer.fc.weight"] = torch.zeros(7, 8)
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    torch.save({
        "epoch": 3, "global_step": 40, "state_dict": state,
        "hyper_parameters": {"anonymizer_widths": [4, 8], "head_hidden": [8], "gamma": 0.5},
        "zo": {"step": 4, "mllm_stats": {"calls": 64}}, "optimizer_states": [],
    }, path)  # fmt: skip
    return path


def _image(path: Path, h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])
    return rgb


def _video(path: Path, fourcc: str = "MJPG", frames: int = FRAMES) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()


def test_loads_the_anonymizer_and_nothing_else(ckpt: Path, model: Anonymizer) -> None:
    loaded = load_anonymizer(ckpt)
    x = torch.rand(2, 3, 24, 32)
    assert torch.equal(loaded(x), model(x))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_images_keep_format_and_size(ckpt: Path, model: Anonymizer, tmp_path: Path) -> None:
    png = _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "b.jpg", 30, 20, seed=1)
    _image(tmp_path / "in" / "c.png", seed=2)  # batched with a.png (same size)
    out = tmp_path / "out"
    inputs = [str(tmp_path / "in" / n) for n in ("a.png", "b.jpg", "c.png")]
    assert main(["--ckpt", str(ckpt), *inputs, "--out", str(out), "--batch-size", "2"]) == 0
    a = cv2.imread(str(out / "a.png"))[..., ::-1]
    expected = anonymize_pixels(model, torch.from_numpy(png.copy())).numpy()
    assert np.array_equal(a, expected)  # PNG is lossless: exactly the anonymizer's output
    assert not np.array_equal(a, png)
    assert cv2.imread(str(out / "b.jpg")).shape == (30, 20, 3)


@pytest.mark.parametrize(("name", "fourcc"), [("clip.avi", "MJPG"), ("clip.mp4", "mp4v")])
def test_video_keeps_frame_count_and_rate(ckpt: Path, tmp_path: Path, name: str, fourcc: str):
    _video(tmp_path / name, fourcc)
    out = tmp_path / "out"
    assert main(["--ckpt", str(ckpt), str(tmp_path / name), "--out", str(out),
                 "--batch-size", "8", "--quiet"]) == 0  # fmt: skip
    reader = decord.VideoReader(str(out / name))
    assert len(reader) == FRAMES and reader.get_avg_fps() == pytest.approx(FPS)
    assert reader[0].shape == (48, 64, 3)


def test_folders_are_searched_recursively(ckpt: Path, tmp_path: Path) -> None:
    album = tmp_path / "album"
    _image(album / "x.png")
    _image(album / "trip" / "y.jpeg")
    _video(album / "trip" / "z.mpg", "mp4v", frames=5)  # written back as .mp4
    (album / "notes.txt").write_text("not media: skipped in folders")
    out = tmp_path / "out"
    assert main(["--ckpt", str(ckpt), str(album), "--out", str(out), "--quiet"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["album/trip/y.jpeg", "album/trip/z.mp4", "album/x.png"]
    assert len(decord.VideoReader(str(out / "album" / "trip" / "z.mp4"))) == 5


def test_bad_inputs_are_named_and_nothing_is_written(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _image(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"definitely not a jpeg")
    (tmp_path / "broken.avi").write_bytes(b"RIFF garbage")
    (tmp_path / "doc.pdf").write_bytes(b"%PDF")
    out = tmp_path / "out"
    inputs = [tmp_path / n for n in ("good.png", "broken.jpg", "broken.avi", "doc.pdf", "gone.png")]
    assert main(["--ckpt", str(ckpt), *map(str, inputs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    for name in ("broken.jpg", "broken.avi", "doc.pdf", "gone.png"):
        assert name in err
    assert "cannot read image" in err and "cannot read video" in err and "unsupported" in err
    assert not out.exists()


def test_clashing_targets_and_bad_checkpoints(tmp_path: Path, ckpt: Path) -> None:
    _image(tmp_path / "a" / "same.png")
    _image(tmp_path / "b" / "same.png")
    with pytest.raises(ValueError, match="would both be written"):
        collect_jobs([tmp_path / "a" / "same.png", tmp_path / "b" / "same.png"], tmp_path / "o")
    with pytest.raises(ValueError, match="overwrite the input"):
        collect_jobs([tmp_path / "a" / "same.png"], tmp_path / "a")

    not_ours = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.weight": torch.zeros(1)}}, not_ours)
    with pytest.raises(ValueError, match="no anonymizer.* weights"):
        load_anonymizer(not_ours)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_anonymizer(tmp_path / "missing.ckpt")
    assert main(["--ckpt", str(tmp_path / "missing.ckpt"), str(tmp_path / "a"),
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip


def test_benchmark_reports_frames_per_second(ckpt: Path) -> None:
    result = benchmark(ckpt, seconds=0.5, fps=10, width=64, height=48, batch_size=4)
    assert result["frames"] == 5 and result["end_to_end_fps"] > 0 and result["model_fps"] > 0


# ----------------------------------------------------------------------------- the Python API
def test_api_takes_pil_numpy_and_tensors(ckpt: Path, model: Anonymizer) -> None:
    anonymizer = load(ckpt)
    rgb = np.random.default_rng(3).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    expected = anonymize_pixels(model, torch.from_numpy(rgb.copy())).numpy()
    assert not np.array_equal(expected, rgb)
    pil = anonymizer(Image.fromarray(rgb))
    assert isinstance(pil, Image.Image) and np.array_equal(np.asarray(pil), expected)
    assert np.array_equal(anonymizer(rgb), expected)
    assert np.array_equal(anonymizer(np.stack([rgb, rgb]))[1], expected)  # a batch
    assert torch.equal(anonymizer(torch.from_numpy(rgb)), torch.from_numpy(expected))
    x = torch.rand(3, 3, 24, 32)  # float channels-first goes through the model as it is
    assert torch.allclose(anonymizer(x), model(x), atol=1e-6)

    with pytest.raises(TypeError, match="PIL image, a numpy array or a torch tensor"):
        anonymizer([rgb])
    with pytest.raises(ValueError, match="expected uint8 RGB pixels"):
        anonymizer(rgb.astype(np.float64))
    with pytest.raises(InputError, match="at least 2 px a side"):
        anonymizer(rgb[:1, :1])


def test_api_batches_images_of_any_sizes_by_size(
    ckpt: Path, model: Anonymizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    anonymizer = AnonymizerPipeline.from_checkpoint(ckpt, batch_size=2)
    rng = np.random.default_rng(4)
    a, b, c = (rng.integers(0, 256, shape, dtype=np.uint8) for shape in
               [(40, 56, 3), (30, 20, 3), (40, 56, 3)])  # fmt: skip
    batches = []
    frames = anonymizer.frames
    monkeypatch.setattr(anonymizer, "frames", lambda x: batches.append(x.shape[:3]) or frames(x))
    out = anonymizer.many([Image.fromarray(a), b, torch.from_numpy(c)])
    assert sorted(batches) == [(1, 30, 20), (2, 40, 56)]  # a and c in one pass
    assert isinstance(out[0], Image.Image) and isinstance(out[1], np.ndarray)
    assert isinstance(out[2], torch.Tensor)
    for image, result in zip((a, b, c), (np.asarray(out[0]), out[1], out[2].numpy()), strict=True):
        assert np.array_equal(result, anonymize_pixels(model, torch.from_numpy(image)).numpy())


def test_api_anonymizes_video_files(ckpt: Path, tmp_path: Path) -> None:
    _video(tmp_path / "in.avi")
    assert load(ckpt, batch_size=8).video(tmp_path / "in.avi", tmp_path / "out.mp4") == FRAMES
    reader = decord.VideoReader(str(tmp_path / "out.mp4"))
    assert len(reader) == FRAMES and reader.get_avg_fps() == pytest.approx(FPS)
    with pytest.raises(InputError, match="cannot write video"):
        load(ckpt).video(tmp_path / "in.avi", tmp_path / "out.gif")


def test_save_anonymizer_round_trips(model: Anonymizer, tmp_path: Path) -> None:
    for saved in (model, Anonymizer()):
        loaded = load_anonymizer(save_anonymizer(saved, tmp_path / "a.ckpt"))
        x = torch.rand(1, 3, 16, 16)
        assert torch.equal(loaded(x), saved.eval()(x))
