"""``python -m privacy_lit.bench.data``: how many training clips per second the loader delivers.

By default it writes ``--videos`` HMDB51-like videos (320×240, 96 frames, MPEG-4 part 2 in AVI as
HMDB51's XviD files) to a temporary folder and reads training clips of 16 frames, skip 2, random
U(0.6, 1) crop resized to 112×112 (the prior works' clips) through a DataLoader with
``--workers`` worker processes; the first ``--warmup`` batches (worker start-up) are not timed.
With ``--config`` it measures the config's training utility data instead (``--root`` as in
``data check``)::

    python -m privacy_lit.bench.data                         # generated videos, 2 workers
    python -m privacy_lit.bench.data --config conf/hmdb.yaml --root /datasets --workers 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import DataLoader, Dataset

from privacy_lit.data.base import collate
from privacy_lit.data.video import ClipSpec, VideoClips


def make_videos(
    folder: Path,
    count: int,
    frames: int = 96,
    width: int = 320,
    height: int = 240,
    fourcc: str = "mp4v",
    seed: int = 0,
) -> list[Path]:
    """``count`` videos of moving noise blobs (compressible like real footage, not flat)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in range(count):
        path = folder / f"video_{v:03d}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30, (width, height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write {path} with codec {fourcc}")
        base = cv2.resize(
            rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8),
            (width, height),
            interpolation=cv2.INTER_CUBIC,
        )
        for t in range(frames):
            writer.write(np.roll(base, 3 * t, axis=1))
        writer.release()
        paths.append(path)
    return paths


def measure(
    dataset: Dataset, workers: int, batch_size: int, batches: int, warmup: int = 2
) -> dict[str, float]:
    """Clips per second over ``batches`` timed batches, after ``warmup`` untimed ones."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        drop_last=True,
    )
    iterator = iter(loader)

    def next_batch() -> dict:
        nonlocal iterator
        try:
            return next(iterator)
        except StopIteration:  # fewer clips than warmup + batches: go round again
            iterator = iter(loader)
            return next(iterator)

    for _ in range(warmup):
        next_batch()
    clips, shape, start = 0, None, time.perf_counter()
    for _ in range(batches):
        batch = next_batch()
        clips += len(batch["clip"])
        shape = tuple(batch["clip"].shape[1:])
    seconds = time.perf_counter() - start
    del iterator
    return {"clips": clips, "seconds": seconds, "clips_per_s": clips / seconds, "clip_shape": shape}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m privacy_lit.bench.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="measure this config's training utility data")
    parser.add_argument("--root", help="folder holding the dataset folders (with --config)")
    parser.add_argument("--videos", type=int, default=24, help="generated videos")
    parser.add_argument("--frames", type=int, default=96, help="frames per generated video")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=12, help="timed batches")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.config:
            from privacy_lit.data.check import load_data_module

            module = load_data_module(args.config)
            if args.root:
                module.set_data_dir(args.root)
            dataset = module.utility_dataset("train")
            source = f"{args.config} training utility data ({len(dataset)} clips)"
        else:
            videos = make_videos(Path(tmp), args.videos, args.frames, args.width, args.height)
            spec = ClipSpec(args.num_frames, args.stride, args.size, (0.6, 1.0), hflip=True)
            dataset = VideoClips([(p, 0) for p in videos], spec, train=True)
            source = (
                f"{args.videos} generated {args.width}x{args.height} mp4v AVIs of "
                f"{args.frames} frames"
            )
        result = measure(dataset, args.workers, args.batch_size, args.batches, args.warmup)
    t, h, w, _ = result["clip_shape"]
    print(
        f"{result['clips_per_s']:.1f} clips/s ({result['clips']} clips of {t}x{h}x{w} in "
        f"{result['seconds']:.2f} s; {args.workers} workers, batch {args.batch_size}) from {source}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
