"""The embedded black box: a frozen clip recognizer that *talks* like an MLLM.

It stands in for Video-LLaVA on the embedded benchmark so the whole method runs on a laptop CPU:
trained once on the synthetic training split (cached next to the data, retrained only when the
cache is missing), it answers every request with free text from several paraphrase templates —
confident ("The person seems to be waving a hand."), hedged between its two best guesses, or
unsure — and never exposes logits or gradients. The training step must turn that text into a loss
exactly as it would for a real MLLM (:mod:`privacy_lit.utility.retrieval`).

Like a real MLLM decoding greedily, the wording is a *locally stable* function of what the model
believes: the template is chosen from the recognized classes and a coarse confidence level, so an
imperceptible change of the pixels changes the sentence only when the belief crosses a level.
Answers still vary in wording across classes and confidence levels. Sampling noise — the class
drawn at a temperature, seeded per query — is an explicit, harder option (``temperature > 0``).
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from privacy_lit.data.hmdb51 import HMDB51Clips
from privacy_lit.mllm.base import Answer, BlackBoxMLLM, Request
from privacy_lit.models.recognizer import ClipRecognizer

CONFIDENT = (
    "The person seems to be {a}.",
    "In this video, someone is {a}.",
    "It looks like a person {a}.",
    "The video shows a person who is {a}.",
)
HEDGED = (
    "It is hard to tell; maybe {a}, or perhaps {b}.",
    "The person might be {a} or {b}.",
)
STANDIN_VERSION = 2
"""Bumped whenever the recognizer or its training changes: an older cache is retrained."""

UNSURE = ("I am not sure what the person is doing.", "The video is unclear to me.")


class EmbeddedActionMLLM(BlackBoxMLLM):
    """Free-text answers from a frozen recognizer of ``classes`` (label order) → ``phrases``."""

    def __init__(
        self,
        data_root: str = "data/synthetic",
        checkpoint: str = "data/synthetic/standin_recognizer.pt",
        phrases: dict[str, str] | None = None,
        confident_above: float = 0.6,
        unsure_below: float = 0.3,
        train_epochs: int = 24,
        seed: int = 0,
        temperature: float = 0.0,
        confidence_levels: int = 4,
    ):
        super().__init__()
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
        if confidence_levels < 1:
            raise ValueError(f"confidence_levels must be >= 1, got {confidence_levels}")
        from privacy_lit.data.synthetic import ACTION_PHRASES

        self.data_root, self.checkpoint = Path(data_root), Path(checkpoint)
        self.phrases = dict(phrases or ACTION_PHRASES)
        self.classes = sorted(self.phrases)
        self.confident_above, self.unsure_below = confident_above, unsure_below
        self.train_epochs, self.seed = train_epochs, seed
        self.temperature, self.confidence_levels = temperature, confidence_levels
        self._model: ClipRecognizer | None = None

    def prepare(self) -> None:
        if self._model is not None:
            return
        if not self.checkpoint.is_file() or _cached_version(self.checkpoint) != STANDIN_VERSION:
            train_recognizer(
                self.data_root, self.checkpoint, self.classes, self.train_epochs, self.seed
            )
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        if state["classes"] != self.classes:
            raise ValueError(
                f"{self.checkpoint} was trained on classes {state['classes']}, expected "
                f"{self.classes}; delete it to retrain"
            )
        model = ClipRecognizer(len(self.classes))
        model.load_state_dict(state["model"])
        self._model = model.eval().requires_grad_(False)

    def cache_identity(self) -> dict[str, object]:
        """The answers depend on the recognizer's weights and the wording settings: a retrained
        stand-in must not be served another one's answers
        (or rows, :mod:`privacy_lit.row_cache`)."""
        self.prepare()
        return {
            **super().cache_identity(), "version": STANDIN_VERSION,
            "weights": hashlib.sha256(self.checkpoint.read_bytes()).hexdigest(),
            "phrases": self.phrases, "confident_above": self.confident_above,
            "unsure_below": self.unsure_below, "temperature": self.temperature,
            "confidence_levels": self.confidence_levels,
        }  # fmt: skip

    @property
    def recognizer(self) -> ClipRecognizer:
        """The frozen model behind the answers. Training never touches it (the black box is
        reached through :meth:`answer` only); ``bench zo`` uses it for the white-box gradient
        every zeroth-order estimate is measured against."""
        self.prepare()
        assert self._model is not None
        return self._model

    @torch.inference_mode()
    def _answer(self, requests: list[Request]) -> list[Answer]:
        self.prepare()
        assert self._model is not None
        clips = torch.stack([r.visual for r in requests])
        probs = F.softmax(self._model(clips_to_input(clips)), dim=-1)
        return [self._phrase(p, r.visual) for p, r in zip(probs, requests, strict=True)]

    def _phrase(self, probs: Tensor, visual: Tensor) -> Answer:
        if self.temperature > 0:
            probs = self._sampled(probs, visual)
        top2 = torch.topk(probs, 2)
        first = self.phrases[self.classes[int(top2.indices[0])]]
        second = self.phrases[self.classes[int(top2.indices[1])]]
        confidence = float(top2.values[0])
        # The wording depends on the belief only (classes and a coarse confidence level), never on
        # the exact pixels: greedy decoding says the same thing about near-identical inputs.
        level = min(int(confidence * self.confidence_levels), self.confidence_levels - 1)
        pick = zlib.crc32(f"{first}|{second}|{level}".encode())
        if confidence >= self.confident_above:
            text = CONFIDENT[pick % len(CONFIDENT)].format(a=first)
        elif confidence >= self.unsure_below:
            text = HEDGED[pick % len(HEDGED)].format(a=first, b=second)
        else:
            text = UNSURE[pick % len(UNSURE)]
        return Answer(text)

    def _sampled(self, probs: Tensor, visual: Tensor) -> Tensor:
        """Sampling at ``temperature``: the answered class is drawn from p^(1/T), seeded by the
        query's pixels (the same input gets the same answer, any change of a pixel redraws)."""
        generator = torch.Generator().manual_seed(zlib.crc32(visual.numpy().tobytes()))
        tempered = F.softmax(probs.clamp_min(1e-12).log() / self.temperature, dim=-1)
        drawn = int(torch.multinomial(tempered, 1, generator=generator))
        top = int(tempered.argmax())
        swapped = tempered.clone()  # the drawn class is said with the top probability
        swapped[drawn], swapped[top] = tempered[top], tempered[drawn]
        return swapped


