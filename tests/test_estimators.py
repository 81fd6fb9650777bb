"""The estimator seam: every estimator on functions with known gradients, its query count, its
state through a checkpoint, and the paper's estimator bit for bit against the step before it."""

from __future__ import annotations

import io

import pytest
import torch

from privacy_lit.zo import estimators as zo
from privacy_lit.zo.spsa import GainSchedule
from tests.conftest import TinyBenchmark
from tests.paper_step import PreSeamSystem, run_paper_steps

P = 20
SCALES = torch.linspace(0.5, 2.0, P)
START = torch.ones(P)


def quadratic(points: list[torch.Tensor]) -> list[float]:
    return [float((SCALES * theta**2).sum()) for theta in points]


def quadratic_gradient(theta: torch.Tensor) -> torch.Tensor:
    return 2 * SCALES * theta


GAINS = GainSchedule(a=0.05, a_decay=0.2, c=0.01, c_decay=0.1)
PROJECTED = GainSchedule(a=0.2, a_decay=0.0, c=0.01, c_decay=0.0)
ESTIMATORS = {  # name: (make, gains, queries per step)
    "spsa": (lambda: zo.SPSA(), GAINS, 2),
    "spsa+history": (lambda: zo.HistoryEnhanced(zo.SPSA()), GAINS, 2),
    "spsa q=3": (lambda: zo.SPSA(num_perturbations=3), GAINS, 6),
    "spsa-gc": (lambda: zo.SPSAGC(), GainSchedule(a=0.005, a_decay=0.2, c=0.01, c_decay=0.1), 2),
    "nes": (lambda: zo.NES(population=2), GainSchedule(a=0.01, a_decay=0.0, c=0.01), 4),
    "reinforce": (lambda: zo.Reinforce(population=4),
                  GainSchedule(a=0.005, a_decay=0.0, c=0.1, c_decay=0.0), 4),
    "cma-es": (lambda: zo.CMAES(sigma=0.3, popsize=8), GAINS, 8),
    "subspace spsa": (lambda: zo.SubspaceSPSA(dim=8, resample_every=10), GAINS, 2),
    "subspace cma-es": (lambda: zo.SubspaceCMAES(dim=8, sigma=0.3, resample_every=10), GAINS, 8),
    "queried history": (lambda: zo.QueriedHistory(num_random=1), PROJECTED, 4),
    "prior-guided": (lambda: zo.PriorGuided(num_random=1), PROJECTED, 4),
    "prior-guided+history": (lambda: zo.HistoryEnhanced(zo.PriorGuided()), PROJECTED, 2),
    "prior-guided search": (lambda: zo.PriorGuidedSearch(), PROJECTED, 3),
}  # fmt: skip


def _noisy_prior(theta: torch.Tensor, k: int) -> torch.Tensor:
    """A proxy's gradient: the true one plus as much noise again (cosine ~0.7)."""
    g = quadratic_gradient(theta)
    noise = torch.randn(P, generator=torch.Generator().manual_seed(1000 + k))
    return g + noise * g.norm() / P**0.5


def _steps(estimator: zo.GradientEstimator, gains: GainSchedule, steps: int, theta=START):
    objective = zo.CountingObjective(quadratic)
    theta = theta.clone()
    for k in range(steps):
        prior = _noisy_prior(theta, k) if estimator.needs_prior else None
        theta, _ = zo.descend(theta, estimator, objective, gains, k, prior)
    return theta, objective.evaluations


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_each_estimator_descends_and_counts_its_queries(name: str) -> None:
    make, gains, per_step = ESTIMATORS[name]
    theta, evaluations = _steps(make(), gains, 150)
    first_step_saving = 2 if name == "queried history" else 0  # no previous direction yet
    assert evaluations == 150 * per_step - first_step_saving  # every evaluation counted
    assert quadratic([theta])[0] < 0.25 * quadratic([START])[0]


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_each_estimator_state_round_trips_through_a_checkpoint(name: str) -> None:
    make, gains, _ = ESTIMATORS[name]
    original = make()
    theta, _ = _steps(original, gains, 5)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = make()
    restored.load_state_dict(torch.load(buffer, weights_only=True))  # no code in a checkpoint
    if name in ("cma-es", "subspace cma-es"):
        return  # documented: a resume starts a fresh distribution (nothing to compare)
    prior = _noisy_prior(theta, 5) if original.needs_prior else None
    a, _ = zo.descend(theta, original, quadratic, gains, 5, prior)
    b, _ = zo.descend(theta, restored, quadratic, gains, 5, prior)
    assert torch.equal(a, b)


