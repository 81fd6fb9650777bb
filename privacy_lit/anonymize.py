"""``python -m privacy_lit anonymize``: the trained anonymizer as a product — anonymize a user's
images and videos *before* they are sent to a cloud MLLM.

    python -m privacy_lit anonymize --ckpt RUN/checkpoints/epoch=6-step=175.ckpt \\
        photo.jpg clip.mp4 album/ --out anonymized/ [--batch-size 16] [--device cpu|cuda]
    python -m privacy_lit anonymize --benchmark [--ckpt PATH]   # frames/s on a 10 s 320×240 video

Only the anonymizer is loaded from the Lightning checkpoint (its ``anonymizer.*`` weights and the
``anonymizer_widths`` / ``head_hidden`` hyper-parameters): no black box, no reviewer, no data.
The anonymizer is fully convolutional, so any resolution works.

- Images (``.jpg``, ``.png``, ...) keep their format; images of one size are anonymized in
  batches.
- Videos are decoded with decord in chunks of ``--batch-size`` frames and written with OpenCV at
  the same frame rate and frame count (MJPG in ``.avi`` / ``.mkv``, MPEG-4 in ``.mp4`` / ``.mov``;
  other containers are written as ``.mp4``). Audio is not copied.
- Folders are searched recursively; their tree is reproduced under ``--out/<folder name>/``.

Every input is checked before anything is written (that it exists, has a supported type, that
an image's header and a video's index can be read): a file failing a check is reported by name
and nothing is processed, so a batch does not half-finish on a bad file it could have seen.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from privacy_lit.models.anonymizer import Anonymizer, anonymize_pixels

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset(
    {".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
)
VIDEO_CODECS = {".avi": "MJPG", ".mkv": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v",
                ".webm": "VP80"}  # fmt: skip
"""Output container → OpenCV fourcc; containers not listed are written as ``.mp4``."""
JPEG_QUALITY = 95


class InputError(ValueError):
    """An input that cannot be anonymized (missing, unsupported, unreadable); names the file."""


# ----------------------------------------------------------------------------- the model
def load_anonymizer(checkpoint: str | Path, device: str | torch.device = "cpu") -> Anonymizer:
    """The anonymizer f_A of a :class:`~privacy_lit.system.PrivacySystem` Lightning checkpoint.

    The checkpoint is loaded with ``weights_only=True`` (no code from the file is run), and only
    the ``anonymizer.*`` weights are used: the MLLM and the reviewer are not needed.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a corrupt file, a pickle needing code, ...
        raise InputError(f"cannot load checkpoint {path}: {error}") from error
    if not isinstance(state, dict) or "state_dict" not in state:
        raise InputError(f"{path} is not a Lightning checkpoint (no state_dict)")
    weights = {
        key.removeprefix("anonymizer."): value
        for key, value in state["state_dict"].items()
        if key.startswith("anonymizer.")
    }
    if not weights:
        raise InputError(f"{path} holds no anonymizer.* weights: is it a PrivacySystem checkpoint?")
    hparams = state.get("hyper_parameters") or {}
    model = Anonymizer(
        hparams.get("anonymizer_widths", (16, 32, 64, 128)), hparams.get("head_hidden", (88, 64))
    )
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise InputError(
            f"{path}: the anonymizer weights do not fit its hyper-parameters: {error}"
        ) from error
    return model.eval().requires_grad_(False).to(device)


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


def _probe(source: Path, target: Path, kind: str) -> Job:
    """Check that ``source`` can be read, before anything is written."""
    if kind == "image":
        if not cv2.haveImageReader(str(source)):
            raise InputError(f"cannot read image {source}: not a readable {source.suffix} file")
        return Job(source, target, kind)
    import decord

    try:
        reader = decord.VideoReader(str(source), ctx=decord.cpu(0))
        frames, fps = len(reader), float(reader.get_avg_fps())
    except Exception as error:  # noqa: BLE001 - decord raises its own error types
        raise InputError(f"cannot read video {source}: {error}") from error
    if frames == 0 or not fps > 0:
        raise InputError(f"cannot read video {source}: {frames} frames at {fps} fps")
    return Job(source, _video_target(target), kind, frames, fps)


