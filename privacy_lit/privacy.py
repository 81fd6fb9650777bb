"""The privacy objective L_Privacy the anonymizer minimizes (following Wu et al., TPAMI 2020).

The anonymizer wants the reviewer to be *uncertain* about every attribute, not confidently wrong
(a confidently-wrong reviewer still leaks: flip its output). Wu et al. therefore maximize the
reviewer's entropy. We use that entropy shifted by its maximum,

    L_Privacy = mean over samples and attributes of (ln 2 − H(σ(z))) = KL(Bern(σ(z)) ‖ Bern(½)),

which has the same gradient but is ≥ 0 with minimum 0, as the augmented Tchebycheff objective needs:
its utopia point z* − 0.1·z* must lie below every achievable value, which holds only for z* ≥ 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F


def privacy_loss(logits: Tensor) -> Tensor:
    """ln 2 − binary entropy of the reviewer's sigmoid outputs, averaged (see module docstring)."""
    p = torch.sigmoid(logits)
    entropy = F.binary_cross_entropy_with_logits(logits, p, reduction="none")
    return (math.log(2.0) - entropy).mean()
