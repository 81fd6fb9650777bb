"""Zeroth-order optimizers behind one interface: the paper's method and its baselines (Tab. 6).

Every optimizer sees the black box only as an :data:`Objective` — a flat parameter vector in, one
loss out — and every call of it is one black-box evaluation, so queries are counted the same way
for all of them (:class:`CountingObjective`). Each keeps the gradient estimate it followed in
``gradient`` (``None`` for CMA-ES, which has none) so its variance and its cosine with a true
gradient can be measured (Fig. A1).

- :class:`SPSA`: Eq. 7 (q perturbations averaged), optionally with critical history (Alg. 1,
  Eq. 9–10) — the paper's estimator; without history it is plain SPSA.
- :class:`SPSAGC`: SPSA with Nesterov-style gradient correction (BlackVIP, CVPR 2023).
- :class:`NES`: natural evolution strategies with antithetic Gaussian perturbations.
- :class:`Reinforce`: a REINFORCE policy gradient for a Gaussian policy over θ, with a
  moving-average baseline.
- :class:`CMAES`: separable (diagonal) CMA-ES through the ``cma`` package; full covariance is
  O(p²) memory, which for the ~9k-parameter head is 650 MB and an O(p³) eigendecomposition.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from privacy_lit.zo.history import CriticalHistoryEstimator
from privacy_lit.zo.spsa import GainSchedule, averaged_spsa_gradient, perturbation_seed, rademacher

Objective = Callable[[Tensor], float]


class CountingObjective:
    """Wraps a black-box objective and counts its evaluations (one per call)."""

    def __init__(self, objective: Objective):
        self.objective = objective
        self.evaluations = 0

    def __call__(self, theta: Tensor) -> float:
        self.evaluations += 1
        return float(self.objective(theta))


def _gaussian(numel: int, seed: int) -> Tensor:
    """A standard normal vector regenerated from ``seed`` (like :func:`rademacher`)."""
    return torch.randn(numel, generator=torch.Generator().manual_seed(seed))


class ZerothOrderOptimizer(ABC):
    """One iteration at a time: ``theta = optimizer.step(theta, objective)``."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.k = 0
        self.gradient: Tensor | None = None

    def step(self, theta: Tensor, objective: Objective) -> Tensor:
        new_theta = self._step(theta.detach(), objective)
        self.k += 1
        return new_theta

    @abstractmethod
    def _step(self, theta: Tensor, objective: Objective) -> Tensor: ...


class SPSA(ZerothOrderOptimizer):
    """θ ← θ − a_k (1 + I_k) g̃_k: 2q evaluations per step.

    ``history=None`` is plain SPSA (ĝ_k, I_k = 0); a :class:`CriticalHistoryEstimator` gives the
    paper's enhanced direction and step scaling, with every Tab. 7 ablation as its switches.
    """

    def __init__(
        self,
        gains: GainSchedule | None = None,
        history: CriticalHistoryEstimator | None = None,
        num_perturbations: int = 1,
        seed: int = 0,
    ):
        super().__init__(seed)
        if num_perturbations < 1:
            raise ValueError(f"num_perturbations must be >= 1, got {num_perturbations}")
        self.gains = gains or GainSchedule()
        self.history, self.num_perturbations = history, num_perturbations
        self.indicator = 0.0
        self.estimate_: Tensor | None = None

    def estimate(self, theta: Tensor, objective: Objective) -> Tensor:
        """ĝ_k at ``theta`` (Eq. 7, averaged over q perturbations)."""
        c_k = self.gains.perturbation_size(self.k)
        deltas = [
            rademacher(theta.numel(), perturbation_seed(self.seed, self.k, j)).to(theta)
            for j in range(self.num_perturbations)
        ]
        pairs = [(objective(theta + c_k * d), objective(theta - c_k * d)) for d in deltas]
        return averaged_spsa_gradient(pairs, deltas, c_k)

    def _step(self, theta: Tensor, objective: Objective) -> Tensor:
        g_hat = self.estimate(theta, objective)
        direction, self.indicator = (
            (g_hat, 0.0) if self.history is None else self.history.step(g_hat, self.k)
        )
        self.estimate_, self.gradient = g_hat, direction  # the raw ĝ_k and the followed g̃_k
        return theta - self.gains.step_size(self.k) * (1.0 + self.indicator) * direction


