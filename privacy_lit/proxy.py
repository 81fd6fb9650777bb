"""Local differentiable proxies of the black box's utility: the prior of prior-guided estimators.

A proxy is a model *we* run, whose utility loss on the anonymized frames is differentiable; its
gradient with respect to the anonymizer head is the direction a prior-guided estimator
(:class:`~privacy_lit.zo.estimators.PriorGuided`) measures the black box along. It never sees the
black box's internals, weights or answers: a proxy that disagrees with the black box is found out
by the measurement and costs two queries per step.

- :class:`RecognizerProxy`: an action recognizer trained on the raw training clips, by default
  the TSM-style family the surrogate comparison trains (:mod:`privacy_lit.baselines.surrogate`,
  the same function and the same configuration), a model family apart from the embedded 3-D CNN
  black box;
- :class:`CLIPZeroShotProxy`: for real MLLMs, a CLIP-style model loaded by Hugging Face id that
  scores the class names against the frames zero-shot (no training).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class UtilityProxy(ABC):
    """A differentiable utility loss of anonymized frames, prepared once per run.

    Not an ``nn.Module`` of the system on purpose: its weights are not part of the anonymizer's
    checkpoint (they are rebuilt from the configuration), and they are never trained by its step.
    """

    @abstractmethod
    def prepare(self, datamodule: Any, device: torch.device) -> None:
        """Build or train the model (once), on ``device``."""

    @abstractmethod
    def loss(self, frames: Tensor, utility: dict[str, Any]) -> Tensor:
        """Scalar loss of anonymized float frames ``B × T × 3 × H × W`` in [0, 1] for the batch's
        utility labels (differentiable with respect to ``frames``)."""


def _actions(utility: dict[str, Any], proxy: str) -> Tensor:
    if "action" not in utility:
        raise ValueError(f"{proxy} scores action labels; this batch has {sorted(utility)}")
    return utility["action"]


class RecognizerProxy(UtilityProxy):
    """An action recognizer trained with cross-entropy on the raw training clips.

    Args: ``family`` … ``seed`` as :class:`~privacy_lit.baselines.surrogate.SurrogateConfig` (the
    defaults are its defaults, so on the embedded benchmark the proxy is the surrogate
    comparison's recognizer). ``cache_dir``: keep the trained weights there, under a key of
    everything they depend on (the configuration, the class names and the training clips' bytes),
    so runs that share them train the proxy once.
    """

    def __init__(
        self, family: str = "tsm", epochs: int = 24, width: int = 8, lr: float = 3e-3,
        batch_size: int = 16, seed: int = 1, cache_dir: str | None = None,
    ):  # fmt: skip
        from privacy_lit.baselines.surrogate import SurrogateConfig

        self.config = SurrogateConfig(family, epochs, width, lr, batch_size, seed)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.model: nn.Module | None = None

    def prepare(self, datamodule: Any, device: torch.device) -> None:
        if self.model is None:
            from privacy_lit.baselines.surrogate import RECOGNIZER_FAMILIES, train_recognizer_on_raw
            from privacy_lit.evaluation import stack_dataset

            clips, actions = stack_dataset(datamodule.utility_dataset("train"), "clip", "action")
            classes = list(datamodule.class_names)
            cached = None if self.cache_dir is None else self._cache_path(clips, actions, classes)
            if cached is not None and cached.is_file():
                c = self.config
                model = RECOGNIZER_FAMILIES[c.family](len(classes), width=c.width)
                model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
            else:
                model = train_recognizer_on_raw(clips, actions, len(classes), self.config,
                                                desc="proxy recognizer")  # fmt: skip
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    tmp = cached.with_suffix(".tmp")
                    torch.save(model.state_dict(), tmp)
                    tmp.replace(cached)  # atomic: a crash never leaves half a cache entry
            self.model = model.eval().requires_grad_(False)
        self.model.to(device)

    def _cache_path(self, clips: Tensor, actions: Tensor, classes: list[str]) -> Path:
        key = hashlib.sha256(repr((asdict(self.config), classes)).encode())
        key.update(clips.numpy().tobytes())
        key.update(actions.numpy().tobytes())
        return self.cache_dir / f"proxy_{self.config.family}_{key.hexdigest()[:16]}.pt"

    def loss(self, frames: Tensor, utility: dict[str, Any]) -> Tensor:
        if self.model is None:
            raise RuntimeError("RecognizerProxy.prepare must run before loss")
        logits = self.model(frames.transpose(1, 2))  # B × 3 × T × H × W
        return F.cross_entropy(logits, _actions(utility, "RecognizerProxy"))


class CLIPZeroShotProxy(UtilityProxy):
    """Zero-shot scores of the class names from a CLIP-style model (``transformers``).

    The video's embedding is the mean of its frames' image embeddings; the logits are the
    model's scaled cosine similarities with ``template.format(class name)``; the loss is their
    cross-entropy with the action label.

    Args:
        model: a Hugging Face hub id or local folder with a ``CLIPModel`` and its processor.
        template: the text each class name is put in.
        max_frames: frames per clip sent through the image tower (uniformly spaced).
    """

    def __init__(
        self,
        model: str = "openai/clip-vit-base-patch32",
        template: str = "a video of a person {}.",
        max_frames: int = 4,
    ):
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.model_name, self.template, self.max_frames = model, template, max_frames
        self.model: nn.Module | None = None
        self.text_embeddings: Tensor | None = None
        self.mean = self.std = None
        self.size = 224

    def prepare(self, datamodule: Any, device: torch.device) -> None:
        from transformers import AutoProcessor, CLIPModel

        if self.model is None:
            processor = AutoProcessor.from_pretrained(self.model_name)
            model = CLIPModel.from_pretrained(self.model_name).eval().requires_grad_(False)
            prompts = [self.template.format(name) for name in datamodule.class_names]
            tokens = processor.tokenizer(prompts, padding=True, return_tensors="pt")
            with torch.no_grad():
                text = model.get_text_features(**tokens)
            self.text_embeddings = F.normalize(_features(text), dim=-1)
            image = processor.image_processor
            self.mean = torch.tensor(image.image_mean).view(1, 3, 1, 1)
            self.std = torch.tensor(image.image_std).view(1, 3, 1, 1)
            crop = getattr(image, "crop_size", None) or {}
            self.size = int(crop.get("height", model.config.vision_config.image_size))
            self.model = model
        self.model.to(device)
        self.text_embeddings = self.text_embeddings.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)

    def loss(self, frames: Tensor, utility: dict[str, Any]) -> Tensor:
        if self.model is None:
            raise RuntimeError("CLIPZeroShotProxy.prepare must run before loss")
        b, t = frames.shape[:2]
        index = torch.linspace(0, t - 1, min(t, self.max_frames)).round().long()
        x = frames[:, index].flatten(0, 1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        image = self.model.get_image_features(pixel_values=(x - self.mean) / self.std)
        video = F.normalize(_features(image).view(b, len(index), -1).mean(dim=1), dim=-1)
        logits = self.model.logit_scale.exp() * video @ self.text_embeddings.T
        return F.cross_entropy(logits, _actions(utility, "CLIPZeroShotProxy"))


def _features(output: Any) -> Tensor:
    """``get_*_features`` return a tensor, or (in newer transformers) an output with pooled
    embeddings."""
    if isinstance(output, Tensor):
        return output
    return output.pooler_output