def linear(g: torch.Tensor):
    return lambda points: [float(g @ theta) + 3.0 for theta in points]


G = torch.linspace(-1.0, 2.0, 10)


@pytest.mark.parametrize(
    "make",
    [
        lambda k: zo.SPSA(seed=k),
        lambda k: zo.NES(population=1, seed=k),
        # one estimator throughout: its moving-average baseline only holds past draws
        (lambda shared: lambda k: shared)(zo.Reinforce(population=1, baseline_decay=0.5)),
        lambda k: zo.SubspaceSPSA(dim=4, resample_every=1, seed=k),
    ],
    ids=["spsa", "nes", "reinforce", "subspace-spsa-resampled"],
)
def test_random_direction_estimators_are_unbiased_on_a_linear_function(make) -> None:
    theta = torch.zeros(10, dtype=torch.float64)
    n = 6000
    total = torch.zeros(10, dtype=torch.float64)
    for k in range(n):
        total += make(k).estimate(theta, linear(G.double()), zo.StepContext(k, 0.01)).direction
    mean = total / n
    # the estimates' spread per coordinate is ~‖G‖ (or more), so the mean is within a few ‖G‖/√n
    assert float((mean - G).abs().max()) < 6 * float(G.norm()) / n**0.5


def test_prior_guided_recovers_the_gradient_when_the_prior_is_exact() -> None:
    theta = torch.zeros(10, dtype=torch.float64)
    estimate = zo.PriorGuided().estimate(
        theta, linear(G.double()), zo.StepContext(0, 0.01, prior=2.5 * G.double())
    )
    assert torch.allclose(estimate.direction, G.double(), atol=1e-9)
    assert estimate.queries == 2


def test_prior_guided_measures_a_wrong_prior_and_follows_it_only_as_far_as_it_holds() -> None:
    theta = torch.zeros(10, dtype=torch.float64)
    g = G.double()
    orthogonal = torch.zeros(10, dtype=torch.float64)
    orthogonal[0], orthogonal[1] = g[1], -g[0]  # g·orthogonal = 0
    useless = zo.PriorGuided().estimate(theta, linear(g), zo.StepContext(0, 0.01, prior=orthogonal))
    assert float(useless.direction.norm()) < 1e-9  # a useless prior costs 2 queries, no step
    flipped = zo.PriorGuided().estimate(theta, linear(g), zo.StepContext(0, 0.01, prior=-g))
    assert torch.allclose(flipped.direction, g, atol=1e-9)  # its sign is measured, not assumed


def test_prior_guided_search_steps_onto_the_lowest_probe_and_reads_the_centre() -> None:
    theta = torch.zeros(10, dtype=torch.float64)
    g = G.double()
    u = g / g.norm()
    search = zo.PriorGuidedSearch(radius=4.0)
    context = zo.StepContext(0, c_k=0.01, a_k=0.5, prior=-3.0 * g)  # its sign is not trusted
    estimate = search.estimate(theta, linear(g), context)
    assert torch.allclose(theta - context.a_k * estimate.direction, -0.04 * u, atol=1e-12)
    assert estimate.loss == 3.0 and estimate.queries == 3  # L(θ) itself, exactly


