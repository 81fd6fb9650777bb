"""Action-recognition utility: top-1 accuracy of the retrieved class (Tab. 1, 2)."""

from __future__ import annotations

from typing import Any

from torchmetrics.classification import MulticlassAccuracy


class ActionTop1(MulticlassAccuracy):
    """Top-1 accuracy over all test clips (micro average: the fraction of clips whose retrieved
    class is the true action), the "Action Top-1" of the tables.

    torchmetrics' ``MulticlassAccuracy`` defaults to a *macro* (per-class mean) average, which is
    a different number on imbalanced test splits; this class pins ``top_k=1, average="micro"``.
    ``update`` takes predicted class indices ``N`` (or scores ``N × C``) and targets ``N``.

    Example:
        >>> import torch
        >>> metric = ActionTop1(num_classes=3)
        >>> metric.update(torch.tensor([0, 2, 1, 1]), torch.tensor([0, 2, 2, 2]))
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        for fixed in ("top_k", "average"):
            if fixed in kwargs:
                raise TypeError(f"ActionTop1 fixes {fixed}; use MulticlassAccuracy to change it")
        super().__init__(num_classes, top_k=1, average="micro", **kwargs)
