"""Critical-history enhanced gradient estimation (Sec. 3.4, Alg. 1 of the supplement).

SPSA estimates are noisy; the paper keeps the m estimates with the largest *decayed* norms
(s_t = d^(k−t)·‖ĝ_t‖, Eq. 8) and uses them as a prior:

    g̃_k = γ ĝ_k + (1 − γ) · mean(C_g)                      (Eq. 9, g̃_1 = ĝ_1)
    I_k = (b/π) · arctan(2π cos φ_k),  φ_k = ∠(ĝ_k, g̃_k)    (Eq. 10), step a'_k = (1 + I_k) a_k

Eq. 9 writes the history term as (1−γ)/m · ΣC_g. While the buffer holds n < m gradients we divide
by n (the mean of what is stored) instead of m: dividing by m would shrink the prior by n/m during
the first m steps for no reason, and once the buffer is full both readings coincide.

Every ablation of Tab. 7 is a switch on :class:`CriticalHistoryEstimator`; with ``gamma=1`` and
``b=0`` it returns ĝ_k and I_k = 0 exactly, i.e. plain SPSA.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

Selection = Literal["critical", "latest"]


class CriticalHistory:
    """The collection set C_g of Alg. 1 (lines 6–19): at most ``capacity`` past estimates.

    ``selection="critical"`` is the paper's rule (replace the lowest decayed score when the new
    estimate scores higher); ``"latest"`` is the "w/o critical gradient collection" ablation
    (a FIFO of the latest m estimates).
    """

    def __init__(self, capacity: int = 10, decay: float = 0.5, selection: Selection = "critical"):
        if capacity < 1:
            raise ValueError(f"history capacity m must be >= 1, got {capacity}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay d must lie in (0, 1], got {decay}")
        if selection not in ("critical", "latest"):
            raise ValueError(f"selection must be 'critical' or 'latest', got {selection!r}")
        self.capacity = capacity
        self.decay = decay
        self.selection = selection
        self.gradients: list[Tensor] = []
        self.steps: list[int] = []
        self.norms: list[float] = []

    def __len__(self) -> int:
        return len(self.gradients)

    def scores(self, step: int) -> list[float]:
        """Decayed importance s_{t_i} = d^(k − t_i) ‖ĝ_{t_i}‖₂ at step k (Eq. 8)."""
        return [self.decay ** (step - t) * n for t, n in zip(self.steps, self.norms, strict=True)]

    def mean(self) -> Tensor | None:
        """Mean of the stored estimates (see the module docstring for why not ΣC_g / m)."""
        if not self.gradients:
            return None
        return torch.stack(self.gradients).mean(dim=0)

    def update(self, gradient: Tensor, step: int) -> bool:
        """Offer ĝ_k to the buffer (Alg. 1 lines 6–19); returns whether it was stored.

        While there is room every estimate is stored. Alg. 1 read literally would, with a non-full
        buffer, *replace* the minimum whenever s_k beats it, so the buffer would only grow on weak
        estimates; we fill first, so C_g always holds the m highest decayed scores seen so far.
        """
        gradient = gradient.detach().clone()
        norm = float(torch.linalg.vector_norm(gradient))
        if len(self) >= self.capacity:
            if self.selection == "latest":
                victim = 0
            else:
                scores = self.scores(step)
                victim = min(range(len(scores)), key=scores.__getitem__)
                if not norm > scores[victim]:
                    return False
            self._remove(victim)
        self._append(gradient, step, norm)
        return True

    def _append(self, gradient: Tensor, step: int, norm: float) -> None:
        self.gradients.append(gradient)
        self.steps.append(step)
        self.norms.append(norm)

    def _remove(self, index: int) -> None:
        del self.gradients[index], self.steps[index], self.norms[index]

    def state_dict(self) -> dict[str, Any]:
        return {
            "gradients": [g.clone() for g in self.gradients],
            "steps": list(self.steps),
            "norms": list(self.norms),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gradients = [g.clone() for g in state["gradients"]]
        self.steps = list(state["steps"])
        self.norms = list(state["norms"])


def status_indicator(g_hat: Tensor, g_tilde: Tensor, b: float) -> float:
    """Eq. 10: I_k = (b/π)·arctan(2π·cos φ_k) ∈ (−b/2, b/2); 0 when either vector is zero."""
    denom = float(torch.linalg.vector_norm(g_hat) * torch.linalg.vector_norm(g_tilde))
    if denom == 0.0 or b == 0.0:
        return 0.0
    cos_phi = float(torch.dot(g_hat.flatten(), g_tilde.flatten())) / denom
    cos_phi = max(-1.0, min(1.0, cos_phi))
    return b / math.pi * math.atan(2 * math.pi * cos_phi)


class CriticalHistoryEstimator:
    """Turns raw SPSA estimates ĝ_k into the enhanced gradient g̃_k and status indicator I_k.

    Switches (Tab. 7): ``use_history=False`` is plain SPSA; ``selection="latest"`` drops the
    critical selection; ``adjust_direction=False`` keeps ĝ_k as the direction but still scales the
    step with I_k; ``adjust_step=False`` uses g̃_k with I_k = 0.
    """

    def __init__(
        self,
        gamma: float = 0.5,
        b: float = 0.3,
        capacity: int = 10,
        decay: float = 0.5,
        selection: Selection = "critical",
        use_history: bool = True,
        adjust_direction: bool = True,
        adjust_step: bool = True,
    ):
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        if not 0.0 <= b <= 2.0:  # b = 2 (Tab. A3) keeps a'_k = (1 + I_k)a_k in (0, 2a_k)
            raise ValueError(f"b must lie in [0, 2], got {b}")
        self.gamma = gamma
        self.b = b
        self.use_history = use_history
        self.adjust_direction = adjust_direction
        self.adjust_step = adjust_step
        self.history = CriticalHistory(capacity, decay, selection)

    def step(self, g_hat: Tensor, k: int) -> tuple[Tensor, float]:
        """Alg. 1 lines 1–5: returns (direction, I_k) and offers ĝ_k to the buffer afterwards."""
        if not self.use_history:
            return g_hat, 0.0
        prior = self.history.mean()
        g_tilde = g_hat if prior is None else self.gamma * g_hat + (1.0 - self.gamma) * prior
        indicator = status_indicator(g_hat, g_tilde, self.b) if self.adjust_step else 0.0
        self.history.update(g_hat, k)
        return (g_tilde if self.adjust_direction else g_hat), indicator

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history.load_state_dict(state["history"])
