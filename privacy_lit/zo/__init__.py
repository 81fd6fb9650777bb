"""Zeroth-order optimization in plain PyTorch, usable without Lightning.

- :mod:`.spsa`: the SPSA estimator (Eq. 7, optionally averaged over q perturbations), seeded
  Rademacher perturbations, gain schedules.
- :mod:`.history`: the critical-history buffer (Eq. 8, Alg. 1), enhanced gradient (Eq. 9) and
  status indicator (Eq. 10).
- :mod:`.optimizers`: the method and its baselines (SPSA-GC, NES, REINFORCE, CMA-ES) behind one
  interface, counting black-box evaluations the same way (Tab. 6).
- :mod:`.scalarize`: weighted sum (Eq. 4), Tchebycheff (Eq. 5), augmented Tchebycheff (Eq. 6, 11).
"""

from privacy_lit.zo.history import CriticalHistory, CriticalHistoryEstimator, status_indicator
from privacy_lit.zo.scalarize import ParetoScalarizer
from privacy_lit.zo.spsa import (
    GainSchedule,
    averaged_spsa_gradient,
    perturbation_seed,
    perturbed,
    rademacher,
    spsa_gradient,
)

__all__ = [
    "CriticalHistory",
    "CriticalHistoryEstimator",
    "GainSchedule",
    "averaged_spsa_gradient",
    "perturbation_seed",
    "ParetoScalarizer",
    "perturbed",
    "rademacher",
    "spsa_gradient",
    "status_indicator",
]
