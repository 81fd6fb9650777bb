"""``python -m privacy_lit bench zo``: every zeroth-order optimizer on the embedded black box, with
the same budget and seeds, against the white-box limit (Tab. 6, Fig. A1 on our own benchmark).

The task: the anonymizer head (9,067 parameters, as in training) starts from a seeded random
perturbation of its output layer that hurts the black box's answers, and each optimizer must
bring the black-box utility loss (retrieval cross-entropy of the free-text answers on a fixed set
of training clips) back down. One *evaluation* asks the black box once about every clip, so
evaluations are "queries per training sample" in the paper's sense.

Reported per optimizer (mean over seeds):

- queries per sample to reach a target loss *and stay there*, for two targets: 50 % and 90 % of
  the way from the starting loss to the best final loss of any method (mean over seeds). A run
  has reached a target at the first evaluation from which its loss stays at or below it for
  ``hold`` recorded steps (``inf`` if never): a single lucky evaluation on a noisy descent is not
  a result a user could keep, so it does not count;
- final black-box loss and top-1 on the clips;
- gradient-estimate variance over the run (mean per-coordinate variance of the followed estimates,
  Fig. A1) and their mean cosine with the *white-box* gradient — the gradient of the stand-in
  recognizer's cross-entropy on the un-quantized anonymized clips, which the black box hides;
- the share of *flat* estimates: steps whose two-point differences were all exactly zero because
  no answer changed. Answers are text, so the black-box loss is piecewise constant in θ; a flat
  step moves nothing for plain SPSA, while critical history still moves along its stored prior.
  The white-box row descends along that gradient: the limit every ZO method is measured against;
- memory: the bytes the critical-history buffer holds at capacity m, against the peak memory of
  one training step of the benchmark (torch profiler, live tensor bytes at operator granularity).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

from privacy_lit.data.synthetic import SyntheticDataModule
from privacy_lit.mllm.base import Request
from privacy_lit.mllm.standin import EmbeddedActionMLLM
from privacy_lit.models.anonymizer import Anonymizer, to_float, to_uint8
from privacy_lit.utility.retrieval import RetrievalScorer
from privacy_lit.zo.history import CriticalHistoryEstimator
from privacy_lit.zo.optimizers import (
    CMAES,
    NES,
    SPSA,
    SPSAGC,
    CountingObjective,
    Reinforce,
    ZerothOrderOptimizer,
)
from privacy_lit.zo.spsa import GainSchedule, assign_flat, flat_parameters


@dataclass
class BenchRow:
    method: str
    queries_to_half: float
    queries_to_target: float
    final_loss: float
    final_top1: float
    gradient_variance: float
    cosine_to_true_gradient: float
    flat_estimates: float
    seconds: float


class HeadTask:
    """The black-box utility loss of the anonymizer head on fixed clips, and its white-box twin."""

    def __init__(
        self,
        data: SyntheticDataModule,
        mllm: EmbeddedActionMLLM,
        num_clips: int = 8,
        seed: int = 0,
    ):
        data.prepare_data()
        self.mllm = mllm
        self.mllm.prepare()
        self.scorer = RetrievalScorer(data.class_names)
        dataset = data.utility_dataset("train")
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(dataset), generator=generator)[:num_clips].tolist()
        clips = torch.stack([dataset[i]["clip"] for i in index])
        self.actions = torch.tensor([int(dataset[i]["action"]) for i in index])
        self.shape = clips.shape
        with torch.random.fork_rng():  # the caller's random state is not ours to change
            torch.manual_seed(seed)
            self.anonymizer = Anonymizer()
        self.params = self.anonymizer.trainable_parameters()
        with torch.no_grad():
            self.frames = to_float(clips.flatten(0, 1))
            self.features = self.anonymizer.trunk(self.frames)
            # the start: a random output layer, so the head must *learn* to keep the action visible
            last = self.anonymizer.head.layers[-1]
            last.weight.normal_(0.0, 10.0, generator=generator)
        self.start = flat_parameters(self.params)

    def _frames(self, theta: Tensor) -> Tensor:
        assign_flat(self.params, theta)
        return self.anonymizer.decode(self.frames, self.features)

    @torch.no_grad()
    def answers(self, theta: Tensor) -> list[str]:
        pixels = to_uint8(self._frames(theta)).reshape(self.shape)
        return [
            a.text for a in self.mllm.answer([Request(c, "What is happening?") for c in pixels])
        ]

    def loss(self, theta: Tensor) -> float:
        """One evaluation: one black-box query per clip, answers → retrieval cross-entropy."""
        return float(self.scorer.loss(self.answers(theta), self.actions))

    def top1(self, theta: Tensor) -> float:
        predicted = self.scorer.predict(self.answers(theta))
        return float((predicted == self.actions).float().mean())

    def true_gradient(self, theta: Tensor) -> Tensor:
        """∇θ of the recognizer's cross-entropy on the float clips (what the black box hides)."""
        for p in self.params:
            p.requires_grad_(True)
        frames = self._frames(theta)
        clips = frames.reshape(*self.shape[:2], *frames.shape[1:]).transpose(1, 2)
        loss = F.cross_entropy(self.mllm.recognizer(clips), self.actions)
        gradient = torch.autograd.grad(loss, self.params)
        return torch.cat([g.reshape(-1) for g in gradient])