class SPSAGC(SPSA):
    """BlackVIP's SPSA-GC: the estimate is taken at the look-ahead point θ + βm and corrects the
    momentum m ← βm − a_k ĝ(θ + βm); θ ← θ + m (Nesterov). 2q evaluations per step."""

    def __init__(
        self,
        gains: GainSchedule | None = None,
        momentum: float = 0.9,
        num_perturbations: int = 1,
        seed: int = 0,
    ):
        super().__init__(gains, None, num_perturbations, seed)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = momentum
        self.velocity: Tensor | None = None

    def _step(self, theta: Tensor, objective: Objective) -> Tensor:
        velocity = torch.zeros_like(theta) if self.velocity is None else self.velocity
        self.gradient = self.estimate(theta + self.momentum * velocity, objective)
        self.velocity = self.momentum * velocity - self.gains.step_size(self.k) * self.gradient
        return theta + self.velocity


class NES(ZerothOrderOptimizer):
    """Antithetic Gaussian NES: ĝ = Σ_j (L(θ + σε_j) − L(θ − σε_j)) ε_j / (2σn); θ ← θ − lr·ĝ.
    2n evaluations per step."""

    def __init__(self, lr: float, sigma: float, population: int = 1, seed: int = 0):
        super().__init__(seed)
        if lr <= 0 or sigma <= 0 or population < 1:
            raise ValueError(
                f"need lr, sigma > 0 and population >= 1, got {lr}, {sigma}, {population}"
            )
        self.lr, self.sigma, self.population = lr, sigma, population

    def _step(self, theta: Tensor, objective: Objective) -> Tensor:
        samples = [
            _gaussian(theta.numel(), perturbation_seed(self.seed, self.k, j)).to(theta)
            for j in range(self.population)
        ]
        pairs = [
            (objective(theta + self.sigma * e), objective(theta - self.sigma * e)) for e in samples
        ]
        # antithetic NES is Eq. 7's two-point formula with Gaussian instead of ±1 directions
        self.gradient = averaged_spsa_gradient(pairs, samples, self.sigma)
        return theta - self.lr * self.gradient


class Reinforce(ZerothOrderOptimizer):
    """REINFORCE for the policy θ' ~ N(θ, σ²I) with reward −L(θ'):
    ĝ = Σ_i (L(θ + σε_i) − b) ε_i / (σn), b a moving average of past losses. n evaluations per
    step: one-sided, so it pays for its baseline's bias with variance (the RL row of Tab. 6)."""

    def __init__(
        self,
        lr: float,
        sigma: float,
        population: int = 2,
        baseline_decay: float = 0.9,
        seed: int = 0,
    ):
        super().__init__(seed)
        if lr <= 0 or sigma <= 0 or population < 1 or not 0.0 <= baseline_decay < 1.0:
            raise ValueError("need lr, sigma > 0, population >= 1 and baseline_decay in [0, 1)")
        self.lr, self.sigma, self.population = lr, sigma, population
        self.baseline_decay = baseline_decay
        self.baseline: float | None = None

    def _step(self, theta: Tensor, objective: Objective) -> Tensor:
        samples = [
            _gaussian(theta.numel(), perturbation_seed(self.seed, self.k, j)).to(theta)
            for j in range(self.population)
        ]
        losses = [objective(theta + self.sigma * eps) for eps in samples]
        mean = sum(losses) / len(losses)
        baseline = mean if self.baseline is None else self.baseline
        gradient = sum((loss - baseline) * eps for loss, eps in zip(losses, samples, strict=True))
        self.gradient = gradient / (self.sigma * self.population)
        decay = self.baseline_decay
        self.baseline = (
            mean if self.baseline is None else decay * self.baseline + (1 - decay) * mean
        )
        return theta - self.lr * self.gradient


class CMAES(ZerothOrderOptimizer):
    """Separable CMA-ES (``cma``'s ``CMA_diagonal``): ``popsize`` evaluations per step; θ is the
    distribution mean. No gradient estimate (``gradient`` stays ``None``)."""

    def __init__(self, sigma: float, popsize: int = 8, seed: int = 0):
        super().__init__(seed)
        if sigma <= 0 or popsize < 2:
            raise ValueError(f"need sigma > 0 and popsize >= 2, got {sigma}, {popsize}")
        self.sigma, self.popsize = sigma, popsize
        self.strategy = None

    def _step(self, theta: Tensor, objective: Objective) -> Tensor:
        import cma

        if self.strategy is None:
            options = {"popsize": self.popsize, "seed": self.seed + 1, "CMA_diagonal": True,
                       "verbose": -9, "verb_disp": 0, "verb_log": 0}  # fmt: skip
            self.strategy = cma.CMAEvolutionStrategy(
                theta.double().cpu().numpy(), self.sigma, options
            )
        candidates = self.strategy.ask()
        losses = [objective(torch.from_numpy(x).to(theta)) for x in candidates]
        self.strategy.tell(candidates, losses)
        return torch.from_numpy(self.strategy.mean.copy()).to(theta)
