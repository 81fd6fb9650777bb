"""Zeroth-order optimization in plain PyTorch, usable without Lightning.

- :mod:`.estimators`: the one seam every utility-gradient estimator plugs into
  (:class:`~.estimators.GradientEstimator`): the paper's estimator (SPSA with critical history),
  its baselines (SPSA-GC, NES, REINFORCE, CMA-ES) and estimators that carry more signal per query
  (prior-guided, queried history, random-subspace SPSA and CMA-ES).
- :mod:`.spsa`: Eq. 7, seeded Rademacher perturbations, gain schedules.
- :mod:`.history`: the critical-history buffer (Eq. 8, Alg. 1), enhanced gradient (Eq. 9) and
  status indicator (Eq. 10).
- :mod:`.scalarize`: weighted sum (Eq. 4), Tchebycheff (Eq. 5), augmented Tchebycheff (Eq. 6, 11).
- :mod:`.distributed`: a step over data-parallel ranks — the objective and the privacy gradient
  reduced over the global batch, so every rank builds the same estimate.
"""

from privacy_lit.zo.estimators import (
    CMAES,
    NES,
    SPSA,
    SPSAGC,
    CountingObjective,
    Estimate,
    GradientEstimator,
    HistoryEnhanced,
    NoSignal,
    PriorGuided,
    PriorGuidedSearch,
    QueriedHistory,
    Reinforce,
    StepContext,
    SubspaceCMAES,
    SubspaceSPSA,
    descend,
)
from privacy_lit.zo.history import CriticalHistory, CriticalHistoryEstimator, status_indicator
from privacy_lit.zo.scalarize import ParetoScalarizer
from privacy_lit.zo.spsa import (
    GainSchedule,
    assigned,
    averaged_spsa_gradient,
    perturbation_seed,
    perturbed,
    rademacher,
    spsa_gradient,
)

__all__ = [
    "CMAES",
    "CountingObjective",
    "CriticalHistory",
    "CriticalHistoryEstimator",
    "Estimate",
    "GainSchedule",
    "GradientEstimator",
    "HistoryEnhanced",
    "NES",
    "NoSignal",
    "ParetoScalarizer",
    "PriorGuided",
    "PriorGuidedSearch",
    "QueriedHistory",
    "Reinforce",
    "SPSA",
    "SPSAGC",
    "StepContext",
    "SubspaceCMAES",
    "SubspaceSPSA",
    "assigned",
    "averaged_spsa_gradient",
    "descend",
    "perturbation_seed",
    "perturbed",
    "rademacher",
    "spsa_gradient",
    "status_indicator",
]
