"""Raw vs anonymized samples as W&B media, so a run shows *what* the anonymizer removes.

Numbers (cMAP, top-1) say how much; a picture says whether the face or the skin colour is what
changed. :class:`SampleGridLogger` keeps a few training images and clips from the first batch it
sees and, every ``every_n_steps`` steps and at the end of training, logs one grid per kind with the
rows raw / anonymized / amplified difference through ``WandbLogger.log_image``. The same samples
are used all run long, so successive grids show the anonymizer evolving.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor

from privacy_lit.models.anonymizer import anonymize_pixels


def sample_grid(
    rows: list[Tensor], pad: int = 2, scale: int = 1, pad_value: int = 255
) -> np.ndarray:
    """Equal-length rows of uint8 ``N × H × W × 3`` tiles → one uint8 ``H' × W' × 3`` grid.

    Tiles are separated by ``pad`` pixels of ``pad_value`` and enlarged ``scale`` times (nearest
    neighbour: 64×64 training images are otherwise too small to judge in the W&B UI).
    """
    if not rows or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError(f"expected non-empty rows of equal length, got {[len(r) for r in rows]}")
    tiles = torch.stack([torch.stack(list(row)) for row in rows])  # R × N × H × W × 3
    if tiles.dtype != torch.uint8 or tiles.shape[-1] != 3:
        raise ValueError(f"expected uint8 H×W×3 tiles, got {tiles.dtype} {tuple(tiles.shape)}")
    if scale > 1:
        tiles = tiles.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    n_rows, n_cols, h, w, _ = tiles.shape
    grid = np.full(
        (n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, 3), pad_value, dtype=np.uint8
    )
    for r in range(n_rows):
        for c in range(n_cols):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + h, x : x + w] = tiles[r, c].cpu().numpy()
    return grid


def _difference(raw: Tensor, anonymized: Tensor, gain: float) -> Tensor:
    """|anonymized − raw| × gain as uint8: the demo's changes are a few grey levels."""
    diff = (anonymized.float() - raw.float()).abs().mul(gain)
    return diff.clamp(0, 255).round().to(torch.uint8)


def _even_frames(clip: Tensor, count: int) -> Tensor:
    """``count`` frames spread evenly over a ``T × H × W × 3`` clip (all of them if T ≤ count)."""
    if clip.shape[0] <= count:
        return clip
    index = torch.linspace(0, clip.shape[0] - 1, count).round().long()
    return clip[index]


class SampleGridLogger(L.Callback):
    """Every ``every_n_steps`` training steps: a raw / anonymized grid of images and clip frames.

    Without a :class:`~lightning.pytorch.loggers.WandbLogger` among the trainer's loggers the
    callback does nothing (one info line says so), so a config that lists it still runs with a
    CSV logger only — unless ``require_wandb`` asks for the media, in which case ``fit`` stops at
    set-up with an error that says how to add the logger. Nothing is logged during sanity checks
    or ``fast_dev_run`` (which replaces the loggers).

    Args:
        every_n_steps: logging interval in optimizer steps (``trainer.global_step``).
        num_images: privacy images per grid (columns).
        num_clips: utility clips logged, one grid each (0: no video frames).
        num_frames: frames per clip grid, spread evenly over the clip.
        scale: nearest-neighbour enlargement of every tile.
        difference_gain: the third row shows |anonymized − raw| times this (0: no third row).
        require_wandb: raise at set-up when no WandbLogger is attached instead of skipping.
        key: the W&B media key prefix (``<key>/images``, ``<key>/clip_<i>``).
        anonymizer_attribute: where the LightningModule keeps its anonymizer.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        num_images: int = 4,
        num_clips: int = 1,
        num_frames: int = 8,
        scale: int = 2,
        difference_gain: float = 4.0,
        require_wandb: bool = False,
        key: str = "samples",
        anonymizer_attribute: str = "anonymizer",
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if num_images < 0 or num_clips < 0 or num_frames < 1 or scale < 1:
            raise ValueError(
                "need num_images >= 0, num_clips >= 0, num_frames >= 1 and scale >= 1, got "
                f"{num_images}, {num_clips}, {num_frames}, {scale}"
            )
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self.num_clips = num_clips
        self.num_frames = num_frames
        self.scale = scale
        self.difference_gain = difference_gain
        self.require_wandb = require_wandb
        self.key = key
        self.anonymizer_attribute = anonymizer_attribute
        self.images: Tensor | None = None
        self.clips: Tensor | None = None
        self._loggers: list[WandbLogger] = []
        self._last_logged_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if self._loggers or trainer.fast_dev_run:
            return
        if self.require_wandb:
            raise MisconfigurationException(
                "SampleGridLogger(require_wandb=True) logs W&B media, but the trainer has no "
                f"WandbLogger (loggers: {[type(lg).__name__ for lg in trainer.loggers] or 'none'})."
                " Add `- class_path: lightning.pytorch.loggers.WandbLogger` to `trainer.logger`"
                " (it runs offline without an account), or remove the callback."
            )
        rank_zero_info("SampleGridLogger: no WandbLogger attached, sample grids are not logged")

    @property
    def active(self) -> bool:
        return bool(self._loggers)

    def _capture(self, batch: Any) -> None:
        """Keep the first batch's samples (a copy on the CPU) for the whole run."""
        if not isinstance(batch, dict):
            return
        privacy, utility = batch.get("privacy"), batch.get("utility")
        if isinstance(privacy, dict) and self.num_images and "image" in privacy:
            self.images = privacy["image"][: self.num_images].detach().cpu().clone()
        if isinstance(utility, dict) and self.num_clips and "clip" in utility:
            clips = utility["clip"][: self.num_clips].detach().cpu()
            self.clips = torch.stack([_even_frames(c, self.num_frames) for c in clips])

    def _rows(self, anonymizer: torch.nn.Module, raw: Tensor, device: torch.device) -> list[Tensor]:
        anonymized = anonymize_pixels(anonymizer, raw.to(device)).cpu()
        rows = [raw, anonymized]
        if self.difference_gain > 0:
            rows.append(_difference(raw, anonymized, self.difference_gain))
        return rows

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_logged_step:
            return
        self._last_logged_step = step
        anonymizer = getattr(pl_module, self.anonymizer_attribute)
        caption = "rows: raw, anonymized" + (
            f", |difference| x{self.difference_gain:g}" if self.difference_gain > 0 else ""
        )
        media: dict[str, np.ndarray] = {}
        with torch.no_grad():
            if self.images is not None and len(self.images):
                media[f"{self.key}/images"] = sample_grid(
                    self._rows(anonymizer, self.images, pl_module.device), scale=self.scale
                )
            for i, clip in enumerate(self.clips if self.clips is not None else []):
                media[f"{self.key}/clip_{i}"] = sample_grid(
                    self._rows(anonymizer, clip, pl_module.device), scale=self.scale
                )
        for logger in self._loggers:
            for key, grid in media.items():
                logger.log_image(key=key, images=[grid], step=step, caption=[caption])

    @rank_zero_only
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self.active or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if self.images is None and self.clips is None:
            self._capture(batch)
        if trainer.global_step % self.every_n_steps == 0:
            self._log(trainer, pl_module)

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active and not trainer.fast_dev_run:
            self._log(trainer, pl_module)  # the final anonymizer, whatever the interval
