"""Every zeroth-order optimizer behind the one interface, on a function with a known minimum."""

from __future__ import annotations

import pytest
import torch

from privacy_lit.zo import optimizers as zo
from privacy_lit.zo.history import CriticalHistoryEstimator
from privacy_lit.zo.spsa import GainSchedule

P = 20
SCALES = torch.linspace(0.5, 2.0, P)
START = torch.ones(P)


def quadratic(theta: torch.Tensor) -> float:
    return float((SCALES * theta**2).sum())


GAINS = GainSchedule(a=0.05, a_decay=0.2, c=0.01, c_decay=0.1)
OPTIMIZERS = {
    "spsa": (lambda: zo.SPSA(GAINS), 2),
    "spsa+history": (lambda: zo.SPSA(GAINS, CriticalHistoryEstimator()), 2),
    "spsa q=3": (lambda: zo.SPSA(GAINS, num_perturbations=3), 6),
    "spsa-gc": (lambda: zo.SPSAGC(GainSchedule(a=0.005, a_decay=0.2, c=0.01, c_decay=0.1)), 2),
    "nes": (lambda: zo.NES(lr=0.01, sigma=0.01, population=2), 4),
    "reinforce": (lambda: zo.Reinforce(lr=0.005, sigma=0.1, population=4), 4),
    "cma-es": (lambda: zo.CMAES(sigma=0.3, popsize=8), 8),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_optimizer_descends_and_counts_its_queries(name: str) -> None:
    make, per_step = OPTIMIZERS[name]
    optimizer: zo.ZerothOrderOptimizer = make()
    objective = zo.CountingObjective(quadratic)
    theta = START.clone()
    for _ in range(150):
        theta = optimizer.step(theta, objective)
    assert objective.evaluations == 150 * per_step  # every black-box evaluation counted
    assert quadratic(theta) < 0.25 * quadratic(START)
    if name == "cma-es":
        assert optimizer.gradient is None
    else:
        assert optimizer.gradient is not None and optimizer.gradient.shape == START.shape


def test_spsa_without_history_equals_history_with_gamma_one_and_b_zero() -> None:
    plain, degenerate = zo.SPSA(GAINS), zo.SPSA(GAINS, CriticalHistoryEstimator(gamma=1.0, b=0.0))
    a = b = START.clone()
    for _ in range(20):
        a, b = plain.step(a, quadratic), degenerate.step(b, quadratic)
        assert torch.equal(a, b)


def test_optimizers_are_reproducible_from_their_seed() -> None:
    for make, _ in OPTIMIZERS.values():
        runs = []
        for _ in range(2):
            optimizer, theta = make(), START.clone()
            for _ in range(5):
                theta = optimizer.step(theta, quadratic)
            runs.append(theta)
        assert torch.equal(*runs)
