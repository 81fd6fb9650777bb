"""The evaluation protocol: black-box utility on anonymized test data, and privacy measured by a
*fresh* reviewer trained on anonymized training images (the protocol of the prior works).

- Utility: the black box answers every anonymized test clip; the answers are retrieved to a
  class and scored with :class:`~privacy_lit.metrics.ActionTop1` (micro top-1, Tab. 1–2) ↑. On
  VQA data (``utility_task == "vqa"``) it answers each anonymized test image's question and the
  answers get the official VQA accuracy (:class:`~privacy_lit.metrics.VQAAccuracy`, Tab. 3–4) ↑,
  reported in the same ``top1`` field with ``utility_metric = "vqa_accuracy"``.
- Privacy: a new reviewer (same seed for every row) is trained on the anonymized training images
  of :meth:`reviewer_dataset` and scored on the anonymized test images with
  :class:`~privacy_lit.metrics.ClasswiseMAP` (cMAP, macro AP over attributes) ↓ and
  :class:`~privacy_lit.metrics.PerAttributePrecision` (Tab. B11, at 0.5) ↓.

Raw data, the heuristic baselines and the trained anonymizers go through exactly the same code,
so the rows of a results table are comparable. ``results.json`` keeps the fields it always had
(``method``, ``top1``, ``cmap``, ``mllm_calls_per_sample``); newer fields are only added.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from privacy_lit.metrics import ActionTop1, ClasswiseMAP, PerAttributePrecision, VQAAccuracy
from privacy_lit.mllm.base import BlackBoxMLLM, Request
from privacy_lit.models.anonymizer import anonymize_pixels, to_float
from privacy_lit.models.reviewer import build_reviewer
from privacy_lit.row_cache import RowCache, tensor_digest
from privacy_lit.utility.retrieval import RetrievalScorer


@dataclass
class Row:
    """One line of the results table.

    ``top1`` is the utility figure: action top-1, or VQA accuracy where ``utility_metric`` says
    ``"vqa_accuracy"``. ``attribute_precision`` is Tab. B11's per-attribute precision
    ``{attribute id: P}`` of the fresh reviewer (empty in results files written before it existed).
    """

    method: str
    top1: float
    cmap: float
    mllm_calls_per_sample: float = 0.0
    attribute_precision: dict[str, float] = field(default_factory=dict)
    utility_metric: str = "top1"

    @classmethod
    def from_dict(cls, data: dict) -> Row:
        """A row from ``results.json`` (older files lack the newer fields; unknown keys are
        ignored, so a newer file still reads)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class PrivacyScores:
    """What the fresh reviewer of one row measured."""

    cmap: float
    attribute_precision: dict[str, float]


def _apply(anonymizer: nn.Module, frames: Tensor, batch: int = 256) -> Tensor:
    """uint8 ``N × ... × H × W × 3`` → anonymized uint8 pixels, in chunks of ``batch`` samples."""
    return torch.cat([anonymize_pixels(anonymizer, chunk) for chunk in frames.split(batch)])


def all_samples(dataset: Dataset) -> list[dict]:
    """Every sample of ``dataset``; an empty one is refused, naming it (and its folder)."""
    items = [dataset[i] for i in range(len(dataset))]
    if not items:
        where = getattr(dataset, "root", None)
        name = type(dataset).__name__ + ("" if where is None else f" at {where}")
        raise ValueError(f"{name} is empty: nothing to evaluate")
    return items


def stack_dataset(dataset: Dataset, key: str, label: str) -> tuple[Tensor, Tensor]:
    """Every sample's ``key`` and ``label`` tensors, stacked: for the privacy images (small at
    112 px); the utility test clips are streamed instead (:func:`sample_batches`)."""
    items = all_samples(dataset)
    return torch.stack([it[key] for it in items]), torch.stack([it[label] for it in items])


def sample_batches(dataset: Dataset, batch: int = 32, num_workers: int = 0) -> Iterator[list[dict]]:
    """The samples of ``dataset`` in order, ``batch`` at a time, as lists of sample dicts: the
    utility test set is streamed, never held whole (UCF101's test clips are ~2.3 GB as uint8)."""
    if len(dataset) == 0:
        all_samples(dataset)  # raises, naming the dataset
    yield from DataLoader(dataset, batch_size=batch, num_workers=num_workers, collate_fn=list)


def utility_top1(
    anonymizer: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], mllm: BlackBoxMLLM,
    scorer: RetrievalScorer, prompt: str,
) -> float:  # fmt: skip
    """Top-1 of the black box's retrieved answers on anonymized clips, from batches of (uint8
    clips, action labels); refusals count wrong."""
    metric = ActionTop1(len(scorer.class_texts))
    with mllm.counting_as("test"):
        for clips, target in batches:
            frames = anonymize_pixels(anonymizer, clips)
            answers = mllm.answer([Request(c, prompt) for c in frames])
            metric.update(scorer.predict([a.text for a in answers]), target)
    return float(metric.compute())


