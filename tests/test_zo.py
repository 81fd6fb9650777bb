"""The zeroth-order pieces on functions with known gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_lit.zo import (
    CriticalHistory,
    CriticalHistoryEstimator,
    GainSchedule,
    ParetoScalarizer,
    averaged_spsa_gradient,
    perturbation_seed,
    perturbed,
    rademacher,
    spsa_gradient,
    status_indicator,
)


def test_rademacher_is_seeded_and_signed() -> None:
    a, b = rademacher(1000, seed=7), rademacher(1000, seed=7)
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(a, rademacher(1000, seed=8))


def test_spsa_is_unbiased_on_a_quadratic() -> None:
    torch.manual_seed(0)
    p = 20
    scales = torch.linspace(0.5, 3.0, p)
    theta = torch.nn.Parameter(torch.randn(p))
    true_grad = 2 * scales * theta.detach()

    def loss() -> float:
        return float((scales * theta.detach() ** 2).sum())

    estimates = []
    for k in range(4000):
        delta = rademacher(p, seed=k)
        with perturbed([theta], delta, 0.01):
            plus = loss()
        with perturbed([theta], delta, -0.01):
            minus = loss()
        estimates.append(spsa_gradient(plus, minus, delta, 0.01))
    mean = torch.stack(estimates).mean(0)
    # SPSA's variance per coordinate is ‖g‖² − g_i²; the mean of 4000 is within a few σ/√n.
    tolerance = 4 * true_grad.norm() / math.sqrt(4000)
    assert (mean - true_grad).abs().max() < tolerance


def test_averaging_q_perturbations_divides_the_variance_by_q() -> None:
    p, c = 50, 0.01
    true_grad = torch.linspace(-1.0, 1.0, p)

    def estimate(step: int, q: int) -> torch.Tensor:
        deltas = [rademacher(p, perturbation_seed(0, step, j)) for j in range(q)]
        # a linear loss: L(θ ± cΔ) − L(θ) = ±c⟨g, Δ⟩ exactly
        pairs = [(c * float(true_grad @ d), -c * float(true_grad @ d)) for d in deltas]
        return averaged_spsa_gradient(pairs, deltas, c)

    single = estimate(3, 1)
    delta = rademacher(p, perturbation_seed(0, 3))
    assert torch.equal(
        single, spsa_gradient(c * float(true_grad @ delta), -c * float(true_grad @ delta), delta, c)
    )
    variance = {q: torch.stack([estimate(k, q) for k in range(400)]).var(0).sum() for q in (1, 4)}
    assert 3.0 < float(variance[1] / variance[4]) < 5.5
    with pytest.raises(ValueError, match="pair per perturbation"):
        averaged_spsa_gradient([], [], c)


def test_perturbed_restores_parameters_exactly() -> None:
    theta = torch.nn.Parameter(torch.randn(33) * 1e3)
    before = theta.detach().clone()
    with perturbed([theta], rademacher(33, 1), 0.1234567):
        assert not torch.equal(theta.detach(), before)
    assert torch.equal(theta.detach(), before)


def test_gain_schedule_matches_app_e() -> None:
    g = GainSchedule()
    assert g.step_size(0) == pytest.approx(0.01)
    assert g.step_size(9) == pytest.approx(0.01 / 10**0.4)
    assert g.perturbation_size(9) == pytest.approx(0.005 / 10**0.2)


@settings(max_examples=60, deadline=None)
@given(
    norms=st.lists(st.floats(0.01, 100.0), min_size=1, max_size=40),
    capacity=st.integers(1, 8),
    decay=st.floats(0.1, 1.0),
)
def test_history_keeps_the_m_highest_decayed_scores(
    norms: list[float], capacity: int, decay: float
) -> None:
    history = CriticalHistory(capacity, decay)
    for k, n in enumerate(norms):
        history.update(torch.tensor([n, 0.0]), k)
    final = len(norms) - 1
    # decayed score of every estimate seen, at the last step
    scores = sorted((decay ** (final - k) * n for k, n in enumerate(norms)), reverse=True)
    kept = sorted(history.scores(final), reverse=True)
    assert len(kept) == min(capacity, len(norms))
    assert kept == pytest.approx(scores[: len(kept)])


def test_latest_selection_is_a_fifo() -> None:
    history = CriticalHistory(3, 0.5, selection="latest")
    for k in range(6):
        history.update(torch.full((2,), float(k)), k)
    assert history.steps == [3, 4, 5]


def test_status_indicator_bounds_and_monotonicity() -> None:
    b = 0.3
    g = torch.tensor([1.0, 0.0])
    values = []
    for angle in torch.linspace(0, math.pi, 50):
        other = torch.tensor([math.cos(angle), math.sin(angle)])
        value = status_indicator(g, other, b)
        assert -b / 2 < value < b / 2
        values.append(value)
    assert values == sorted(values, reverse=True)  # more aligned -> larger I_k
    assert values[0] > 0 > values[-1]


def test_gamma_one_and_b_zero_is_plain_spsa_bit_for_bit() -> None:
    torch.manual_seed(0)
    estimator = CriticalHistoryEstimator(gamma=1.0, b=0.0)
    for k in range(25):
        g_hat = torch.randn(50) * 10 ** torch.randint(-3, 3, (1,)).item()
        direction, indicator = estimator.step(g_hat, k)
        assert torch.equal(direction, g_hat)
        assert indicator == 0.0


def test_enhanced_gradient_is_eq9_with_the_mean_of_the_buffer() -> None:
    estimator = CriticalHistoryEstimator(gamma=0.5, b=0.3, capacity=2)
    first, i1 = estimator.step(torch.tensor([2.0, 0.0]), 0)
    assert torch.equal(first, torch.tensor([2.0, 0.0])) and i1 > 0  # g̃_1 = ĝ_1
    second, _ = estimator.step(torch.tensor([0.0, 4.0]), 1)
    assert torch.allclose(second, 0.5 * torch.tensor([0.0, 4.0]) + 0.5 * torch.tensor([2.0, 0.0]))


def test_ablation_switches() -> None:
    g = torch.tensor([1.0, 1.0])
    plain = CriticalHistoryEstimator(use_history=False)
    assert plain.step(g, 0) == (g, 0.0) and len(plain.history) == 0
    no_direction = CriticalHistoryEstimator(adjust_direction=False)
    no_direction.step(torch.tensor([1.0, -1.0]), 0)
    direction, indicator = no_direction.step(g, 1)
    assert torch.equal(direction, g) and indicator != 0.0
    no_step = CriticalHistoryEstimator(adjust_step=False)
    assert no_step.step(g, 0)[1] == 0.0


def test_augmented_tchebycheff_follows_the_farther_objective() -> None:
    s = ParetoScalarizer((0.5, 0.5), "at", eps_ratio=0.1, sigma=1e-4)
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    direction, branch = s.direction([1.0, 1.0], [g1, g2])  # both at their ideal: tie -> first
    assert branch == 0
    direction, branch = s.direction([1.0, 3.0], [g1, g2])  # privacy got worse -> privacy branch
    assert branch == 1
    assert torch.allclose(direction, 0.5 * g2 + 1e-4 * (0.5 * g1 + 0.5 * g2))
    ws = ParetoScalarizer((0.5, 0.5), "ws")
    assert torch.allclose(ws.direction([1.0, 3.0], [g1, g2])[0], 0.5 * g1 + 0.5 * g2)


def test_scalarizer_state_round_trips() -> None:
    s = ParetoScalarizer()
    s.observe([0.3, 0.7])
    t = ParetoScalarizer()
    t.load_state_dict(s.state_dict())
    assert torch.equal(s.ideal, t.ideal)


def _fonseca_fleming(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two objectives whose Pareto front (x₁ = … = x_n ∈ [−1/√n, 1/√n]) is non-convex."""
    shift = 1.0 / math.sqrt(x.numel())
    return 1 - torch.exp(-((x - shift) ** 2).sum()), 1 - torch.exp(-((x + shift) ** 2).sum())


