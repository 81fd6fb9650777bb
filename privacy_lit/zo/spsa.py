"""Simultaneous-perturbation stochastic approximation (SPSA, Spall 1992; Eq. 7 of the paper).

The estimator needs two evaluations of the black box per step, whatever the number of parameters:

    ĝ_k = (L(θ_k + c_k Δ_k) − L(θ_k − c_k Δ_k)) / (2 c_k Δ_k),   Δ_k ~ Rademacher(±1)^p

Because Δ_k has entries ±1, dividing by Δ_k equals multiplying by it. Perturbations are derived
from an integer seed (MeZO's trick): the same seed regenerates the same Δ_k on any rank or after
a restart, so nothing but the seed has to be stored or broadcast.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class GainSchedule:
    """Standard SPSA gain sequences a_k = a / (k + 1 + A)^α and c_k = c / (k + 1)^γ_c.

    Defaults are App. E of the paper: a = 0.01 with decay 0.4, c = 0.005 with decay 0.2, A = 0.
    """

    a: float = 0.01
    a_decay: float = 0.4
    stability: float = 0.0
    c: float = 0.005
    c_decay: float = 0.2

    def __post_init__(self) -> None:
        if self.a <= 0 or self.c <= 0:
            raise ValueError(f"SPSA gains must be positive, got a={self.a}, c={self.c}")
        if self.stability < 0 or self.a_decay < 0 or self.c_decay < 0:
            raise ValueError("SPSA decay exponents and the stability constant A must be >= 0")

    def step_size(self, k: int) -> float:
        """a_k for the 0-based step index k."""
        return self.a / (k + 1 + self.stability) ** self.a_decay

    def perturbation_size(self, k: int) -> float:
        """c_k for the 0-based step index k."""
        return self.c / (k + 1) ** self.c_decay


def rademacher(numel: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """A ±1 vector regenerated bit for bit from ``seed`` (CPU generator, so ranks agree)."""
    generator = torch.Generator().manual_seed(int(seed))
    signs = torch.randint(0, 2, (numel,), generator=generator, dtype=torch.int8)
    return (signs.to(torch.float32) * 2 - 1).to(device)


def perturbation_seed(base: int, step: int, index: int = 0) -> int:
    """The seed of the ``index``-th perturbation of step ``step``: Δ is never stored, only this."""
    key = f"{base}:{step}" if index == 0 else f"{base}:{step}:{index}"
    return zlib.crc32(key.encode())


def flat_parameters(params: Sequence[nn.Parameter]) -> Tensor:
    """Concatenated copy of the parameters (θ as one vector)."""
    return torch.cat([p.detach().reshape(-1) for p in params])


def flat_gradient(loss: Tensor, params: Sequence[nn.Parameter]) -> Tensor:
    """∇θ ``loss`` as one vector, in the order of :func:`flat_parameters`."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params))])


def assign_flat(params: Sequence[nn.Parameter], vector: Tensor) -> None:
    """Write a flat vector back into the parameters, in place."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vector[offset : offset + n].view_as(p))
            offset += n
    if offset != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, parameters have {offset}")


@contextmanager
def assigned(params: Sequence[nn.Parameter], vector: Tensor) -> Iterator[None]:
    """Temporarily set θ ← ``vector``; θ is restored exactly (from a saved copy) on exit.

    Restoring from a copy rather than undoing a perturbation avoids floating-point drift: after
    many steps θ − cΔ + cΔ need not equal θ, and a ZO step must not change θ except through its
    update.
    """
    original = flat_parameters(params)
    assign_flat(params, vector.to(original))
    try:
        yield
    finally:
        assign_flat(params, original)


def perturbed(params: Sequence[nn.Parameter], direction: Tensor, scale: float):
    """Temporarily set θ ← θ + scale·direction (restored exactly on exit, see :func:`assigned`)."""
    original = flat_parameters(params)
    return assigned(params, original + scale * direction.to(original))


def spsa_gradient(loss_plus: float, loss_minus: float, delta: Tensor, c_k: float) -> Tensor:
    """Eq. 7: ĝ = (L⁺ − L⁻)/(2c_k) · Δ (Δ ∈ {±1}, so 1/Δ = Δ)."""
    if not (math.isfinite(loss_plus) and math.isfinite(loss_minus)):
        raise FloatingPointError(f"black-box losses must be finite, got {loss_plus}, {loss_minus}")
    return ((loss_plus - loss_minus) / (2.0 * c_k)) * delta


def averaged_spsa_gradient(
    losses: Sequence[tuple[float, float]], deltas: Sequence[Tensor], c_k: float
) -> Tensor:
    """Eq. 7 averaged over q perturbations (q pairs (L⁺, L⁻), 2q queries): the variance of the
    estimate falls as 1/q while its cost in queries grows as q. With q = 1 this is Eq. 7 exactly."""
    if len(losses) != len(deltas) or not deltas:
        raise ValueError(
            f"need one (L+, L-) pair per perturbation, got {len(losses)}, {len(deltas)}"
        )
    estimates = [spsa_gradient(lp, lm, d, c_k) for (lp, lm), d in zip(losses, deltas, strict=True)]
    return sum(estimates[1:], estimates[0]) / len(estimates)