def collect_jobs(inputs: Sequence[str | Path], out: str | Path) -> list[Job]:
    """Every file to anonymize with its target under ``out``; raises :class:`InputError` naming
    every input that is missing, unsupported or unreadable (all of them, not just the first)."""
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
            jobs.append(_probe(source, target, _kind(source) or ""))
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
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1]))


def _write_image(path: Path, rgb: Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if path.suffix.lower() in {".jpg", ".jpeg"} else []
    )
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb.numpy()[..., ::-1]), params):
        raise OSError(f"cannot write image {path}")


def _image_batches(jobs: list[Job], batch_size: int) -> Iterator[tuple[list[Job], Tensor]]:
    """Batches of images of one size (in input order within each size)."""
    pending: dict[tuple[int, ...], list[tuple[Job, Tensor]]] = {}
    for job in jobs:
        image = _read_image(job.source)
        group = pending.setdefault(tuple(image.shape), [])
        group.append((job, image))
        if len(group) == batch_size:
            yield [j for j, _ in group], torch.stack([im for _, im in group])
            group.clear()
    for group in pending.values():
        if group:
            yield [j for j, _ in group], torch.stack([im for _, im in group])


def _anonymize_video(
    model: Anonymizer, job: Job, batch_size: int, device: torch.device, progress: tqdm
) -> int:
    import decord

    reader = decord.VideoReader(str(job.source), ctx=decord.cpu(0))
    job.target.parent.mkdir(parents=True, exist_ok=True)
    writer: cv2.VideoWriter | None = None
    written = 0
    try:
        for start in range(0, len(reader), batch_size):
            try:
                frames = reader.get_batch(list(range(start, min(start + batch_size, len(reader)))))
            except Exception as error:  # noqa: BLE001 - decord raises its own error types
                raise InputError(f"cannot decode {job.source} at frame {start}: {error}") from error
            frames = torch.from_numpy(frames.asnumpy())
            out = anonymize_pixels(model, frames.to(device)).cpu().numpy()
            if writer is None:
                fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[job.target.suffix.lower()])
                size = (out.shape[2], out.shape[1])
                writer = cv2.VideoWriter(str(job.target), fourcc, job.fps, size)
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write video {job.target}")
            for frame in out:
                writer.write(np.ascontiguousarray(frame[..., ::-1]))
            written += len(out)
            progress.update(len(out))
    finally:
        if writer is not None:
            writer.release()
    return written


def anonymize_files(
    model: Anonymizer,
    jobs: list[Job],
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> int:
    """Anonymize every job; returns the number of frames (an image is one) written."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    device = torch.device(device)
    total = sum(job.frames for job in jobs)
    done = 0
    with tqdm(total=total, unit="frame", desc="anonymizing", disable=not progress) as bar:
        images = [job for job in jobs if job.kind == "image"]
        for batch_jobs, pixels in _image_batches(images, batch_size):
            anonymized = anonymize_pixels(model, pixels.to(device)).cpu()
            for job, image in zip(batch_jobs, anonymized, strict=True):
                _write_image(job.target, image)
            done += len(batch_jobs)
            bar.update(len(batch_jobs))
        for job in (job for job in jobs if job.kind == "video"):
            done += _anonymize_video(model, job, batch_size, device, bar)
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
    model = load_anonymizer(checkpoint, device) if checkpoint else Anonymizer().eval().to(device)
    with tempfile.TemporaryDirectory() as tmp:
        source = write_test_video(Path(tmp) / "input.avi", seconds, fps, width, height)
        jobs = collect_jobs([source], Path(tmp) / "out")
        start = time.perf_counter()
        frames = anonymize_files(model, jobs, batch_size, device, progress=False)
        end_to_end = time.perf_counter() - start
    pixels = torch.randint(0, 256, (batch_size, height, width, 3), dtype=torch.uint8).to(device)
    anonymize_pixels(model, pixels)  # warm-up
    start, model_frames = time.perf_counter(), 0
    while model_frames < frames:
        anonymize_pixels(model, pixels)
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
        model = load_anonymizer(args.ckpt, args.device)
        jobs = collect_jobs(args.inputs, args.out)
        frames = anonymize_files(model, jobs, args.batch_size, args.device, not args.quiet)
    except (InputError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"anonymized {len(jobs)} files ({frames} frames) into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
