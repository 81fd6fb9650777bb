"""The trained anonymizer as a library: one core that ``anonymize`` (files), ``serve`` (the
OpenAI-compatible privacy proxy) and Python code all call.

    from PIL import Image
    from privacy_lit.deploy import load

    anonymizer = load("RUN/checkpoints/last.ckpt", device="cuda")   # or "cpu"
    safe = anonymizer(Image.open("me.jpg"))        # PIL in, PIL (RGB) out
    safe = anonymizer(pixels)                       # uint8 numpy/tensor ...×H×W×3 in, same out
    safe = anonymizer(batch)                        # float tensor ...×3×H×W in [0, 1], same out
    safe = anonymizer.many([a, b, c])               # images of any sizes, batched by size
    anonymizer.video("clip.mp4", "clip_anonymized.mp4")

Only the anonymizer is read from a :class:`~privacy_lit.system.PrivacySystem` Lightning checkpoint
(its ``anonymizer.*`` weights and the ``anonymizer_widths`` / ``head_hidden`` hyper-parameters):
no black box, no reviewer, no data. The anonymizer is fully convolutional, so any resolution works
down to 2^(levels-1) pixels a side (what its pooling needs; a smaller image is an
:class:`InputError` saying so). A frame larger than ``max_pixels`` is processed in tiles, each
with ``margin`` pixels of context on every side, so memory stays bounded whatever the image size
(an 8000×8000 photo needs the memory of a 512×512 one plus the photo in and out, 2 × 192 MB;
``docs/robustness.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from privacy_lit.models.anonymizer import Anonymizer, UNetTrunk, anonymize_pixels

VIDEO_CODECS = {".avi": "MJPG", ".mkv": "MJPG", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v",
                ".webm": "VP80"}  # fmt: skip
"""Video container → the OpenCV fourcc it is written with."""

Key = TypeVar("Key", bound=Hashable)
Pixels = TypeVar("Pixels", np.ndarray, Tensor, Image.Image)


class InputError(ValueError):
    """An input that cannot be anonymized (missing, unsupported, unreadable); names the input."""


# ----------------------------------------------------------------------------- checkpoints
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


def save_anonymizer(model: Anonymizer, path: str | Path) -> Path:
    """Write ``model`` as the smallest checkpoint :func:`load_anonymizer` reads (the
    ``anonymizer.*`` weights and the two architecture hyper-parameters), e.g. to ship an
    anonymizer without its training state."""
    widths = [block[0].out_channels for block in model.trunk.down]
    pointwise = [
        m for m in model.head.layers if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    ]
    state = {f"anonymizer.{k}": v.cpu() for k, v in model.state_dict().items()}
    hparams = {"anonymizer_widths": widths, "head_hidden": [m.out_channels for m in pointwise[:-1]]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    return path


# ----------------------------------------------------------------------------- the pipeline
class AnonymizerPipeline:
    """A loaded anonymizer applied to pixels the way a user holds them, in batches.

    Every pixel path (PIL, uint8 numpy and tensors, videos, the proxy's requests, the
    ``anonymize`` command's files) ends in :meth:`frames`, so they all compute exactly
    :func:`~privacy_lit.models.anonymizer.anonymize_pixels`.

    Args:
        model: the anonymizer (eval mode is set; its parameters stop requiring gradients).
        device: where it runs; inputs are moved there and results come back to the CPU.
        batch_size: frames per forward pass (memory bound on a GPU, cache bound on a CPU).
        max_pixels: a frame with more pixels is anonymized in tiles: the model's activations
            take ~1 kB a pixel, so a whole 8000×8000 photo would need ~60 GB.
        tile, margin: each tile's side and the context around it (multiples of the model's
            :attr:`min_side`, so the tiles keep the pooling grid of the whole frame). Pixels
            further than ``margin`` from a tile's edge see all of their receptive field, so the
            stitched result is the whole-frame result (up to float rounding).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        max_pixels: int = 1024 * 1024,
        tile: int = 384,
        margin: int = 64,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.batch_size = batch_size
        if tile < 1 or margin < 0 or tile % self.min_side or margin % self.min_side:
            raise ValueError(
                f"tile ({tile}) and margin ({margin}) must be multiples of {self.min_side}"
            )
        self.max_pixels, self.tile, self.margin = max_pixels, tile, margin

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, device: str | torch.device = "cpu", batch_size: int = 16
    ) -> AnonymizerPipeline:
        """See :func:`load_anonymizer`."""
        return cls(load_anonymizer(checkpoint, device), device, batch_size)

    @property
    def min_side(self) -> int:
        """The smallest height and width the model takes: each 2×2 pooling of its UNet trunk
        halves them, and the deepest level needs at least one pixel."""
        trunk = getattr(self.model, "trunk", None)
        return 2 ** (len(trunk.down) - 1) if isinstance(trunk, UNetTrunk) else 1

    # ------------------------------------------------------------------ pixels
    def frames(self, pixels: Tensor) -> Tensor:
        """uint8 ``N × H × W × 3`` frames of one size → anonymized uint8 frames, on the CPU."""
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 frames N×H×W×3, got {pixels.dtype} {tuple(pixels.shape)}"
            )
        if len(pixels) == 0:
            return pixels.clone()
        height, width = pixels.shape[1:3]
        if min(height, width) < self.min_side:
            raise InputError(
                f"cannot anonymize {width}×{height} px frames: the anonymizer needs at least "
                f"{self.min_side} px a side"
            )
        if height * width > self.max_pixels:
            out = torch.empty_like(pixels)
            for frame, into in zip(pixels, out, strict=True):
                self._tiled(frame, into)
            return out
        chunks = pixels.split(self.batch_size)
        return torch.cat([anonymize_pixels(self.model, c.to(self.device)).cpu() for c in chunks])

    def _tiled(self, frame: Tensor, out: Tensor) -> None:
        """One large ``H × W × 3`` frame into ``out``, ``tile`` × ``tile`` at a time with
        ``margin`` px of context (memory: one tile's activations, and the frame in and out)."""
        height, width = frame.shape[:2]
        tile, margin = self.tile, self.margin
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                bottom, right = min(top + tile, height), min(left + tile, width)
                y0, x0 = max(0, top - margin), max(0, left - margin)
                y1, x1 = min(height, bottom + margin), min(width, right + margin)
                piece = frame[y0:y1, x0:x1].unsqueeze(0).to(self.device)
                done = anonymize_pixels(self.model, piece)[0].cpu()
                out[top:bottom, left:right] = done[top - y0 : bottom - y0, left - x0 : right - x0]

    def batched(self, items: Iterable[tuple[Key, Tensor]]) -> Iterator[tuple[list[Key], Tensor]]:
        """Anonymize uint8 ``H × W × 3`` images of any sizes, ``batch_size`` of one size at a time.

        ``items`` is read lazily (a folder of photos is not held in memory): a batch is run as
        soon as ``batch_size`` images of one size have arrived, the rest at the end. Yields the
        keys of each batch with its anonymized images, in completion order.
        """
        pending: dict[tuple[int, ...], list[tuple[Key, Tensor]]] = {}
        for key, image in items:
            group = pending.setdefault(tuple(image.shape), [])
            group.append((key, image))
            if len(group) == self.batch_size:
                yield self._run(group)
                group.clear()
        for group in pending.values():
            if group:
                yield self._run(group)

    def _run(self, group: list[tuple[Key, Tensor]]) -> tuple[list[Key], Tensor]:
        # one image is not copied into a batch: a large photo is held once, not twice
        images = group[0][1].unsqueeze(0) if len(group) == 1 else torch.stack([i for _, i in group])
        return [key for key, _ in group], self.frames(images)

    def many(self, images: Sequence[Pixels]) -> list[Pixels]:
        """Several images of any sizes (PIL, uint8 numpy or tensor ``H × W × 3``), batched by size;
        returned in input order, each as the type it came in."""
        converted = [_as_pixels(image) for image in images]
        outputs: dict[int, Tensor] = {}
        for keys, anonymized in self.batched((i, p) for i, (p, _) in enumerate(converted)):
            outputs.update(zip(keys, anonymized, strict=True))
        return [restore(outputs[i]) for i, (_, restore) in enumerate(converted)]

    @overload
    def __call__(self, x: Image.Image) -> Image.Image: ...
    @overload
    def __call__(self, x: np.ndarray) -> np.ndarray: ...
    @overload
    def __call__(self, x: Tensor) -> Tensor: ...
    def __call__(self, x: Any) -> Any:
        """One image or a batch: a PIL image; uint8 numpy or tensor ``... × H × W × 3`` pixels;
        or a float tensor ``... × 3 × H × W`` in [0, 1], which goes through the model as it is
        (no rounding to pixels; for gradients call ``self.model`` itself)."""
        if isinstance(x, Tensor) and x.is_floating_point():
            flat = x.reshape(-1, *x.shape[-3:])
            with torch.no_grad():
                out = [self.model(chunk.to(self.device)) for chunk in flat.split(self.batch_size)]
            return torch.cat(out).reshape(x.shape).to(x.device, x.dtype)
        pixels, restore = _as_pixels(x, batched=True)
        flat = pixels.reshape(-1, *pixels.shape[-3:])
        return restore(self.frames(flat).reshape(pixels.shape))

    # ------------------------------------------------------------------ videos
    def video(
        self,
        source: str | Path,
        target: str | Path,
        on_frames: Callable[[int], object] | None = None,
    ) -> int:
        """Anonymize a video file into ``target`` (same frame rate, size and frame count; its
        container, one of :data:`VIDEO_CODECS`, picks the codec; audio is not copied). Frames
        are decoded with decord ``batch_size`` at a time. ``on_frames(n)`` is called after each
        batch (a progress bar). Returns the number of frames written."""
        import decord

        source, target = Path(source), Path(target)
        suffix = target.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise InputError(
                f"cannot write video {target}: use one of {', '.join(sorted(VIDEO_CODECS))}"
            )
        try:
            reader = decord.VideoReader(str(source), ctx=decord.cpu(0))
            fps = float(reader.get_avg_fps())
        except Exception as error:  # noqa: BLE001 - decord raises its own error types
            raise InputError(f"cannot read video {source}: {error}") from error
        target.parent.mkdir(parents=True, exist_ok=True)
        writer: cv2.VideoWriter | None = None
        written = 0
        try:
            for start in range(0, len(reader), self.batch_size):
                indices = list(range(start, min(start + self.batch_size, len(reader))))
                try:
                    frames = torch.from_numpy(reader.get_batch(indices).asnumpy())
                except Exception as error:  # noqa: BLE001 - decord raises its own error types
                    raise InputError(f"cannot decode {source} at frame {start}: {error}") from error
                out = self.frames(frames).numpy()
                if writer is None:
                    fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[suffix])
                    writer = cv2.VideoWriter(str(target), fourcc, fps, (out.shape[2], out.shape[1]))
                    if not writer.isOpened():
                        raise OSError(f"OpenCV cannot write video {target}")
                for frame in out:
                    writer.write(np.ascontiguousarray(frame[..., ::-1]))
                written += len(out)
                if on_frames is not None:
                    on_frames(len(out))
        finally:
            if writer is not None:
                writer.release()
        return written


