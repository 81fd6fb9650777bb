"""``python -m privacy_lit anonymize``: the trained anonymizer as a product — anonymize a user's
images and videos *before* they are sent to a cloud MLLM.

    python -m privacy_lit anonymize --ckpt RUN/checkpoints/epoch=6-step=175.ckpt \\
        photo.jpg clip.mp4 album/ --out anonymized/ [--batch-size 16] [--device cpu|cuda]
    python -m privacy_lit anonymize --benchmark [--ckpt PATH]   # frames/s on a 10 s 320×240 video

Only the anonymizer is loaded from the Lightning checkpoint (its ``anonymizer.*`` weights and the
``anonymizer_widths`` / ``head_hidden`` hyper-parameters): no black box, no reviewer, no data.
The anonymizer is fully convolutional, so any resolution works. Loading and anonymizing are
:mod:`privacy_lit.deploy`'s (shared with ``serve`` and the Python API); this file finds, checks,
reads and writes the files.

- Images (``.jpg``, ``.png``, ...) keep their format; images of one size are anonymized in
  batches.
- Videos are decoded with decord in chunks of ``--batch-size`` frames and written with OpenCV at
  the same frame rate and frame count (MJPG in ``.avi`` / ``.mkv``, MPEG-4 in ``.mp4`` / ``.mov``;
  other containers are written as ``.mp4``). Audio is not copied.
- Folders are searched recursively; their tree is reproduced under ``--out/<folder name>/``.

Every input is checked before anything is written (that it exists, has a supported type, that
an image's header and a video's index can be read, that it is not smaller than the anonymizer
takes): a file failing a check is reported by name and nothing is processed, so a batch does not
half-finish on a bad file it could have seen. Images larger than about a megapixel are
anonymized in tiles (:mod:`privacy_lit.deploy`), so an 8000×8000 photo needs no more memory than
a small one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from privacy_lit.deploy import VIDEO_CODECS, AnonymizerPipeline, InputError, load_anonymizer
from privacy_lit.models.anonymizer import Anonymizer, anonymize_pixels

__all__ = ["InputError", "Job", "anonymize_files", "benchmark", "collect_jobs", "load_anonymizer"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset(
    {".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
)
JPEG_QUALITY = 95


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Job:
    """One input file and where its anonymized version goes."""

    source: Path
    target: Path
    kind: str  # "image" or "video"
    frames: int = 1
    fps: float = 0.0


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def _video_target(target: Path) -> Path:
    return target if target.suffix.lower() in VIDEO_CODECS else target.with_suffix(".mp4")


def _probe(source: Path, target: Path, kind: str, min_side: int = 1) -> Job:
    """Check that ``source`` can be read and is large enough for the anonymizer (``min_side``
    pixels a side), before anything is written."""
    if kind == "image":
        if not cv2.haveImageReader(str(source)):
            raise InputError(f"cannot read image {source}: not a readable {source.suffix} file")
        _check_size(source, _image_size(source), min_side)
        return Job(source, target, kind)
    _check_size(source, _video_size(source), min_side)
    import decord

    try:
        reader = decord.VideoReader(str(source), ctx=decord.cpu(0))
        frames, fps = len(reader), float(reader.get_avg_fps())
    except Exception as error:  # noqa: BLE001 - decord raises its own error types
        raise InputError(f"cannot read video {source}: {error}") from error
    if frames == 0 or not fps > 0:
        raise InputError(f"cannot read video {source}: {frames} frames at {fps} fps")
    return Job(source, _video_target(target), kind, frames, fps)


def _image_size(path: Path) -> tuple[int, int] | None:
    """Width and height from the image's header (PIL reads no pixels for it); None where PIL
    cannot tell (OpenCV may still read the file)."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        return None


def _video_size(path: Path) -> tuple[int, int] | None:
    capture = cv2.VideoCapture(str(path))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    capture.release()
    return size if min(size) > 0 else None


def _check_size(source: Path, size: tuple[int, int] | None, min_side: int) -> None:
    if size is not None and min(size) < min_side:
        raise InputError(
            f"cannot anonymize {source}: {size[0]}×{size[1]} px, the anonymizer needs at least "
            f"{min_side} px a side"
        )


def collect_jobs(inputs: Sequence[str | Path], out: str | Path, min_side: int = 1) -> list[Job]:
    """Every file to anonymize with its target under ``out``; raises :class:`InputError` naming
    every input that is missing, unsupported, unreadable or smaller than ``min_side`` pixels a
    side (all of them, not just the first)."""
    out = Path(out)
    pairs: list[tuple[Path, Path]] = []
    problems: list[str] = []
    for raw in inputs:
        source = Path(raw)
        if source.is_dir():
            found = sorted(p for p in source.rglob("*") if p.is_file() and _kind(p))
            if not found:
                problems.append(f"{source}: no images or videos in this folder")
            pairs += [(p, out / source.resolve().name / p.relative_to(source)) for p in found]
        elif source.is_file():
            if _kind(source) is None:
                problems.append(
                    f"{source}: unsupported file type {source.suffix!r} (images: "
                    f"{', '.join(sorted(IMAGE_SUFFIXES))}; videos: "
                    f"{', '.join(sorted(VIDEO_SUFFIXES))})"
                )
            else:
                pairs.append((source, out / source.name))
        else:
            problems.append(f"{source}: no such file or folder")
    jobs = []
    for source, target in pairs:
        try:
            jobs.append(_probe(source, target, _kind(source) or "", min_side))
        except InputError as error:
            problems.append(str(error))
    targets: dict[Path, Path] = {}
    for job in jobs:
        other = targets.setdefault(job.target.resolve(), job.source)
        if other != job.source:
            problems.append(f"{job.source} and {other} would both be written to {job.target}")
        if job.target.resolve() == job.source.resolve():
            problems.append(f"{job.source}: --out would overwrite the input itself")
    if problems:
        raise InputError("cannot anonymize:\n  " + "\n  ".join(problems))
    return jobs


