"""``python -m privacy_lit bench zo``: every utility-gradient estimator of
:mod:`privacy_lit.zo.estimators` on the embedded black box, through the same seam as training,
with the same budget and seeds, against the white-box limit (Tab. 6, Fig. A1 on our own
benchmark). ``--objective training`` runs a config's adversarial phase per estimator instead
(:mod:`privacy_lit.bench.zo_training`).

The head task: the anonymizer head (9,067 parameters, as in training) starts from a seeded random
perturbation of its output layer that hurts the black box's answers, and each estimator must
bring the black-box utility loss (retrieval cross-entropy of the free-text answers on a fixed set
of training clips) back down. One *evaluation* asks the black box once about every clip, so
evaluations are "queries per training sample" in the paper's sense.

Reported per estimator (mean over seeds; each seed's figures in ``--json``):

- queries per sample to reach a target loss *and stay there*, for two targets per seed: 50 % and
  90 % of the way from that seed's starting loss to the best final loss of any method on it (the
  tasks start far apart: a target from the seeds' mean could lie below one's start). A run
  has reached a target at the first evaluation from which its loss stays at or below it for
  ``hold`` recorded steps (``inf`` if never): a single lucky evaluation on a noisy descent is not
  a result a user could keep, so it does not count;
- final black-box loss and top-1 on the clips;
- gradient-estimate variance over the run (mean per-coordinate variance of the followed estimates,
  Fig. A1) and their median cosine with the *white-box* gradient — the gradient of the stand-in
  recognizer's cross-entropy on the un-quantized anonymized clips, which the black box hides —
  over every 4th estimate that has a direction (an all-zero estimate has no cosine; how many
  there were is the next column);
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

from privacy_lit.callbacks.signal import finite_median, recognizer_gradient
from privacy_lit.data.synthetic import SyntheticDataModule
from privacy_lit.mllm.base import Request
from privacy_lit.mllm.standin import EmbeddedActionMLLM
from privacy_lit.models.anonymizer import Anonymizer, to_float, to_uint8
from privacy_lit.proxy import RecognizerProxy, UtilityProxy
from privacy_lit.utility.retrieval import RetrievalScorer
from privacy_lit.zo.estimators import (
    CMAES,
    NES,
    SPSA,
    SPSAGC,
    CountingObjective,
    Estimate,
    Evaluate,
    GradientEstimator,
    HistoryEnhanced,
    PriorGuided,
    PriorGuidedSearch,
    QueriedHistory,
    Reinforce,
    StepContext,
    SubspaceCMAES,
    SubspaceSPSA,
    descend,
)
from privacy_lit.zo.spsa import GainSchedule, assign_flat, flat_gradient, flat_parameters


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
    per_seed: dict[str, list[float]] = field(default_factory=dict)


class HeadTask:
    """The black-box utility loss of the anonymizer head on fixed clips, and its white-box twin."""

    def __init__(
        self,
        data: SyntheticDataModule,
        mllm: EmbeddedActionMLLM,
        num_clips: int = 8,
        seed: int = 0,
        proxy: UtilityProxy | None = None,
    ):
        data.prepare_data()
        self.mllm = mllm
        self.mllm.prepare()
        self.proxy = proxy
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
        for p in self.params:  # the white-box and proxy gradients are taken with respect to them
            p.requires_grad_(True)
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
    def answers(self, points: list[Tensor]) -> list[str]:
        """The black box's answers for every clip at every point, in one backend call."""
        pixels = [to_uint8(self._frames(theta)).reshape(self.shape) for theta in points]
        requests = [Request(c, "What is happening?") for p in pixels for c in p]
        return [a.text for a in self.mllm.answer(requests)]

    def losses(self, points: list[Tensor]) -> list[float]:
        """One evaluation per point: one black-box query per clip, answers → retrieval CE."""
        answers, n = self.answers(points), len(self.actions)
        return [float(self.scorer.loss(answers[i : i + n], self.actions))
                for i in range(0, len(answers), n)]  # fmt: skip

    def loss(self, theta: Tensor) -> float:
        return self.losses([theta])[0]

    def top1(self, theta: Tensor) -> float:
        predicted = self.scorer.predict(self.answers([theta]))
        return float((predicted == self.actions).float().mean())

    def _gradient_of(self, model_loss: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
        loss = model_loss(self._frames(theta).reshape(*self.shape[:2], 3, *self.shape[2:4]))
        return flat_gradient(loss, self.params)

    def true_gradient(self, theta: Tensor) -> Tensor:
        """∇θ of the recognizer's cross-entropy on the float clips (what the black box hides)."""
        return recognizer_gradient(self.mllm.recognizer, lambda: self._frames(theta), self.shape,
                                   self.actions, self.params)  # fmt: skip

    def prior(self, theta: Tensor) -> Tensor | None:
        """∇θ of the proxy's utility loss (None without a proxy): a prior-guided estimator's
        prior, from a model that is not the black box."""
        if self.proxy is None:
            return None
        return self._gradient_of(lambda x: self.proxy.loss(x, {"action": self.actions}), theta)


class WhiteBox(GradientEstimator):
    """The true gradient of the stand-in's recognizer (one evaluation per step, for the curve):
    the limit every zeroth-order estimator is measured against."""

    def __init__(self, task: HeadTask):
        self.task = task

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        gradient = self.task.true_gradient(theta)
        return Estimate(gradient, evaluate([theta])[0], queries=1)


PAPER = "ours (critical history)"
"""The paper's estimator's row name (the ratios in the table are against plain SPSA)."""


def methods(task: HeadTask, seed: int) -> dict[str, tuple[GradientEstimator, GainSchedule]]:
    """Every estimator with gains for this task: estimates over 9,067 parameters have norms of
    ~|ΔL|/(2c)·√p ≈ 10³, so App. E's a = 0.01 would jump far past any minimum here. Projection
    estimators (prior-guided, queried history) estimate the gradient itself (norm ~‖∇‖), so
    their gain is the white-box row's (chosen on a task seed outside the bench's, see
    docs/estimators.md).
    """
    gains = GainSchedule(a=2e-4, a_decay=0.4, c=0.005, c_decay=0.2)
    constant = GainSchedule(a=2e-4, a_decay=0.0, c=0.005, c_decay=0.0)
    projected = GainSchedule(a=1e-3, a_decay=0.4, c=0.005, c_decay=0.2)
    rows: dict[str, tuple[GradientEstimator, GainSchedule]] = {
        "white-box": (WhiteBox(task), GainSchedule(a=1e-3, a_decay=0.0)),
        PAPER: (HistoryEnhanced(SPSA(seed=seed)), gains),
        "SPSA": (SPSA(seed=seed), gains),
        "SPSA-GC": (SPSAGC(seed=seed), GainSchedule(a=2e-5, a_decay=0.4, c=0.005, c_decay=0.2)),
        "NES": (NES(population=1, seed=seed), constant),
        "RL (REINFORCE)": (Reinforce(population=2, seed=seed),
                           GainSchedule(a=1e-4, a_decay=0.0, c=0.005, c_decay=0.0)),
        "CMA-ES (separable)": (CMAES(sigma=0.05, popsize=8, seed=seed), gains),
        "queried history": (QueriedHistory(num_random=1, seed=seed), projected),
        "subspace SPSA (d=256)": (SubspaceSPSA(dim=256, seed=seed), gains),  # same norms as SPSA
        "subspace CMA-ES (d=256)": (SubspaceCMAES(dim=256, sigma=0.05, popsize=8, seed=seed),
                                    gains),
    }  # fmt: skip
    if task.proxy is not None:
        rows["prior-guided (proxy)"] = (PriorGuided(seed=seed), projected)
        # the search lands on a probe whatever a_k is: its gains set only c_k (the radius)
        rows["prior-guided search (proxy)"] = (PriorGuidedSearch(), projected)
        rows["prior-guided (proxy + 1 random)"] = (PriorGuided(num_random=1, seed=seed), projected)
    return rows


def _run(
    task: HeadTask,
    estimator: GradientEstimator,
    gains: GainSchedule,
    budget: int,
    cosine_every: int = 4,
) -> dict:
    objective = CountingObjective(task.losses)
    theta, curve, gradients, cosines, flat = task.start.clone(), [], [], [], []
    start = time.perf_counter()
    k = measurable = 0
    while objective.evaluations < budget:
        at = theta
        prior = task.prior(theta) if estimator.needs_prior else None
        theta, estimate = descend(theta, estimator, objective, gains, k, prior)
        k += 1
        curve.append((objective.evaluations, task.loss(theta)))  # not counted: bookkeeping
        if isinstance(estimator, (CMAES, WhiteBox)):
            continue  # CMA-ES has no gradient estimate; the white box's is the reference
        gradients.append(estimate.direction.detach().clone())
        flat.append(float(not estimate.raw.any()))
        if not gradients[-1].any():
            continue  # a zero estimate has no direction: its cosine is undefined, not 0
        measurable += 1
        if measurable % cosine_every == 1:
            true = task.true_gradient(at)  # at the point the estimate was taken
            cosines.append(float(F.cosine_similarity(gradients[-1], true, dim=0)))
    variance = float(torch.stack(gradients).var(0).mean()) if len(gradients) > 1 else math.nan
    return {
        "curve": curve,
        "final_loss": curve[-1][1],
        "final_top1": task.top1(theta),
        "variance": variance,
        "cosine": 1.0 if isinstance(estimator, WhiteBox) else finite_median(cosines),
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


def history_memory(task: HeadTask, estimator: HistoryEnhanced, gains: GainSchedule) -> dict:
    """The buffer ``estimator`` holds after its run vs the peak of one more of its steps."""
    buffer = sum(g.numel() * g.element_size() for g in estimator.history.history.gradients)
    theta = task.start.clone()
    step = peak_step_bytes(lambda: descend(theta, estimator, task.losses, gains, 0))
    return {
        "history_capacity": estimator.history.history.capacity,
        "history_bytes": buffer,
        "step_peak_bytes": step,
        "history_share_of_step_peak": buffer / (step + buffer),
    }


def run(
    make_task: Callable[[int], HeadTask], seeds: int, budget: int, hold: int = 3,
    only: list[str] | None = None, first_seed: int = 0,
) -> tuple[list[BenchRow], dict]:  # fmt: skip
    """Every estimator (or those named in ``only``) on ``make_task(seed)`` for ``seeds`` seeds
    from ``first_seed``, ``budget`` queries per sample each."""
    runs: dict[str, list[dict]] = {}
    initial = []
    memory: dict[str, float] = {}
    seed_list = list(range(first_seed, first_seed + seeds))
    for seed in seed_list:
        task = make_task(seed)
        initial.append(task.loss(task.start))
        for name, (estimator, gains) in methods(task, seed).items():
            if only is not None and name not in only:
                continue
            runs.setdefault(name, []).append(_run(task, estimator, gains, budget))
            print(f"seed {seed} {name}: final loss {runs[name][-1]['final_loss']:.3f}", flush=True)
            if seed == seed_list[0] and name == PAPER:
                memory = history_memory(task, estimator, gains)
    # targets per seed: each task starts at its own loss, and a target set from the seeds' mean
    # would be met at the start on a seed that starts below it
    best = [min(rs[i]["final_loss"] for rs in runs.values()) for i in range(seeds)]
    half, target = (
        [a - share * (a - b) for a, b in zip(initial, best, strict=True)] for share in (0.5, 0.9)
    )
    rows = []
    for name, rs in runs.items():
        to_half, to_target = (
            [queries_to_target(r["curve"], t, hold) for r, t in zip(rs, losses, strict=True)]
            for losses in (half, target)
        )
        rows.append(BenchRow(
            name, _mean(to_half), _mean(to_target),
            _mean(r["final_loss"] for r in rs), _mean(r["final_top1"] for r in rs),
            _mean(r["variance"] for r in rs), finite_median(r["cosine"] for r in rs),
            _mean(r["flat"] for r in rs), _mean(r["seconds"] for r in rs),
            {"queries_to_half": to_half, "queries_to_target": to_target,
             "final_loss": [r["final_loss"] for r in rs], "cosine": [r["cosine"] for r in rs],
             "curve": [r["curve"] for r in rs]},
        ))  # fmt: skip
    meta = {
        "start_loss": initial, "best_loss": best, "half_loss": half, "target_loss": target,
        "budget": budget, "seeds": seeds, "seed_list": seed_list,
        "clips": len(task.actions), "parameters": task.start.numel(),
        "hold": hold, **memory,
    }  # fmt: skip
    return rows, meta


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def format_table(rows: list[BenchRow], meta: dict) -> str:
    per_seed = ", ".join(
        f"seed {i}: {h:.3f} / {t:.3f} from {a:.3f} (best {b:.3f})"
        for i, a, h, t, b in zip(meta["seed_list"], meta["start_loss"], meta["half_loss"],
                                 meta["target_loss"], meta["best_loss"], strict=True)
    )  # fmt: skip
    lines = [
        f"targets (50 % / 90 % of the way from a seed's start loss to its best final loss of any "
        f"row), each held for {meta['hold']} steps: {per_seed}; {meta['parameters']} parameters, "
        f"budget {meta['budget']} queries per sample, {meta['seeds']} seeds, {meta['clips']} clips",
        "| method | queries/sample to 50 % | to 90 % | final loss | final top-1 | grad. variance "
        "| cos(ĝ, ∇) (median) | flat steps | queries / SPSA's (50 % / 90 %) | s/run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    by_name = {r.method: r for r in rows}
    spsa = by_name.get("SPSA")
    for r in rows:
        versus = (
            "—"
            if spsa is None
            else f"{_versus(r, spsa, meta, 'queries_to_half')} / "
            f"{_versus(r, spsa, meta, 'queries_to_target')}"
        )
        lines.append(
            f"| {r.method} | {_queries(r.queries_to_half)} | {_queries(r.queries_to_target)} | "
            f"{r.final_loss:.3f} | {100 * r.final_top1:.1f} | {_value(r.gradient_variance)} | "
            f"{_value(r.cosine_to_true_gradient, '.3f')} | {_value(r.flat_estimates, '.2f')} | "
            f"{versus} | {r.seconds:.0f} |"
        )
    ours = by_name.get(PAPER)
    if ours and spsa:
        lines.append(
            "queries of critical history / plain SPSA: "
            f"{_versus(ours, spsa, meta, 'queries_to_half')} to 50 %, "
            f"{_versus(ours, spsa, meta, 'queries_to_target')} to 90 % "
            "(the paper's Tab. 6: 24 / 136 = 0.18); gradient variance "
            f"{_value(_divided(ours.gradient_variance, spsa.gradient_variance), '.2f')}"
        )
    if spsa is not None:
        lines += per_seed_versus_spsa(rows, spsa, meta["budget"])
    if "history_bytes" in meta:
        lines.append(
            f"critical history at m = {meta['history_capacity']}: {meta['history_bytes']:,} bytes, "
            f"{100 * meta['history_share_of_step_peak']:.2f} % of a training step's peak memory "
            f"({meta['step_peak_bytes'] + meta['history_bytes']:,} bytes with the buffer)"
        )
    return "\n".join(lines)


def fraction_of_spsa(ours: float, spsa: float, budget: int) -> tuple[float, bool]:
    """``ours`` / SPSA's queries to a target on one seed, and whether it is an upper bound: where
    SPSA never held the target within ``budget`` it needs more than that, so ours / budget bounds
    the fraction from above. ``inf`` where ``ours`` never held it."""
    if math.isinf(ours):
        return math.inf, False
    return (ours / budget, True) if math.isinf(spsa) else (ours / spsa, False)


def mean_fraction_of_spsa(
    row: BenchRow, spsa: BenchRow, budget: int, key: str
) -> tuple[float, bool]:
    """``row``'s mean queries to a target (``key`` of ``per_seed``) over SPSA's, and whether it is
    an upper bound: a seed where SPSA never held the target counts as ``budget`` queries, fewer
    than it would need, so SPSA's mean is bounded from below. ``inf`` where ``row`` never held it
    on some seed."""
    ours, theirs = row.per_seed[key], spsa.per_seed[key]
    if any(math.isinf(q) for q in ours):
        return math.inf, False
    floor = _mean(min(q, budget) for q in theirs)
    return _mean(ours) / floor, any(math.isinf(q) for q in theirs)


def per_seed_versus_spsa(rows: list[BenchRow], spsa: BenchRow, budget: int) -> list[str]:
    """Each row's queries to the two targets seed by seed, as fractions of SPSA's on the same
    seed, and on how many seeds both fractions are at most 1/5 (a mean over seeds hides a seed
    where one method's first random step happened to land below a target)."""
    lines = ["per seed, queries to 50 % / 90 % (fraction of SPSA's; ≤: SPSA never held it):"]
    for row in rows:
        if row is spsa:
            continue
        cells, fifth = [], 0
        pairs = zip(row.per_seed["queries_to_half"], row.per_seed["queries_to_target"],
                    spsa.per_seed["queries_to_half"], spsa.per_seed["queries_to_target"],
                    strict=True)  # fmt: skip
        for ours_half, ours_target, spsa_half, spsa_target in pairs:
            half = fraction_of_spsa(ours_half, spsa_half, budget)
            target = fraction_of_spsa(ours_target, spsa_target, budget)
            fifth += half[0] <= 0.2 and target[0] <= 0.2
            cells.append(f"{_queries(ours_half)} ({_fraction(*half)}) / "
                         f"{_queries(ours_target)} ({_fraction(*target)})")  # fmt: skip
        lines.append(f"- {row.method}: {'; '.join(cells)} — both ≤ 1/5 of SPSA's on {fifth} of "
                     f"{len(cells)} seeds")  # fmt: skip
    return lines


def _versus(row: BenchRow, spsa: BenchRow, meta: dict, key: str) -> str:
    return _fraction(*mean_fraction_of_spsa(row, spsa, meta["budget"], key))


def _fraction(value: float, bound: bool) -> str:
    return "never" if math.isinf(value) else f"{'≤ ' if bound else ''}{value:.2f}"


def _queries(value: float) -> str:
    """Queries per sample to a target; "never" when a run (or, averaged, any seed) did not hold
    it within the budget."""
    return "never" if math.isinf(value) else f"{value:.1f}"


def _divided(a: float, b: float) -> float:
    """a / b, NaN where b is 0 (SPSA's estimates may all have been zero on a short run)."""
    return a / b if b else math.nan


def _value(value: float, spec: str = ".3g") -> str:
    """ "—" where a method has no such figure (CMA-ES has no gradient estimate)."""
    return "—" if math.isnan(value) else format(value, spec)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m privacy_lit bench zo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", default="data/synthetic")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST..FIRST+SEEDS-1")
    parser.add_argument("--budget", type=int, default=64, help="queries per sample per run")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--only", nargs="+", default=None, help="run these rows only")
    parser.add_argument(
        "--no-proxy",
        action="store_true",
        help="skip the prior-guided rows (no proxy recognizer to train)",
    )
    parser.add_argument(
        "--objective",
        choices=("head", "training"),
        default="head",
        help="head: the utility-only head task; training: the config's "
        "adversarial phase per estimator, evaluated by its protocol",
    )
    training = parser.add_argument_group("--objective training (privacy_lit.bench.zo_training)")
    training.add_argument("--config", default="conf/demo.yaml")
    training.add_argument("--out", type=Path, default=Path("runs/bench_zo_training"))
    training.add_argument(
        "--pretrained",
        type=Path,
        default=None,
        help="a checkpoint at the end of pre-training (default: train one)",
    )
    training.add_argument("--reviewer-epochs", type=int, default=8)
    training.add_argument("--no-surrogate", action="store_true")
    training.add_argument(
        "--collect",
        action="store_true",
        help="only print the table of the runs already under --out",
    )
    training.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="--KEY=VALUE",
        help="a CLI override passed to every fit (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.objective == "training":
        from privacy_lit.bench import zo_training

        rows = (
            zo_training.collect(args.out) if args.collect else zo_training.run(
                args.config, args.out, args.seeds, args.reviewer_epochs, args.set,
                args.pretrained, args.only, not args.no_surrogate,
            )
        )  # fmt: skip
        print(zo_training.format_table(rows))
        if args.json:
            args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows]}, indent=2))
        return
    data = SyntheticDataModule(args.root, seed=0)
    mllm = EmbeddedActionMLLM(args.root, str(Path(args.root) / "standin_recognizer.pt"))
    proxy = None
    if not args.no_proxy:
        data.prepare_data()
        proxy = RecognizerProxy()
        proxy.prepare(data, torch.device("cpu"))
    rows, meta = run(lambda seed: HeadTask(data, mllm, args.clips, seed, proxy), args.seeds,
                     args.budget, only=args.only, first_seed=args.first_seed)  # fmt: skip
    print(format_table(rows, meta))
    if args.json:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], **meta}, indent=2))
