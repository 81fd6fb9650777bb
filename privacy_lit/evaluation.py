"""The evaluation protocol: black-box utility on anonymized test data, and privacy measured by a
*fresh* reviewer trained on anonymized training images (the protocol of the prior works).

Raw data and heuristic baselines go through exactly the same code as the trained anonymizer, so
the rows of a results table are comparable. Each fresh reviewer starts from the same seed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision
from tqdm import tqdm

from privacy_lit.mllm.base import BlackBoxMLLM, Request
from privacy_lit.models.anonymizer import anonymize_pixels, to_float
from privacy_lit.models.reviewer import build_reviewer
from privacy_lit.utility.retrieval import RetrievalScorer


@dataclass
class Row:
    """One line of the results table."""

    method: str
    top1: float
    cmap: float
    mllm_calls_per_sample: float = 0.0


def _apply(anonymizer: nn.Module, frames: Tensor, batch: int = 256) -> Tensor:
    """uint8 ``N × ... × H × W × 3`` → anonymized uint8 pixels, in chunks of ``batch`` samples."""
    return torch.cat([anonymize_pixels(anonymizer, chunk) for chunk in frames.split(batch)])


def _stack(dataset: Dataset, key: str, label: str) -> tuple[Tensor, Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it[key] for it in items]), torch.stack([it[label] for it in items])


def utility_top1(
    anonymizer: nn.Module, clips: Tensor, actions: Tensor, mllm: BlackBoxMLLM,
    scorer: RetrievalScorer, prompt: str, batch: int = 32,
) -> float:  # fmt: skip
    """Top-1 of the black box's retrieved answers on anonymized clips."""
    metric = MulticlassAccuracy(len(scorer.class_texts), average="micro")
    mllm.stage = "test"
    for chunk, target in zip(clips.split(batch), actions.split(batch), strict=True):
        frames = anonymize_pixels(anonymizer, chunk)
        answers = mllm.answer([Request(c, prompt) for c in frames])
        metric.update(scorer.predict([a.text for a in answers]), target)
    mllm.stage = "train"
    return float(metric.compute())


def fresh_reviewer_cmap(
    train_images: Tensor, train_labels: Tensor, test_images: Tensor, test_labels: Tensor,
    arch: str, epochs: int, seed: int, lr: float = 1e-3, batch: int = 64, desc: str = "",
) -> float:  # fmt: skip
    """Train a new reviewer on (anonymized) training images; macro cMAP on the test images."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    reviewer = build_reviewer(arch, train_labels.shape[1])
    optimizer = torch.optim.Adam(reviewer.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(train_images, train_labels), batch_size=batch, shuffle=True,
                        drop_last=True, generator=generator)  # fmt: skip
    reviewer.train()
    for _ in tqdm(range(epochs), desc=f"fresh reviewer {desc}", unit="epoch", leave=False):
        for images, labels in loader:
            x = to_float(images)
            loss = F.binary_cross_entropy_with_logits(reviewer(x), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    reviewer.eval()
    metric = MultilabelAveragePrecision(test_labels.shape[1], average="macro")
    with torch.no_grad():
        for images, labels in zip(test_images.split(256), test_labels.split(256), strict=True):
            x = to_float(images)
            metric.update(torch.sigmoid(reviewer(x)), labels.long())
    return float(metric.compute())


def evaluate(
    anonymizers: dict[str, nn.Module],
    datamodule,
    mllm: BlackBoxMLLM,
    scorer: RetrievalScorer,
    prompt: str,
    reviewer_arch: str,
    reviewer_epochs: int,
    seed: int = 0,
    calls_per_sample: dict[str, float] | None = None,
    progress: Callable[[str], None] = print,
) -> list[Row]:
    """Run the protocol for every anonymizer; returns one :class:`Row` each."""
    clips, actions = _stack(datamodule.utility_dataset("test"), "clip", "action")
    train_images, train_labels = _stack(datamodule.privacy_dataset("train"), "image", "attributes")
    test_images, test_labels = _stack(datamodule.privacy_dataset("test"), "image", "attributes")
    rows = []
    for name, anonymizer in anonymizers.items():
        anonymizer = anonymizer.eval()
        top1 = utility_top1(anonymizer, clips, actions, mllm, scorer, prompt)
        cmap = fresh_reviewer_cmap(
            _apply(anonymizer, train_images), train_labels, _apply(anonymizer, test_images),
            test_labels, reviewer_arch, reviewer_epochs, seed, desc=name,
        )  # fmt: skip
        rows.append(Row(name, top1, cmap, (calls_per_sample or {}).get(name, 0.0)))
        progress(f"evaluated {name}: top-1 {100 * top1:.1f}, cMAP {100 * cmap:.1f}")
    return rows


def format_table(rows: list[Row]) -> str:
    """A Markdown table in the paper's style (utility ↑, privacy ↓, black-box calls per sample)."""
    lines = ["| method | top-1 (%) ↑ | cMAP (%) ↓ | MLLM calls / sample |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r.method} | {100 * r.top1:.1f} | {100 * r.cmap:.1f} "
            f"| {r.mllm_calls_per_sample:.1f} |"
        )
    return "\n".join(lines)


def write_results(rows: list[Row], path: Path, extra: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"rows": [asdict(r) for r in rows], **(extra or {})}
    path.write_text(json.dumps(payload, indent=2))