# ----------------------------------------------------------------------------- processing
def _read_image(path: Path) -> Tensor:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read image {path}")
    # channels swapped in place: a large photo is held once (8000×8000 is 192 MB a copy)
    return torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr))


def _write_image(path: Path, rgb: Tensor) -> None:
    """Write (and consume: its channels are swapped in place) an anonymized image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if path.suffix.lower() in {".jpg", ".jpeg"} else []
    )
    pixels = np.ascontiguousarray(rgb.numpy())
    if not cv2.imwrite(str(path), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR, dst=pixels), params):
        raise OSError(f"cannot write image {path}")


def anonymize_files(pipeline: AnonymizerPipeline, jobs: list[Job], progress: bool = True) -> int:
    """Anonymize every job; returns the number of frames (an image is one) written."""
    total = sum(job.frames for job in jobs)
    done = 0
    with tqdm(total=total, unit="frame", desc="anonymizing", disable=not progress) as bar:
        images = ((job, _read_image(job.source)) for job in jobs if job.kind == "image")
        for batch_jobs, anonymized in pipeline.batched(images):
            for job, image in zip(batch_jobs, anonymized, strict=True):
                _write_image(job.target, image)
            done += len(batch_jobs)
            bar.update(len(batch_jobs))
        for job in (job for job in jobs if job.kind == "video"):
            done += pipeline.video(job.source, job.target, bar.update)
    return done


# ----------------------------------------------------------------------------- benchmark
def write_test_video(
    path: Path, seconds: float = 10.0, fps: float = 30.0, width: int = 320, height: int = 240
) -> Path:
    """A moving colour pattern (MJPG), for measuring throughput without user data."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    y, x = np.mgrid[0:height, 0:width]
    for i in range(round(seconds * fps)):
        frame = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, (x + y + i) % 256], axis=-1)
        writer.write(frame.astype(np.uint8))
    writer.release()
    return path


def benchmark(
    checkpoint: str | Path | None = None,
    seconds: float = 10.0,
    fps: float = 30.0,
    width: int = 320,
    height: int = 240,
    batch_size: int = 16,
    device: str = "cpu",
) -> dict[str, float]:
    """Frames per second anonymizing a ``seconds``-long ``width``×``height`` video end to end
    (decode, anonymize, encode) and for the model alone. Without a checkpoint the default
    architecture with untrained weights is timed (the same computation)."""
    model = load_anonymizer(checkpoint, device) if checkpoint else Anonymizer()
    pipeline = AnonymizerPipeline(model, device, batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        source = write_test_video(Path(tmp) / "input.avi", seconds, fps, width, height)
        jobs = collect_jobs([source], Path(tmp) / "out")
        start = time.perf_counter()
        frames = anonymize_files(pipeline, jobs, progress=False)
        end_to_end = time.perf_counter() - start
    pixels = torch.randint(0, 256, (batch_size, height, width, 3), dtype=torch.uint8).to(device)
    anonymize_pixels(pipeline.model, pixels)  # warm-up
    start, model_frames = time.perf_counter(), 0
    while model_frames < frames:
        anonymize_pixels(pipeline.model, pixels)
        model_frames += batch_size
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    model_only = time.perf_counter() - start
    return {
        "frames": frames,
        "end_to_end_fps": frames / end_to_end,
        "model_fps": model_frames / model_only,
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m privacy_lit anonymize",
        description="Anonymize images, videos and folders with a trained anonymizer.",
    )
    parser.add_argument("inputs", nargs="*", type=Path, help="images, videos or folders")
    parser.add_argument("--ckpt", type=Path, help="a PrivacySystem Lightning checkpoint")
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument("--batch-size", type=int, default=16, help="images or frames per batch")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--benchmark", action="store_true",
        help="measure frames/s on a synthetic 10 s 320x240 video (--ckpt optional)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        if args.benchmark:
            result = benchmark(args.ckpt, batch_size=args.batch_size, device=args.device)
            print(
                f"{result['frames']} frames of 320x240: {result['end_to_end_fps']:.1f} frames/s "
                f"end to end (decode, anonymize, encode), {result['model_fps']:.1f} frames/s "
                f"for the model alone ({args.device}, {result['threads']} threads)"
            )
            return 0
        if args.ckpt is None or args.out is None or not args.inputs:
            parser.error("needs --ckpt, --out and at least one input (or --benchmark)")
        pipeline = AnonymizerPipeline.from_checkpoint(args.ckpt, args.device, args.batch_size)
        jobs = collect_jobs(args.inputs, args.out, pipeline.min_side)
        frames = anonymize_files(pipeline, jobs, not args.quiet)
    except (InputError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"anonymized {len(jobs)} files ({frames} frames) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
