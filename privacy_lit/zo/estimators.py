"""Utility-gradient estimators behind one seam (plain torch, no Lightning).

Every estimator sees the black box only as a *batched* objective ``evaluate(list[θ]) -> list[L]``,
so all of a step's queries reach the backend in one call, and answers one question: which utility
direction to descend from θ_k, and what ``L_MLLM(θ_k)`` reads (the value the augmented Tchebycheff
switch compares). The training step (:class:`privacy_lit.system.PrivacySystem`) and ``bench zo``
run the same classes.

The paper's estimator and its baselines (Tab. 6):

- :class:`SPSA`: Eq. 7, averaged over q perturbations (2q queries);
- :class:`HistoryEnhanced`: critical history (Alg. 1, Eq. 8–10) around *any* estimator, every
  Tab. 7 switch; ``HistoryEnhanced(SPSA())`` is the paper's estimator;
- :class:`SPSAGC` (BlackVIP's Nesterov-corrected SPSA), :class:`NES`, :class:`Reinforce`,
  :class:`CMAES` (separable, through ``cma``);
- :class:`NoSignal`: the control — the same queries, a zero utility direction.

Estimators that carry more signal per query (issue "black-box utility gradients that carry
signal"): in p = 9,067 dimensions a random direction holds ~1/√p of the gradient, so any estimate
built from a few random directions has cosine ~√(q/p) with it. Two ways out:

- *add information*: :class:`PriorGuided` measures the black box's derivative along the gradient
  of a local differentiable proxy (PRGF, Cheng et al. 2019; Guided ES, Maheswaranathan et al.
  2019) and along random directions orthogonal to it, and :class:`PriorGuidedSearch` searches
  along that gradient by comparing losses (Golovin et al. 2020); :class:`QueriedHistory` spends one
  antithetic pair on the previous step's direction and *measures* its coefficient (Meier et al.
  2019) instead of assuming it as Eq. 9 does;
- *shrink the search space*: :class:`SubspaceSPSA` perturbs in a seeded random subspace of
  dimension d (BBT, Sun et al. 2022), :class:`SubspaceCMAES` runs CMA-ES there.

Perturbation sizes: the random-direction estimators perturb θ by vectors of the same norm as
SPSA's c_kΔ_k (‖Δ_k‖ = √p); the projection estimators move ``radius``·c_k along each unit
direction they measure, which is what c_kΔ_k moves θ along any one direction. One ``c`` means the
same thing for all of them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from privacy_lit.zo.history import CriticalHistoryEstimator, Selection
from privacy_lit.zo.spsa import averaged_spsa_gradient, perturbation_seed, rademacher

Evaluate = Callable[[list[Tensor]], list[float]]
"""The black box as an objective: parameter vectors in, one loss per vector out (one call)."""


@dataclass(frozen=True)
class StepContext:
    """What the training loop knows about step k.

    Args:
        k: the 0-based step index (perturbations are regenerated from it).
        c_k: the perturbation size of step k (SPSA's c_k; a perturbation has norm c_k·√p).
        a_k: the step size the loop will take (look-ahead estimators read it).
        prior: the gradient of a local proxy at θ_k (:class:`PriorGuided`), else None.
    """

    k: int
    c_k: float
    a_k: float = 0.0
    prior: Tensor | None = None


@dataclass
class Estimate:
    """One step's utility direction and its bookkeeping.

    Args:
        direction: the direction to descend, before the (1 + I_k) step scaling.
        loss: L_MLLM(θ_k) as read from this step's queries (their mean: no extra query).
        indicator: I_k of Eq. 10 (0 where there is no history).
        raw: the estimate before any history (ĝ_k); ``direction`` when there is no history.
        queries: black-box evaluations spent (objective values, each one query per sample).
        info: scalars worth logging (e.g. the prior's measured quality).
    """

    direction: Tensor
    loss: float
    indicator: float = 0.0
    raw: Tensor | None = None
    queries: int = 0
    info: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.raw is None:
            self.raw = self.direction


class GradientEstimator(ABC):
    """The seam: ``estimate(θ, evaluate, context)`` → :class:`Estimate`; state for resume.

    Subclasses set ``needs_prior = True`` when they read ``context.prior``.
    """

    needs_prior: bool = False

    @abstractmethod
    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got keys {sorted(state)}")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _checked(losses: Sequence[float], expected: int) -> list[float]:
    losses = [float(v) for v in losses]
    if len(losses) != expected:
        raise ValueError(f"the objective returned {len(losses)} losses for {expected} points")
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError(f"black-box losses must be finite, got {losses}")
    return losses


def _two_point(theta: Tensor, evaluate: Evaluate, directions: list[Tensor], c_k: float) -> Estimate:
    """Eq. 7 averaged over ``directions``: queries θ + c_k·d, θ − c_k·d for each d, in order."""
    points = [theta + sign * c_k * d for d in directions for sign in (1.0, -1.0)]
    losses = _checked(evaluate(points), len(points))
    pairs = list(zip(losses[0::2], losses[1::2], strict=True))
    gradient = averaged_spsa_gradient(pairs, directions, c_k).to(theta)
    return Estimate(gradient, _mean(losses), queries=len(points))


class SPSA(GradientEstimator):
    """Eq. 7 averaged over q Rademacher perturbations Δ_j, regenerated from ``(seed, k, j)``.

    Queries in the order (θ + c_kΔ_1, θ − c_kΔ_1, θ + c_kΔ_2, …): 2q per step.
    """

    def __init__(self, num_perturbations: int = 1, seed: int = 0):
        if num_perturbations < 1:
            raise ValueError(f"num_perturbations must be >= 1, got {num_perturbations}")
        self.num_perturbations, self.seed = num_perturbations, seed

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        deltas = [
            rademacher(theta.numel(), perturbation_seed(self.seed, context.k, j)).to(theta)
            for j in range(self.num_perturbations)
        ]
        return _two_point(theta, evaluate, deltas, context.c_k)


class _Wrapping(GradientEstimator):
    """An estimator built around ``base`` (default SPSA): it reads a prior when ``base`` does, and
    keeps ``base``'s state under ``"base"`` in its own."""

    def __init__(self, base: GradientEstimator | None = None):
        self.base = base if base is not None else SPSA()

    @property
    def needs_prior(self) -> bool:  # type: ignore[override]
        return self.base.needs_prior

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state.get("base", {}))


class HistoryEnhanced(_Wrapping):
    """Critical history (Alg. 1) around ``base``: g̃_k = γĝ_k + (1 − γ)·mean(C_g), I_k of Eq. 10.

    ``HistoryEnhanced(SPSA())`` is the paper's estimator; every Tab. 7 ablation is a switch of
    :class:`~privacy_lit.zo.history.CriticalHistoryEstimator` (``use_history=False`` returns
    ``base``'s estimate unchanged).
    """

    def __init__(
        self,
        base: GradientEstimator | None = None,
        gamma: float = 0.5,
        b: float = 0.3,
        history_size: int = 10,
        decay: float = 0.5,
        history_selection: Selection = "critical",
        use_history: bool = True,
        adjust_direction: bool = True,
        adjust_step: bool = True,
    ):
        super().__init__(base)
        self.history = CriticalHistoryEstimator(
            gamma, b, history_size, decay, history_selection, use_history, adjust_direction,
            adjust_step,
        )  # fmt: skip

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        inner = self.base.estimate(theta, evaluate, context)
        direction, indicator = self.history.step(inner.direction, context.k)
        info = {**inner.info, "history_length": float(len(self.history.history))}
        return Estimate(direction, inner.loss, indicator, inner.direction, inner.queries, info)

    def state_dict(self) -> dict[str, Any]:
        return {**self.history.state_dict(), **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history.load_state_dict(state)
        super().load_state_dict(state)


class NoSignal(_Wrapping):
    """The no-signal control: ``base``'s queries and loss reading, a zero utility direction.

    The augmented Tchebycheff switch still reads the black-box loss values (same queries, same
    calls per sample), so a run with this estimator shows what the trade-off owes to the switch
    and the privacy push alone, and what an estimator adds over no estimate at all.
    """

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        inner = self.base.estimate(theta, evaluate, context)
        return Estimate(torch.zeros_like(theta), inner.loss, raw=inner.raw, queries=inner.queries)


class SPSAGC(GradientEstimator):
    """BlackVIP's SPSA-GC: the estimate is taken at the look-ahead point θ − a_kβm and corrects the
    momentum m ← βm + ĝ(θ − a_kβm); the loop then steps θ ← θ − a_k·m (Nesterov). 2q queries."""

    def __init__(self, momentum: float = 0.9, num_perturbations: int = 1, seed: int = 0):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = momentum
        self.spsa = SPSA(num_perturbations, seed)
        self.velocity: Tensor | None = None

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        velocity = torch.zeros_like(theta) if self.velocity is None else self.velocity.to(theta)
        ahead = theta - context.a_k * self.momentum * velocity
        inner = self.spsa.estimate(ahead, evaluate, context)
        self.velocity = self.momentum * velocity + inner.direction
        return Estimate(self.velocity.clone(), inner.loss, raw=inner.direction,
                        queries=inner.queries)  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"velocity": None if self.velocity is None else self.velocity.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        velocity = state.get("velocity")
        self.velocity = None if velocity is None else velocity.clone()


def _gaussian(numel: int, seed: int) -> Tensor:
    """A standard normal vector regenerated from ``seed`` (like :func:`rademacher`)."""
    return torch.randn(numel, generator=torch.Generator().manual_seed(seed))


class NES(GradientEstimator):
    """Antithetic Gaussian NES, σ = c_k: ĝ = Σ_j (L(θ + σε_j) − L(θ − σε_j)) ε_j / (2σn).
    2n queries per step."""

    def __init__(self, population: int = 1, seed: int = 0):
        if population < 1:
            raise ValueError(f"population must be >= 1, got {population}")
        self.population, self.seed = population, seed

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        samples = [
            _gaussian(theta.numel(), perturbation_seed(self.seed, context.k, j)).to(theta)
            for j in range(self.population)
        ]
        # antithetic NES is Eq. 7's two-point formula with Gaussian instead of ±1 directions
        return _two_point(theta, evaluate, samples, context.c_k)


class Reinforce(GradientEstimator):
    """REINFORCE for the policy θ' ~ N(θ, σ²I), σ = c_k, reward −L(θ'):
    ĝ = Σ_i (L(θ + σε_i) − b) ε_i / (σn), b a moving average of past losses. n queries per step:
    one-sided, so it pays for its baseline's bias with variance (the RL row of Tab. 6)."""

    def __init__(self, population: int = 2, baseline_decay: float = 0.9, seed: int = 0):
        if population < 1 or not 0.0 <= baseline_decay < 1.0:
            raise ValueError("need population >= 1 and baseline_decay in [0, 1)")
        self.population, self.baseline_decay, self.seed = population, baseline_decay, seed
        self.baseline: float | None = None

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        sigma = context.c_k
        samples = [
            _gaussian(theta.numel(), perturbation_seed(self.seed, context.k, j)).to(theta)
            for j in range(self.population)
        ]
        losses = _checked(evaluate([theta + sigma * e for e in samples]), len(samples))
        mean = _mean(losses)
        baseline = mean if self.baseline is None else self.baseline
        gradient = sum((v - baseline) * e for v, e in zip(losses, samples, strict=True))
        decay = self.baseline_decay
        self.baseline = (
            mean if self.baseline is None else decay * self.baseline + (1 - decay) * mean
        )
        return Estimate(gradient / (sigma * self.population), mean, queries=len(samples))

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.baseline = state.get("baseline")


def _orthonormal(directions: list[Tensor], eps: float = 1e-12) -> list[Tensor]:
    """Gram–Schmidt in order; a direction already in the span of the earlier ones is dropped."""
    basis: list[Tensor] = []
    for d in directions:
        v = d.double()
        for u in basis:
            v = v - torch.dot(u, v) * u
            v = v - torch.dot(u, v) * u  # twice: keeps orthogonality in float64 over p ~ 10⁴
        norm = float(v.norm())
        if norm > eps * max(1.0, float(d.double().norm())):
            basis.append(v / norm)
    return basis


class PriorGuided(GradientEstimator):
    """Derivatives measured along a prior and random orthogonal directions (PRGF / Meier et al.).

    The directions are, in this order and orthonormalized: the proxy's gradient at θ_k
    (``use_proxy``, from :attr:`StepContext.prior`), the previous step's direction
    (``use_previous``), and ``num_random`` seeded Gaussian directions. Along each unit direction u
    the black box is queried at θ ± r·u, 2 queries per direction, with r = ``radius``·c_k. The
    unit of the radius is what SPSA's c_kΔ_k moves θ along any one unit direction (its component
    c_k·Δ·u has standard deviation c_k). Text answers change in steps, so a move of c_k along a
    direction rarely changes any answer; the loss is steepest along a good prior, so a move of
    c_kΔ_k's whole norm (c_k√p ≈ 95·c_k) along it jumps past the nearest change. ``radius = 16``
    lies between (how it was chosen: docs/estimators.md).
    The estimate is the projection of the gradient on their span,

        ĝ = Σ_u d_u·u,   d_u = (L(θ + ru) − L(θ − ru)) / (2r),

    so each direction is weighted by its *measured* derivative: a prior the black box disagrees
    with (d ≈ 0, or of the opposite sign) contributes nothing, or is followed backwards, at a cost
    of 2 queries. Its measured quality — the estimated cosine of the prior with the gradient,
    α̂ = d_prior / ‖ĝ_full‖ with ‖g_⊥‖² ≈ (p − 1)·mean(d_random²) — is logged in ``info``
    where there are random directions to measure it with.
    """

    def __init__(
        self,
        use_proxy: bool = True,
        use_previous: bool = False,
        num_random: int = 0,
        radius: float = 16.0,
        seed: int = 0,
    ):
        if num_random < 0 or radius <= 0:
            raise ValueError(f"need num_random >= 0 and radius > 0, got {num_random}, {radius}")
        if not (use_proxy or use_previous or num_random):
            raise ValueError("PriorGuided needs a proxy, the previous direction or random ones")
        self.use_proxy, self.use_previous = use_proxy, use_previous
        self.num_random, self.radius, self.seed = num_random, radius, seed
        self.previous: Tensor | None = None

    @property
    def needs_prior(self) -> bool:  # type: ignore[override]
        return self.use_proxy

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        p = theta.numel()
        candidates: list[Tensor] = []
        if self.use_proxy:
            if context.prior is None:
                raise ValueError("PriorGuided(use_proxy=True) needs context.prior (a proxy)")
            candidates.append(context.prior.reshape(-1).to(theta))
        if self.use_previous and self.previous is not None:
            candidates.append(self.previous.to(theta))
        guided = len(candidates)
        candidates += [
            _gaussian(p, perturbation_seed(self.seed, context.k, j)).to(theta)
            for j in range(self.num_random)
        ]
        basis = [u.to(theta) for u in _orthonormal(candidates)]
        if not basis:  # a zero prior and nothing else: no direction; L(θ_k) still read
            loss = _checked(evaluate([theta]), 1)[0]
            return Estimate(torch.zeros_like(theta), loss, queries=1)
        radius = self.radius * context.c_k
        points = [theta + sign * radius * u for u in basis for sign in (1.0, -1.0)]
        losses = _checked(evaluate(points), len(points))
        slopes = [
            (lp - lm) / (2 * radius) for lp, lm in zip(losses[0::2], losses[1::2], strict=True)
        ]
        gradient = sum((s * u for s, u in zip(slopes, basis, strict=True)), torch.zeros_like(theta))
        self.previous = gradient.clone() if float(gradient.norm()) > 0 else self.previous
        quality = _prior_quality(slopes, guided, p)  # measurable with random directions only
        info = {} if math.isnan(quality) else {"prior_quality": quality}
        return Estimate(gradient, _mean(losses), queries=len(points), info=info)

    def state_dict(self) -> dict[str, Any]:
        return {"previous": None if self.previous is None else self.previous.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        previous = state.get("previous")
        self.previous = None if previous is None else previous.clone()


def _prior_quality(slopes: list[float], guided: int, p: int) -> float:
    """α̂ = d₀ / ‖g‖ with ‖g‖² ≈ Σ_guided d² + (p − guided)·mean(d_random²) (module docstring)."""
    random = slopes[guided:]
    if guided == 0 or not random:
        return math.nan
    norm_sq = sum(s * s for s in slopes[:guided]) + (p - guided) * _mean([s * s for s in random])
    return slopes[0] / math.sqrt(norm_sq) if norm_sq > 0 else 0.0


class PriorGuidedSearch(GradientEstimator):
    """A comparison search along the proxy's gradient (Gradientless Descent, Golovin et al. 2020,
    with PRGF's prior as its direction): 3 queries per step, at θ and θ ± r·u with u the unit
    prior and r = ``scale``·``radius``·c_k.

    A text answer's loss is piecewise constant, so a slope measured over r is a jump or nothing;
    but *which* of three points reads the lowest loss is information that needs no slope. The step
    goes to the lowest probe (``direction`` = (θ − probe)/a_k, as CMA-ES's does, so the loop's
    θ ← θ − a_k·direction lands on it); where θ itself reads lowest (ties included: nothing is
    gained by moving) there is no step and ``scale`` halves, because the valley θ sits in is
    narrower than r; after a step that gained, ``scale`` doubles back, up to 1. ``L(θ_k)`` is read
    exactly (the centre query). The scale is the estimator's state (resume restores it).
    """

    needs_prior = True

    def __init__(self, radius: float = 16.0, min_scale: float = 1 / 64):
        if radius <= 0 or not 0 < min_scale <= 1:
            raise ValueError(f"need radius > 0 and 0 < min_scale <= 1, got {radius}, {min_scale}")
        self.radius, self.min_scale = radius, min_scale
        self.scale = 1.0

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        if context.prior is None:
            raise ValueError("PriorGuidedSearch needs context.prior (a proxy)")
        if context.a_k <= 0:
            raise ValueError(f"PriorGuidedSearch needs a step size a_k > 0, got {context.a_k}")
        prior = context.prior.reshape(-1).to(theta)
        norm = float(prior.norm())
        if norm == 0:  # no direction to search along; L(θ_k) still read
            return Estimate(torch.zeros_like(theta), _checked(evaluate([theta]), 1)[0], queries=1)
        step = self.scale * self.radius * context.c_k * (prior / norm)
        points = [theta, theta + step, theta - step]
        losses = _checked(evaluate(points), 3)
        best = min(range(3), key=lambda i: (losses[i], i))  # the centre wins ties
        if best == 0:
            self.scale = max(self.min_scale, self.scale / 2)
            direction = torch.zeros_like(theta)
        else:
            self.scale = min(1.0, self.scale * 2)
            direction = (theta - points[best]) / context.a_k
        return Estimate(direction, losses[0], queries=3, info={"search_scale": self.scale})

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])


class QueriedHistory(PriorGuided):
    """Meier et al. (2019): one antithetic pair on the previous step's direction, its coefficient
    measured, plus ``num_random`` random orthogonal directions (2 + 2·num_random queries)."""

    def __init__(self, num_random: int = 1, radius: float = 16.0, seed: int = 0):
        super().__init__(use_proxy=False, use_previous=True, num_random=num_random,
                         radius=radius, seed=seed)  # fmt: skip


class _RandomSubspace:
    """A seeded p × d Gaussian basis A/√d, regenerated every ``resample_every`` steps (0: never),
    so ‖Aξ‖ ≈ √p for ξ ∈ {±1}^d, like SPSA's Δ. Never stored: rebuilt from (seed, epoch)."""

    def __init__(self, dim: int, resample_every: int, seed: int):
        if dim < 1 or resample_every < 0:
            raise ValueError(f"need dim >= 1 and resample_every >= 0, got {dim}, {resample_every}")
        self.dim, self.resample_every, self.seed = dim, resample_every, seed
        self._key: tuple[int, int] | None = None
        self._basis: Tensor | None = None

    def basis(self, numel: int, k: int) -> Tensor:
        epoch = k // self.resample_every if self.resample_every else 0
        if self._key != (numel, epoch):
            generator = torch.Generator().manual_seed(perturbation_seed(self.seed, -1 - epoch))
            self._basis = torch.randn(numel, self.dim, generator=generator) / math.sqrt(self.dim)
            self._key = (numel, epoch)
        assert self._basis is not None
        return self._basis


class SubspaceSPSA(GradientEstimator):
    """SPSA in a seeded random subspace: Δ = Aξ, ξ ~ Rademacher(d); ĝ = A·ĝ_ξ with
    ĝ_ξ = (L⁺ − L⁻)/(2c_k)·ξ. 2q queries per step; the search has d dimensions instead of p."""

    def __init__(
        self, dim: int = 256, num_perturbations: int = 1, resample_every: int = 0, seed: int = 0
    ):
        if num_perturbations < 1:
            raise ValueError(f"num_perturbations must be >= 1, got {num_perturbations}")
        self.subspace = _RandomSubspace(dim, resample_every, seed)
        self.num_perturbations, self.seed = num_perturbations, seed

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        basis = self.subspace.basis(theta.numel(), context.k).to(theta)
        xis = [
            rademacher(self.subspace.dim, perturbation_seed(self.seed, context.k, j)).to(theta)
            for j in range(self.num_perturbations)
        ]
        # A·((L⁺ − L⁻)/(2c_k)·ξ) = (L⁺ − L⁻)/(2c_k)·Aξ: Eq. 7 with the directions Aξ
        return _two_point(theta, evaluate, [basis @ xi for xi in xis], context.c_k)


class CMAES(GradientEstimator):
    """Separable CMA-ES (``cma``'s ``CMA_diagonal``), re-centred on θ_k at every step.

    ``popsize`` queries per step. Its "direction" is the move of the distribution mean divided by
    a_k, so the loop's θ ← θ − a_k·direction lands on CMA-ES's new mean exactly when the utility
    branch is taken (and the scalarized step can mix it with the privacy gradient otherwise).
    Re-centring lets θ move for other reasons between steps (privacy steps); step size and
    covariance adapt as usual. A resume starts a fresh distribution at the restored θ: the
    ``cma`` object is not saved (restoring it would mean unpickling a checkpoint).
    """

    def __init__(self, sigma: float = 0.05, popsize: int = 8, seed: int = 0):
        if sigma <= 0 or popsize < 2:
            raise ValueError(f"need sigma > 0 and popsize >= 2, got {sigma}, {popsize}")
        self.sigma, self.popsize, self.seed = sigma, popsize, seed
        self.strategy: Any = None

    def _start(self, theta: Tensor) -> Tensor:
        """The search-space point the distribution is centred on at step k (θ_k itself)."""
        return theta

    def _from_search(self, x: Tensor, theta: Tensor) -> Tensor:
        """A search-space point → head parameters."""
        return x

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        import cma

        centre = self._start(theta).double().cpu()
        if self.strategy is None:
            options = {"popsize": self.popsize, "seed": self.seed + 1, "CMA_diagonal": True,
                       "verbose": -9, "verb_disp": 0, "verb_log": 0}  # fmt: skip
            self.strategy = cma.CMAEvolutionStrategy(centre.numpy(), self.sigma, options)
        else:
            self.strategy.mean[:] = centre.numpy()
        candidates = self.strategy.ask()
        points = [self._from_search(torch.from_numpy(x).to(theta), theta) for x in candidates]
        losses = _checked(evaluate(points), len(points))
        self.strategy.tell(candidates, losses)
        mean = self._from_search(torch.from_numpy(self.strategy.mean.copy()).to(theta), theta)
        step = theta - mean
        direction = step / context.a_k if context.a_k > 0 else step
        return Estimate(direction, _mean(losses), queries=len(points))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strategy = None


class SubspaceCMAES(CMAES):
    """BBT (Sun et al., 2022): CMA-ES over z ∈ ℝ^d with θ = θ_k + A·z, A a seeded random basis;
    re-centred at z = 0 on θ_k at every step. ``popsize`` queries per step."""

    def __init__(
        self, dim: int = 256, sigma: float = 0.05, popsize: int = 8, resample_every: int = 0,
        seed: int = 0,
    ):  # fmt: skip
        super().__init__(sigma, popsize, seed)
        self.subspace = _RandomSubspace(dim, resample_every, seed)
        self._k = 0

    def estimate(self, theta: Tensor, evaluate: Evaluate, context: StepContext) -> Estimate:
        self._k = context.k
        return super().estimate(theta, evaluate, context)

    def _start(self, theta: Tensor) -> Tensor:
        return torch.zeros(self.subspace.dim, dtype=theta.dtype)

    def _from_search(self, x: Tensor, theta: Tensor) -> Tensor:
        return theta + self.subspace.basis(theta.numel(), self._k).to(theta) @ x


class CountingObjective:
    """A batched objective that counts its evaluations (one per point, i.e. one query per
    sample): how Tab. 6 counts queries, the same way for every estimator."""

    def __init__(self, objective: Evaluate):
        self.objective = objective
        self.evaluations = 0

    def __call__(self, points: list[Tensor]) -> list[float]:
        self.evaluations += len(points)
        return [float(v) for v in self.objective(points)]


def descend(
    theta: Tensor,
    estimator: GradientEstimator,
    evaluate: Evaluate,
    gains: Any,
    k: int,
    prior: Tensor | None = None,
) -> tuple[Tensor, Estimate]:
    """One utility-only step θ ← θ − a_k(1 + I_k)·direction (Eq. 12 without the privacy term),
    with ``gains`` a :class:`~privacy_lit.zo.spsa.GainSchedule`: what ``bench zo`` runs on its
    head task."""
    context = StepContext(k, gains.perturbation_size(k), gains.step_size(k), prior)
    estimate = estimator.estimate(theta, evaluate, context)
    return theta - context.a_k * (1.0 + estimate.indicator) * estimate.direction, estimate