def test_prior_guided_search_narrows_where_the_centre_is_lowest_and_widens_back() -> None:
    g = G.double()
    valley = lambda points: [abs(float(g @ theta)) for theta in points]  # noqa: E731
    search = zo.PriorGuidedSearch(radius=4.0, min_scale=1 / 4)
    theta = torch.zeros(10, dtype=torch.float64)  # the bottom of the valley
    for expected in (0.5, 0.25, 0.25):  # halves, down to min_scale
        estimate = search.estimate(theta, valley, zo.StepContext(0, 0.01, 1.0, prior=g))
        assert not estimate.direction.any() and search.scale == expected
    state = search.state_dict()
    moved = theta + 0.5 * g / g.norm()
    search.estimate(moved, valley, zo.StepContext(1, 0.01, 1.0, prior=g))
    assert search.scale == 0.5  # a step that gained doubles the scale
    restored = zo.PriorGuidedSearch(radius=4.0, min_scale=1 / 4)
    restored.load_state_dict(state)
    assert restored.scale == 0.25


def test_prior_guided_search_descends_a_loss_that_moves_in_steps() -> None:
    """A text answer's loss: piecewise constant, so two-point slopes over c_k are mostly zero."""
    g = G.double()
    staircase = lambda points: [float(torch.floor(10 * (g @ t))) / 10 for t in points]  # noqa: E731
    theta = torch.ones(10, dtype=torch.float64)
    search = zo.PriorGuidedSearch()
    for k in range(10):
        estimate = search.estimate(theta, staircase, zo.StepContext(k, 0.01, 1.0, prior=g))
        theta = theta - estimate.direction
    assert staircase([theta])[0] <= staircase([torch.ones(10, dtype=torch.float64)])[0] - 1.0


def test_projection_estimates_always_point_downhill_on_a_linear_function() -> None:
    theta = torch.zeros(10, dtype=torch.float64)
    estimator = zo.QueriedHistory(num_random=2)
    for k in range(20):
        estimate = estimator.estimate(theta, linear(G.double()), zo.StepContext(k, 0.01))
        assert float(estimate.direction @ G.double()) > 0
        assert estimate.queries == (4 if k == 0 else 6)  # the previous direction from step 1 on


def test_prior_guided_needs_a_prior() -> None:
    with pytest.raises(ValueError, match="prior"):
        zo.PriorGuided().estimate(START, quadratic, zo.StepContext(0, 0.01))
    with pytest.raises(ValueError, match="needs a proxy"):
        zo.PriorGuided(use_proxy=False)


def test_history_with_gamma_one_and_b_zero_is_plain_spsa() -> None:
    plain, degenerate = zo.SPSA(), zo.HistoryEnhanced(zo.SPSA(), gamma=1.0, b=0.0)
    a = b = START.clone()
    for k in range(20):
        a, _ = zo.descend(a, plain, quadratic, GAINS, k)
        b, _ = zo.descend(b, degenerate, quadratic, GAINS, k)
        assert torch.equal(a, b)


def test_estimators_are_reproducible_from_their_seed() -> None:
    for name, (make, gains, _) in ESTIMATORS.items():
        assert torch.equal(_steps(make(), gains, 5)[0], _steps(make(), gains, 5)[0]), name


@pytest.mark.slow  # four three-step fits
def test_the_paper_estimator_gives_the_same_theta_as_the_step_before_the_seam(
    tiny: TinyBenchmark,
) -> None:
    for q in (1, 2):
        before = run_paper_steps(tiny, system=PreSeamSystem, num_perturbations=q)
        assert torch.equal(run_paper_steps(tiny, num_perturbations=q), before)


def test_prior_guided_measures_the_quality_of_an_exact_prior_as_one() -> None:
    theta = torch.zeros(10, dtype=torch.float64)
    estimate = zo.PriorGuided(num_random=2).estimate(
        theta, linear(G.double()), zo.StepContext(0, 0.01, prior=G.double())
    )
    assert estimate.info["prior_quality"] == pytest.approx(1.0, abs=1e-6)
    assert (
        "prior_quality"
        not in zo.PriorGuided()
        .estimate(theta, linear(G.double()), zo.StepContext(0, 0.01, prior=G.double()))
        .info
    )  # nothing to measure it against without random directions
