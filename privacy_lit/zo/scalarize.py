"""Scalarizations of the two objectives (L_MLLM, L_Privacy) and the descent direction they imply.

- ``"ws"``  weighted sum (Eq. 4): λ₁g₁ + λ₂g₂ — finds only points on the convex hull of the front.
- ``"t"``   Tchebycheff (Eq. 5): follow the objective farthest from its utopia point z* − ε.
- ``"at"``  augmented Tchebycheff (Eq. 6, 11): Tchebycheff + σ·(λ₁g₁ + λ₂g₂), which makes every
  solution Pareto optimal rather than weakly so (Theorem 1).

z*_i is the best (smallest) value of objective i seen so far, ε_i = 0.1·z*_i and σ = 1e-4 (App. E).
The current losses are folded into z* *before* the branch is chosen, so the deviation
L_i − (z*_i − ε_i) is always at least ε_i. Both objectives must be non-negative for ε = 0.1·z* to be
an *unachievable* utopia point; :mod:`privacy_lit.system` defines them that way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

Method = Literal["ws", "t", "at"]


class ParetoScalarizer:
    """Keeps the ideal point z* and turns per-objective gradients into one descent direction."""

    def __init__(
        self,
        weights: Sequence[float] = (0.5, 0.5),
        method: Method = "at",
        eps_ratio: float = 0.1,
        sigma: float = 1e-4,
    ):
        if method not in ("ws", "t", "at"):
            raise ValueError(f"scalarization must be 'ws', 't' or 'at', got {method!r}")
        if any(w <= 0 for w in weights):
            raise ValueError(f"weights λ must be positive (Theorem 1), got {tuple(weights)}")
        self.weights = torch.tensor([float(w) for w in weights], dtype=torch.float64)
        self.method: Method = method
        self.eps_ratio = eps_ratio
        self.sigma = sigma
        self.ideal = torch.full_like(self.weights, float("inf"))

    def observe(self, losses: Sequence[float]) -> None:
        """z*_i ← min(z*_i, L_i)."""
        current = torch.tensor([float(v) for v in losses], dtype=torch.float64)
        self.ideal = torch.minimum(self.ideal, current)

    def deviations(self, losses: Sequence[float]) -> Tensor:
        """λ_i (L_i − (z*_i − ε_i)), the terms whose maximum is the Tchebycheff norm (Eq. 5)."""
        current = torch.tensor([float(v) for v in losses], dtype=torch.float64)
        utopia = self.ideal - self.eps_ratio * self.ideal.abs()
        return self.weights * (current - utopia)

    def value(self, losses: Sequence[float]) -> float:
        """The scalarized objective itself (Eq. 4, 5 or 6) at the current z*."""
        current = torch.tensor([float(v) for v in losses], dtype=torch.float64)
        weighted = float((self.weights * current).sum())
        if self.method == "ws":
            return weighted
        tche = float(self.deviations(losses).max())
        return tche + (self.sigma * weighted if self.method == "at" else 0.0)

    def direction(self, losses: Sequence[float], gradients: Sequence[Tensor]) -> tuple[Tensor, int]:
        """Observe the losses, then return (∇̂L, branch) per Eq. 11; branch is −1 for ``"ws"``.

        ``gradients[0]`` is the utility direction already scaled by (1 + I_k), as in Eq. 11.
        """
        if len(losses) != len(self.weights) or len(gradients) != len(self.weights):
            raise ValueError(f"expected {len(self.weights)} losses and gradients")
        self.observe(losses)
        weighted = sum(float(w) * g for w, g in zip(self.weights, gradients, strict=True))
        if self.method == "ws":
            return weighted, -1
        branch = int(torch.argmax(self.deviations(losses)))
        chosen = float(self.weights[branch]) * gradients[branch]
        if self.method == "at":
            chosen = chosen + self.sigma * weighted
        return chosen, branch

    def state_dict(self) -> dict[str, Any]:
        return {"ideal": self.ideal.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ideal = state["ideal"].clone()