def load(
    checkpoint: str | Path, device: str | torch.device = "cpu", batch_size: int = 16
) -> AnonymizerPipeline:
    """The anonymizer of a PrivacySystem checkpoint, ready to apply (see the module docstring)."""
    return AnonymizerPipeline.from_checkpoint(checkpoint, device, batch_size)


def _as_pixels(x: Any, batched: bool = False) -> tuple[Tensor, Callable[[Tensor], Any]]:
    """``x`` as uint8 ``... × H × W × 3`` CPU pixels, and how to turn the output back into x's
    type (and device)."""
    if isinstance(x, Image.Image):
        return torch.from_numpy(np.asarray(x.convert("RGB")).copy()), _to_pil
    if isinstance(x, np.ndarray):
        pixels, restore = torch.from_numpy(np.ascontiguousarray(x)), _to_numpy
    elif isinstance(x, Tensor):
        pixels, restore = x.detach().cpu(), lambda out: out.to(x.device)
    else:
        raise TypeError(
            f"expected a PIL image, a numpy array or a torch tensor, got {type(x).__name__}"
        )
    if pixels.dtype != torch.uint8 or pixels.shape[-1:] != (3,) or pixels.ndim < 3:
        raise ValueError(
            f"expected uint8 RGB pixels {'... × ' if batched else ''}H × W × 3, got "
            f"{pixels.dtype} {tuple(pixels.shape)} (float tensors are taken as ... × 3 × H × W)"
        )
    if not batched and pixels.ndim != 3:
        raise ValueError(f"expected one H × W × 3 image, got {tuple(pixels.shape)}")
    return pixels, restore


def _to_pil(out: Tensor) -> Image.Image:
    return Image.fromarray(out.numpy(), "RGB")


def _to_numpy(out: Tensor) -> np.ndarray:
    return out.numpy()