class WhiteBox(ZerothOrderOptimizer):
    """Gradient descent on the true gradient (one black-box evaluation per step, for the curve)."""

    def __init__(self, task: HeadTask, lr: float, seed: int = 0):
        super().__init__(seed)
        self.task, self.lr = task, lr

    def _step(self, theta: Tensor, objective: Callable[[Tensor], float]) -> Tensor:
        self.gradient = self.task.true_gradient(theta)
        objective(theta)
        return theta - self.lr * self.gradient


def optimizers(task: HeadTask, seed: int) -> dict[str, ZerothOrderOptimizer]:
    """Every method with gains for this task: estimates over 9,067 parameters have norms of
    ~|ΔL|/(2c)·√p ≈ 10³, so App. E's a = 0.01 would jump far past any minimum here."""
    gains = GainSchedule(a=2e-4, a_decay=0.4, c=0.005, c_decay=0.2)
    return {
        "white-box": WhiteBox(task, lr=1e-3, seed=seed),
        "ours (critical history)": SPSA(gains, CriticalHistoryEstimator(), seed=seed),
        "SPSA": SPSA(gains, seed=seed),
        "SPSA-GC": SPSAGC(GainSchedule(a=2e-5, a_decay=0.4, c=0.005, c_decay=0.2), seed=seed),
        "NES": NES(lr=2e-4, sigma=0.005, population=1, seed=seed),
        "RL (REINFORCE)": Reinforce(lr=1e-4, sigma=0.005, population=2, seed=seed),
        "CMA-ES (separable)": CMAES(sigma=0.05, popsize=8, seed=seed),
    }


def _run(
    task: HeadTask, optimizer: ZerothOrderOptimizer, budget: int, cosine_every: int = 4
) -> dict:
    objective = CountingObjective(task.loss)
    theta, curve, gradients, cosines, flat = task.start.clone(), [], [], [], []
    start = time.perf_counter()
    while objective.evaluations < budget:
        at = theta
        theta = optimizer.step(theta, objective)
        curve.append((objective.evaluations, task.loss(theta)))  # not counted: bookkeeping
        if optimizer.gradient is None:
            continue
        gradients.append(optimizer.gradient.detach().clone())
        raw = getattr(optimizer, "estimate_", None)  # SPSA's ĝ_k before history; else followed
        raw = optimizer.gradient if raw is None else raw
        flat.append(float(not raw.any()))
        if not isinstance(optimizer, WhiteBox) and len(gradients) % cosine_every == 1:
            true = task.true_gradient(at)  # at the point the estimate was taken
            cosines.append(float(F.cosine_similarity(gradients[-1], true, dim=0)))
    variance = float(torch.stack(gradients).var(0).mean()) if len(gradients) > 1 else math.nan
    return {
        "curve": curve,
        "final_loss": curve[-1][1],
        "final_top1": task.top1(theta),
        "variance": variance,
        "cosine": 1.0 if isinstance(optimizer, WhiteBox) else _mean(cosines),
        "flat": _mean(flat),
        "seconds": time.perf_counter() - start,
    }


def queries_to_target(curve: list[tuple[int, float]], target: float, hold: int = 3) -> float:
    """First evaluation count from which the loss stays <= ``target`` for ``hold`` recorded steps
    (fewer where the run ends first); ``inf`` if there is none."""
    for i, (queries, _) in enumerate(curve):
        if all(loss <= target for _, loss in curve[i : i + hold]):
            return float(queries)
    return math.inf