def _cached_version(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True).get("version", 1))


def clips_to_input(clips: Tensor) -> Tensor:
    """uint8 ``B × T × H × W × 3`` → float ``B × 3 × T × H × W`` in [0, 1]."""
    return clips.permute(0, 4, 1, 2, 3).float().div(255)


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Appearance augmentations, so the recognizer — like an MLLM — reads actions from motion and
    shape and is indifferent to colour: random channel order, grey-scale, per-channel gain (tints,
    down to a nearly flat channel), contrast, brightness, noise, uint8 quantization and horizontal
    flips (every synthetic action is left–right symmetric in meaning)."""
    b = x.shape[0]

    def coin(p: float) -> Tensor:
        return torch.rand(b, generator=generator) < p

    perm = torch.stack([torch.randperm(3, generator=generator) for _ in range(b)])
    x = torch.stack([x[i, perm[i]] for i in range(b)])
    gray = x.mean(dim=1, keepdim=True).expand_as(x)
    x = torch.where(coin(0.3).view(b, 1, 1, 1, 1), gray, x)
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
    contrast = 0.15 + 1.2 * torch.rand(b, 1, 1, 1, 1, generator=generator)
    x = (x - mean) * contrast + mean + 0.2 * (torch.rand(b, 1, 1, 1, 1, generator=generator) - 0.5)
    gain = 0.05 + torch.rand(b, 3, 1, 1, 1, generator=generator)
    x = torch.where(coin(0.5).view(b, 1, 1, 1, 1), x * gain, x)
    x = x + 0.03 * torch.rand(b, 1, 1, 1, 1, generator=generator) * torch.randn(
        x.shape, generator=generator
    )
    x = torch.where(coin(0.5).view(b, 1, 1, 1, 1), x.flip(-1), x)
    return x.clamp(0, 1).mul(255).round().div(255)  # what an upload can carry


def train_recognizer(
    data_root: Path, checkpoint: Path, classes: list[str], epochs: int, seed: int
) -> None:
    """Train the stand-in once on the raw synthetic training split and save it to ``checkpoint``.

    Runs in a forked torch RNG: training it on first use must not move the random state of the
    run that asked for it, or a run that trains the stand-in and one that finds it cached would
    initialize and shuffle differently and give different figures for the same seed.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        _train_recognizer(data_root, checkpoint, classes, epochs, seed)


def _train_recognizer(
    data_root: Path, checkpoint: Path, classes: list[str], epochs: int, seed: int
) -> None:
    dataset = HMDB51Clips(
        data_root / "hmdb51", data_root / "testTrainMulti_7030_splits", 1, "train",
        num_frames=8, stride=2, size=None, random_start=True, seed=seed,
    )  # fmt: skip
    if dataset.classes != classes:
        raise ValueError(f"{data_root} has actions {dataset.classes}, expected {classes}")
    loader = DataLoader(dataset, batch_size=16, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    model = ClipRecognizer(len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 3e-3, total_steps=epochs * len(loader)
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(epochs), desc="stand-in black box: training once", unit="epoch")
    for epoch in bar:
        dataset.epoch = epoch
        for batch in loader:
            loss = F.cross_entropy(model(_augment(clips_to_input(batch["clip"]), generator)),
                                   batch["action"])  # fmt: skip
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    tmp = checkpoint.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "classes": classes, "version": STANDIN_VERSION}, tmp)
    tmp.replace(checkpoint)  # atomic: a crash never leaves a half-written cache