@pytest.mark.parametrize("start", [[0.1, 0.1], [-0.2, -0.1], [0.4, -0.3]])
def test_augmented_tchebycheff_reaches_the_non_convex_part_of_a_front(start: list[float]) -> None:
    """App. C / Fig. C3: on a non-convex front the weighted sum can only reach its two ends;
    augmented Tchebycheff with the same λ stops at a Pareto-optimal point in between."""

    def descend(method: str) -> tuple[float, float]:
        x, scalarizer = torch.tensor(start), ParetoScalarizer((0.5, 0.5), method)
        for _ in range(2000):
            x.requires_grad_(True)
            f1, f2 = _fonseca_fleming(x)
            g1 = torch.autograd.grad(f1, x, retain_graph=True)[0]
            g2 = torch.autograd.grad(f2, x)[0]
            x = x.detach() - 0.05 * scalarizer.direction([f1.item(), f2.item()], [g1, g2])[0]
        return tuple(float(f) for f in _fonseca_fleming(x))

    ws, at = descend("ws"), descend("at")
    assert min(ws) < 0.01 and max(ws) > 0.95  # an end of the front
    assert max(at) < 0.8  # an interior trade-off
    shift = 1 / math.sqrt(2)
    front = [_fonseca_fleming(torch.full((2,), t)) for t in torch.linspace(-shift, shift, 401)]
    assert not any(f1 < at[0] - 0.02 and f2 < at[1] - 0.02 for f1, f2 in front)  # not dominated