def peak_step_bytes(step: Callable[[], object]) -> int:
    """Peak live tensor bytes during ``step()``: allocations and frees in time order, at operator
    granularity (the CPU has no ``max_memory_allocated``; the profiler records every op's)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        # "[memory]" records are frees outside any op; an op's own net bytes exclude its children
        live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def history_memory(task: HeadTask, optimizer: SPSA) -> dict[str, float]:
    """The buffer ``optimizer`` holds after its run vs the peak of one more of its steps."""
    buffer = sum(g.numel() * g.element_size() for g in optimizer.history.history.gradients)
    theta = task.start.clone()
    step = peak_step_bytes(lambda: optimizer.step(theta, task.loss))
    return {
        "history_capacity": optimizer.history.history.capacity,
        "history_bytes": buffer,
        "step_peak_bytes": step,
        "history_share_of_step_peak": buffer / (step + buffer),
    }


def run(
    make_task: Callable[[int], HeadTask], seeds: int, budget: int, hold: int = 3
) -> tuple[list[BenchRow], dict]:
    """Every optimizer on ``make_task(seed)`` for each seed, ``budget`` queries per sample each."""
    runs: dict[str, list[dict]] = {}
    initial = []
    memory: dict[str, float] = {}
    for seed in range(seeds):
        task = make_task(seed)
        initial.append(task.loss(task.start))
        for name, optimizer in optimizers(task, seed).items():
            runs.setdefault(name, []).append(_run(task, optimizer, budget))
            print(f"seed {seed} {name}: final loss {runs[name][-1]['final_loss']:.3f}", flush=True)
            if seed == 0 and isinstance(optimizer, SPSA) and optimizer.history is not None:
                memory = history_memory(task, optimizer)
    best = min(_mean(r["final_loss"] for r in rs) for rs in runs.values())
    start_loss = _mean(initial)
    half, target = (start_loss - share * (start_loss - best) for share in (0.5, 0.9))
    rows = []
    for name, rs in runs.items():
        rows.append(BenchRow(
            name, _mean(queries_to_target(r["curve"], half, hold) for r in rs),
            _mean(queries_to_target(r["curve"], target, hold) for r in rs),
            _mean(r["final_loss"] for r in rs), _mean(r["final_top1"] for r in rs),
            _mean(r["variance"] for r in rs), _mean(r["cosine"] for r in rs),
            _mean(r["flat"] for r in rs), _mean(r["seconds"] for r in rs),
        ))  # fmt: skip
    meta = {
        "start_loss": start_loss, "best_loss": best, "half_loss": half, "target_loss": target,
        "budget": budget,
        "seeds": seeds, "clips": len(task.actions), "parameters": task.start.numel(),
        "hold": hold, **memory,
    }  # fmt: skip
    return rows, meta


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def format_table(rows: list[BenchRow], meta: dict) -> str:
    lines = [
        f"targets: loss {meta['half_loss']:.3f} (50 %) and {meta['target_loss']:.3f} (90 % of the "
        f"way from {meta['start_loss']:.3f} to the best final loss {meta['best_loss']:.3f}), each "
        f"held for {meta['hold']} steps; {meta['parameters']} parameters, budget "
        f"{meta['budget']} queries per sample, {meta['seeds']} seeds, {meta['clips']} clips",
        "| method | queries/sample to 50 % | to 90 % | final loss | final top-1 | grad. variance "
        "| cos(ĝ, ∇) | flat steps | s/run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.queries_to_half:.1f} | {r.queries_to_target:.1f} | "
            f"{r.final_loss:.3f} | {100 * r.final_top1:.1f} | {r.gradient_variance:.3g} | "
            f"{r.cosine_to_true_gradient:.3f} | {r.flat_estimates:.2f} | {r.seconds:.0f} |"
        )
    by_name = {r.method: r for r in rows}
    ours, spsa = by_name.get("ours (critical history)"), by_name.get("SPSA")
    if ours and spsa:
        lines.append(
            "queries of critical history / plain SPSA: "
            f"{_ratio(ours.queries_to_half, spsa.queries_to_half)} to 50 %, "
            f"{_ratio(ours.queries_to_target, spsa.queries_to_target)} to 90 % "
            "(the paper's Tab. 6: 24 / 136 = 0.18); gradient variance "
            f"{_ratio(ours.gradient_variance, spsa.gradient_variance)}"
        )
    if "history_bytes" in meta:
        lines.append(
            f"critical history at m = {meta['history_capacity']}: {meta['history_bytes']:,} bytes, "
            f"{100 * meta['history_share_of_step_peak']:.2f} % of a training step's peak memory "
            f"({meta['step_peak_bytes'] + meta['history_bytes']:,} bytes with the buffer)"
        )
    return "\n".join(lines)


def _ratio(ours: float, theirs: float) -> str:
    if math.isinf(ours) or math.isinf(theirs) or theirs == 0:
        return "n/a (a method never held the target)"
    return f"{ours / theirs:.2f}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m privacy_lit bench zo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budget", type=int, default=64, help="queries per sample per run")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    data = SyntheticDataModule(args.root, seed=0)
    mllm = EmbeddedActionMLLM(args.root, str(Path(args.root) / "standin_recognizer.pt"))
    rows, meta = run(lambda seed: HeadTask(data, mllm, args.clips, seed), args.seeds, args.budget)
    print(format_table(rows, meta))
    if args.json:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], **meta}, indent=2))