def utility_vqa_accuracy(
    anonymizer: nn.Module, batches: Iterable[tuple[Tensor, Sequence[str], Sequence[Sequence[str]]]],
    mllm: BlackBoxMLLM, prompt: str,
) -> float:  # fmt: skip
    """VQA accuracy (official rule) of the black box's answers on anonymized images, from batches
    of (uint8 images, questions, human answers); ``{question}`` in ``prompt`` is replaced by each
    question, as in training."""
    metric = VQAAccuracy(num_answers=None)
    with mllm.counting_as("test"):
        for images, questions, answers in batches:
            frames = anonymize_pixels(anonymizer, images)
            replies = mllm.answer(
                [
                    Request(f, prompt.format(question=q))
                    for f, q in zip(frames, questions, strict=True)
                ]
            )
            metric.update([a.text for a in replies], [list(a) for a in answers])
    return float(metric.compute())


def fresh_reviewer_scores(
    train_images: Tensor, train_labels: Tensor, test_images: Tensor, test_labels: Tensor,
    arch: str, epochs: int, seed: int, lr: float = 1e-3, batch: int = 64, desc: str = "",
    names: Sequence[str] | None = None, threshold: float = 0.5,
) -> PrivacyScores:  # fmt: skip
    """Train a new reviewer on (anonymized) training images; cMAP and per-attribute precision of
    its scores on the (anonymized) test images.

    cMAP leaves out attributes without a positive test image (with a warning naming them; see
    :func:`~privacy_lit.metrics.reduce_classwise_ap`); where every attribute has one it equals
    sklearn's macro AP.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    num_labels = train_labels.shape[1]
    reviewer = build_reviewer(arch, num_labels)
    # fused: one kernel over all 11 M parameters instead of a loop over 62 tensors (same rule)
    optimizer = torch.optim.Adam(reviewer.parameters(), lr=lr, fused=True)
    loader = DataLoader(TensorDataset(train_images, train_labels), batch_size=batch, shuffle=True,
                        drop_last=len(train_images) >= batch, generator=generator)  # fmt: skip
    reviewer.train()
    for _ in tqdm(range(epochs), desc=f"fresh reviewer {desc}", unit="epoch", leave=False):
        for images, labels in loader:
            x = to_float(images)
            loss = F.binary_cross_entropy_with_logits(reviewer(x), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    reviewer.eval()
    names = list(names) if names is not None else [str(i) for i in range(num_labels)]
    cmap = ClasswiseMAP(num_labels, names=names)
    precision = PerAttributePrecision(num_labels, threshold=threshold, names=names)
    with torch.no_grad():
        for images, labels in zip(test_images.split(256), test_labels.split(256), strict=True):
            scores = torch.sigmoid(reviewer(to_float(images)))
            cmap.update(scores, labels.long())
            precision.update(scores, labels.long())
    return PrivacyScores(float(cmap.compute()), precision.as_dict(precision.compute()))


def _one_thread() -> None:
    torch.set_num_threads(1)


def _reviewer_pool(processes: int) -> ProcessPoolExecutor | None:
    """Worker processes for the fresh reviewers (spawned: a forked child of a process whose
    OpenMP threads have run can hang in its first parallel region)."""
    if processes < 0:
        raise ValueError(f"reviewer_processes must be >= 0, got {processes}")
    if processes == 0:
        return None
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(processes, mp_context=context, initializer=_one_thread)


def _utility_test_data(datamodule) -> tuple[str, Dataset]:
    """The utility task (``"action"`` or ``"vqa"``) and its test samples."""
    task = getattr(datamodule, "utility_task", "action")
    if task not in ("action", "vqa"):
        raise NotImplementedError(
            f"the evaluation protocol scores action recognition or VQA; "
            f"{type(datamodule).__name__} has utility task {task!r}"
        )
    return task, datamodule.utility_dataset("test")


def evaluate(
    anonymizers: Mapping[str, nn.Module | Callable[[], nn.Module]],
    datamodule,
    mllm: BlackBoxMLLM,
    scorer: RetrievalScorer | None,
    prompt: str,
    reviewer_arch: str,
    reviewer_epochs: int,
    seed: int = 0,
    calls_per_sample: dict[str, float] | None = None,
    progress: Callable[[str], None] = print,
    on_row: Callable[[list[Row]], None] | None = None,
    cache: RowCache | None = None,
    cache_keys: Mapping[str, Mapping[str, Any]] | None = None,
    reviewer_processes: int = 0,
) -> list[Row]:
    """Run the protocol for every anonymizer; returns one :class:`Row` each.

    ``scorer`` retrieves action answers to the *test* classes (unused for VQA data, may be None).
    The fresh reviewer trains on ``datamodule.reviewer_dataset("train")`` (the training privacy
    data; another set in the novel-attribute protocol) and is tested on
    ``reviewer_dataset("test")``.

    An anonymizer may be given as a function that builds it (a trained comparison): it is
    called only when its row is not read from ``cache``. Rows named in ``cache_keys`` (name →
    what that method's figures depend on besides the protocol and the reviewer data) are read
    from ``cache`` when there, and stored after evaluation.

    ``reviewer_processes`` > 0 trains the fresh reviewers in that many worker processes of one
    thread each, while this process goes on with the next rows' anonymizers and black-box
    answers: small convolutions use two threads poorly, so two one-thread reviewers on a
    2-core CPU finish sooner than two in a row with two threads each. A row's figures then
    depend on the one thread (not on how many processes), and differ from an in-process run's
    by floating-point summation order only. The workers are spawned, so a script that calls
    this (or ``fit`` with such a report) must guard its entry point with ``if __name__ ==
    "__main__":`` (as for a DataLoader's workers under spawn); ``python -m privacy_lit`` does.
    """
    task, utility_data = _utility_test_data(datamodule)
    workers = getattr(datamodule, "num_workers", 0)
    if task == "vqa":

        def utility(anonymizer: nn.Module) -> float:
            batches = (
                (torch.stack([it["image"] for it in items]), [it["question"] for it in items],
                 [it["answers"] for it in items])
                for items in sample_batches(utility_data, num_workers=workers)
            )  # fmt: skip
            return utility_vqa_accuracy(anonymizer, batches, mllm, prompt)
    else:
        if scorer is None:
            raise ValueError("action recognition needs a RetrievalScorer of the test classes")

        def utility(anonymizer: nn.Module) -> float:
            batches = (
                (torch.stack([it["clip"] for it in items]),
                 torch.stack([torch.as_tensor(it["action"]) for it in items]))
                for items in sample_batches(utility_data, num_workers=workers)
            )  # fmt: skip
            return utility_top1(anonymizer, batches, mllm, scorer, prompt)

    metric = "vqa_accuracy" if task == "vqa" else "top1"
    reviewer_data = getattr(datamodule, "reviewer_dataset", datamodule.privacy_dataset)
    names = getattr(datamodule, "test_attribute_names", None) or datamodule.attribute_names
    train_images, train_labels = stack_dataset(reviewer_data("train"), "image", "attributes")
    test_images, test_labels = stack_dataset(reviewer_data("test"), "image", "attributes")
    if len(names) != test_labels.shape[1]:
        names = None  # a data module whose names do not match its labels: number them
    protocol = {
        "task": task, "mllm": mllm.cache_identity(), "prompt": prompt, "reviewer": reviewer_arch,
        "reviewer_epochs": reviewer_epochs, "seed": seed, "names": names,
        # the summation order, and with it the last digits, follows the reviewer's threads
        "reviewer_threads": 1 if reviewer_processes else torch.get_num_threads(),
        "classes": None if scorer is None else list(scorer.class_texts),
        "reviewer_data": tensor_digest(train_images, train_labels, test_images, test_labels),
    } if cache is not None and cache_keys else {}  # fmt: skip
    label = "VQA accuracy" if task == "vqa" else "top-1"
    reviewer_args = (reviewer_arch, reviewer_epochs, seed)
    pool = _reviewer_pool(reviewer_processes)
    pending: list[tuple[Row, Future | PrivacyScores | None, str | None]] = []
    rows: list[Row] = []

    def finish(block: bool) -> None:
        """Complete the rows whose reviewers are done, in order (all of them with ``block``),
        and hand each to ``on_row``: a failure on a later row keeps the earlier ones."""
        while pending and (block or not isinstance(pending[0][1], Future) or pending[0][1].done()):
            row, privacy, key = pending.pop(0)
            if privacy is not None:  # evaluated here: its reviewer's figures complete the row
                scores = privacy.result() if isinstance(privacy, Future) else privacy
                row = replace(row, cmap=scores.cmap, attribute_precision=scores.attribute_precision)
                if key is not None:
                    cache.put(key, asdict(row), cache_parts[row.method])
            verb = "evaluated" if privacy is not None else "cached"
            progress(
                f"{verb} {row.method}: {label} {100 * row.top1:.1f}, cMAP {100 * row.cmap:.1f}"
            )
            rows.append(row)
            if on_row is not None:
                on_row(rows)

    cache_parts = {
        name: {**protocol, "method": name, **cache_keys[name]}
        for name in anonymizers
        if protocol and name in cache_keys
    }
    try:
        for name, anonymizer in anonymizers.items():
            calls = (calls_per_sample or {}).get(name, 0.0)
            key = RowCache.key(cache_parts[name]) if name in cache_parts else None
            stored = None if key is None else cache.get(key)
            if stored is not None:
                pending.append(
                    (replace(Row.from_dict(stored), mllm_calls_per_sample=calls), None, None)
                )
            else:
                if not isinstance(anonymizer, nn.Module):
                    anonymizer = anonymizer()
                anonymizer = anonymizer.eval()
                score = utility(anonymizer)
                job = (_apply(anonymizer, train_images), train_labels,
                       _apply(anonymizer, test_images), test_labels, *reviewer_args)  # fmt: skip
                privacy = (
                    pool.submit(fresh_reviewer_scores, *job, desc=name, names=names)
                    if pool is not None
                    else fresh_reviewer_scores(*job, desc=name, names=names)
                )
                pending.append((Row(name, score, 0.0, calls, {}, metric), privacy, key))
            finish(block=False)
        finish(block=True)
    except BaseException:
        if pool is not None:  # an error or Ctrl-C: the workers' reviewers are not waited for
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return rows


def utility_header(rows: Sequence[Row]) -> str:
    """The utility column's title: top-1, VQA accuracy, or both names when rows mix them."""
    metrics = {r.utility_metric for r in rows}
    if metrics == {"vqa_accuracy"}:
        return "VQA accuracy (%) ↑"
    return "top-1 (%) ↑" if metrics <= {"top1"} else "top-1 / VQA acc. (%) ↑"


def format_table(rows: Sequence[Row], extra: tuple[str, Sequence[str]] | None = None) -> str:
    """A Markdown table in the paper's style (utility ↑, privacy ↓, black-box calls per sample),
    with an optional last column ``(title, one cell per row)``."""
    title, cells = extra if extra is not None else ("", [""] * len(rows))
    tail, rule = (f" {title} |", "---|") if extra is not None else ("", "")
    lines = [
        f"| method | {utility_header(rows)} | cMAP (%) ↓ | MLLM calls / sample |{tail}",
        f"|---|---:|---:|---:|{rule}",
    ]
    for r, cell in zip(rows, cells, strict=True):
        lines.append(
            f"| {r.method} | {100 * r.top1:.1f} | {100 * r.cmap:.1f} "
            f"| {r.mllm_calls_per_sample:.1f} |" + (f" {cell} |" if extra is not None else "")
        )
    return "\n".join(lines)


def format_precision_table(rows: list[Row]) -> str:
    """Tab. B11: per-attribute precision (%) of the fresh reviewer, one column per attribute, and
    the overall cMAP. Rows without per-attribute figures (older results files) are skipped."""
    rows = [r for r in rows if r.attribute_precision]
    if not rows:
        return ""
    names = list(rows[0].attribute_precision)
    lines = [
        "| method | " + " | ".join(names) + " | cMAP |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for r in rows:
        cells = [f"{100 * r.attribute_precision.get(n, float('nan')):.1f}" for n in names]
        lines.append(f"| {r.method} | " + " | ".join(cells) + f" | {100 * r.cmap:.1f} |")
    return "\n".join(lines)


def write_results(rows: list[Row], path: Path, extra: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"rows": [asdict(r) for r in rows], **(extra or {})}
    path.write_text(json.dumps(payload, indent=2))


def read_results(path: Path) -> tuple[list[Row], dict]:
    """Rows and the other top-level entries of a results file written by :func:`write_results`."""
    try:
        payload = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON results file ({err})") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
        raise ValueError(f"{path}: expected a results file with a 'rows' list")
    rows = []
    for i, row in enumerate(payload["rows"]):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {i} is {row!r}, expected an object")
        missing = {"method", "top1", "cmap"} - set(row)
        if missing:
            raise ValueError(f"{path}: row {i} lacks {sorted(missing)}")
        figures = {key: row.get(key, 0.0) for key in ("top1", "cmap", "mllm_calls_per_sample")}
        precision = row.get("attribute_precision") or {}
        figures |= {f"attribute_precision.{k}": v for k, v in dict(precision).items()}
        for key, value in figures.items():  # JSON reads NaN and Infinity: a number, not a figure
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value):
                raise ValueError(
                    f"{path}: row {i} ({row['method']}): {key} must be a number (finite), got "
                    f"{value!r}"
                )
        rows.append(Row.from_dict(row))
    return rows, {k: v for k, v in payload.items() if k != "rows"}
