"""Privacy metrics of the evaluation protocol: class-wise mean average precision (cMAP) of a fresh
privacy reviewer, and the per-attribute precision of Tab. B11.

Both score the *reviewer's* predictions on anonymized images, so for the anonymizer lower is better
(less privacy leaks through); ``higher_is_better`` is therefore ``False`` on both classes.

Two different numbers hide behind App. E's wording. Its formula
``cMAP = 1/n Σ_i TP_i / (TP_i + FP_i)`` is a mean of per-class *precisions* at one threshold, but
the protocol it follows (VITA, SPAct: ``average_precision_score`` per class, then the mean) and
every reported "cMAP" column is the mean of per-class *average precision* (the area under each
class's precision-recall curve, threshold-free). We report cMAP as macro AP
(:class:`ClasswiseMAP`) and the thresholded precision separately (:class:`PerAttributePrecision`),
as Tab. B11 does.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelPrecision
from torchmetrics.functional.classification import (
    multilabel_average_precision,
    multilabel_precision,
)

EmptyClasses = Literal["ignore", "zero", "error"]
_EMPTY_CHOICES = ("ignore", "zero", "error")
# torchmetrics' own warning for a class without positives; we replace it with one naming the class.
_TM_NO_POSITIVES = r"No positive samples found in target"


def _check_empty_classes(empty_classes: str) -> None:
    if empty_classes not in _EMPTY_CHOICES:
        raise ValueError(f"empty_classes must be one of {_EMPTY_CHOICES}, got {empty_classes!r}")


def _check_names(names: Sequence[str] | None, num_labels: int) -> list[str] | None:
    if names is None:
        return None
    names = list(names)
    if len(names) != num_labels:
        raise ValueError(f"got {len(names)} names for {num_labels} labels: {names}")
    return names


def _count_positives(target: Tensor, ignore_index: int | None = None) -> Tensor:
    """Positives per class of a multilabel target ``N × C`` (or ``N × C × ...``)."""
    per_class = target.transpose(0, 1).reshape(target.shape[1], -1)
    positive = per_class == 1
    if ignore_index is not None:
        positive &= per_class != ignore_index
    return positive.sum(dim=1)


def _one_label_ok(preds: Tensor, target: Tensor, ignore_index: int | None) -> None:
    """torchmetrics' multilabel checks insist on at least two labels, although its per-label
    maths holds for one (a one-attribute setting); this is their input check for that case."""
    if preds.ndim != 2 or preds.shape[1] != 1 or target.shape != preds.shape:
        raise ValueError(
            f"one label: expected preds and target of shape N x 1, got {tuple(preds.shape)} and "
            f"{tuple(target.shape)}"
        )
    if not preds.is_floating_point() or target.is_floating_point():
        raise ValueError("expected float preds (scores) and an integer 0/1 target")
    allowed = torch.tensor([0, 1] + ([ignore_index] if ignore_index is not None else []))
    if not bool(torch.isin(target, allowed.to(target.device)).all()):
        raise ValueError(f"the target must hold 0/1 (or ignore_index), got {target.unique()}")


def reduce_classwise_ap(
    per_class: Tensor,
    positives: Tensor,
    empty_classes: EmptyClasses = "ignore",
    average: Literal["macro", "none"] = "macro",
    names: Sequence[str] | None = None,
) -> Tensor:
    """Combine per-class AP into cMAP, handling classes without a positive test sample.

    The AP of a class with no positives is undefined (recall is 0/0). sklearn and torchmetrics
    both set recall to 1 there, which makes the class's AP 0 and pulls the macro mean *down*;
    for a privacy score (lower = better) an attribute absent from the test set would then make
    every anonymizer look better. So:

    - ``"ignore"`` (default): such classes are left out of the mean (and are NaN with
      ``average="none"``); a warning names them.
    - ``"zero"``: they count as AP 0, exactly ``sklearn.metrics.average_precision_score(
      average="macro")`` and torchmetrics' ``MultilabelAveragePrecision``.
    - ``"error"``: raise, for protocols where every attribute must be present.

    On inputs where every class has at least one positive, all three agree with sklearn.
    """
    _check_empty_classes(empty_classes)
    empty = positives == 0
    per_class = per_class.clone()
    if bool(empty.any()):
        which = [names[i] if names else str(i) for i in empty.nonzero().flatten().tolist()]
        if empty_classes == "error":
            raise ValueError(f"no positive target for class(es) {which}: their AP is undefined")
        if empty_classes == "ignore":
            warnings.warn(
                f"cMAP: no positive target for class(es) {which}; left out of the mean "
                "(empty_classes='ignore'). Use empty_classes='zero' to count them as AP 0 "
                "like sklearn.",
                UserWarning,
                stacklevel=3,
            )
            per_class[empty] = float("nan")
        else:
            per_class[empty] = 0.0
    if average == "none":
        return per_class
    if average != "macro":
        raise ValueError(f"average must be 'macro' or 'none', got {average!r}")
    kept = per_class[~per_class.isnan()]
    if kept.numel() == 0:
        return torch.tensor(float("nan"), dtype=per_class.dtype, device=per_class.device)
    return kept.mean()


def classwise_map(
    preds: Tensor,
    target: Tensor,
    empty_classes: EmptyClasses = "ignore",
    average: Literal["macro", "none"] = "macro",
    thresholds: int | list[float] | Tensor | None = None,
    ignore_index: int | None = None,
    names: Sequence[str] | None = None,
) -> Tensor:
    r"""Privacy cMAP: the macro mean over attribute classes of each class's average precision.

    .. math::
        \mathrm{AP}_c = \sum_k (R_{c,k} - R_{c,k-1})\, P_{c,k}, \qquad
        \mathrm{cMAP} = \frac{1}{|\mathcal C|} \sum_{c \in \mathcal C} \mathrm{AP}_c

    with :math:`P_{c,k}, R_{c,k}` the precision and recall of class :math:`c` at the
    :math:`k`-th distinct score threshold (sklearn's definition, no interpolation) and
    :math:`\mathcal C` the classes kept by ``empty_classes`` (see :func:`reduce_classwise_ap`).

    Args:
        preds: scores ``N × C`` (probabilities, or logits: torchmetrics applies a sigmoid to
            values outside [0, 1]).
        target: ``N × C`` of 0/1 (int).
        empty_classes: what to do with classes without a positive (``"ignore"`` | ``"zero"`` |
            ``"error"``).
        average: ``"macro"`` → a scalar; ``"none"`` → the per-class AP vector.
        thresholds: ``None`` for the exact AP; an int or list for torchmetrics' binned
            (constant-memory) approximation.

    Example:
        >>> import torch
        >>> preds = torch.tensor([[0.9, 0.2], [0.6, 0.8], [0.3, 0.7], [0.1, 0.4]])
        >>> target = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
        >>> classwise_map(preds, target, average="none")  # class 0: (1 + 2/3) / 2
        tensor([0.8333, 1.0000])
        >>> round(float(classwise_map(preds, target)), 4)
        0.9167
    """
    _check_empty_classes(empty_classes)
    num_labels = preds.shape[1]
    if num_labels == 1:
        _one_label_ok(preds, target, ignore_index)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TM_NO_POSITIVES)
        per_class = multilabel_average_precision(
            preds, target, num_labels, average="none", thresholds=thresholds,
            ignore_index=ignore_index, validate_args=num_labels > 1,
        ).reshape(-1)  # fmt: skip
    positives = _count_positives(target, ignore_index)
    return reduce_classwise_ap(per_class, positives, empty_classes, average, names)


class ClasswiseMAP(MultilabelAveragePrecision):
    r"""Privacy cMAP (macro mean of per-class average precision) as a torchmetrics ``Metric``.

    A thin layer over torchmetrics' ``MultilabelAveragePrecision`` (which owns the state and its
    distributed sync) that adds an explicit, documented policy for classes without positives
    (``empty_classes``, see :func:`reduce_classwise_ap`) and class names for messages. The formula
    and an example are in :func:`classwise_map`; App. E's :math:`TP/(TP+FP)` is per-class
    *precision* and is :class:`PerAttributePrecision`.

    Args:
        num_labels: number of privacy attributes (one works too: a one-attribute setting).
        empty_classes: ``"ignore"`` (default) | ``"zero"`` (= sklearn) | ``"error"``.
        average: ``"macro"`` (cMAP) or ``"none"`` (per-class AP).
        thresholds: ``None`` (exact) or torchmetrics' binning.
        names: attribute names, used in warnings.

    Example:
        >>> import torch
        >>> metric = ClasswiseMAP(2)
        >>> metric.update(torch.tensor([[0.9, 0.2], [0.6, 0.8]]), torch.tensor([[1, 0], [0, 1]]))
        >>> metric.update(torch.tensor([[0.3, 0.7], [0.1, 0.4]]), torch.tensor([[1, 1], [0, 0]]))
        >>> round(float(metric.compute()), 4)
        0.9167
    """

    is_differentiable = False
    higher_is_better = False  # a privacy score: less leakage is better for the anonymizer
    full_state_update = False

    def __init__(
        self,
        num_labels: int,
        empty_classes: EmptyClasses = "ignore",
        average: Literal["macro", "none"] = "macro",
        thresholds: int | list[float] | Tensor | None = None,
        ignore_index: int | None = None,
        validate_args: bool = True,
        names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        _check_empty_classes(empty_classes)
        if average not in ("macro", "none"):
            raise ValueError(f"average must be 'macro' or 'none', got {average!r}")
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
        # one label: torchmetrics refuses it in its checks only (see _one_label_ok)
        super().__init__(
            num_labels, average="none", thresholds=thresholds, ignore_index=ignore_index,
            validate_args=validate_args and num_labels > 1, **kwargs,
        )  # fmt: skip
        self.check_one_label = validate_args and num_labels == 1
        self.empty_classes = empty_classes
        self.cmap_average = average
        self.names = _check_names(names, num_labels)
        self.add_state("positives", torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if self.check_one_label:
            _one_label_ok(preds, target, self.ignore_index)
        super().update(preds, target)
        self.positives += _count_positives(target, self.ignore_index).to(self.positives.device)

    def compute(self) -> Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TM_NO_POSITIVES)
            per_class = super().compute().reshape(-1)  # one label: torchmetrics gives a scalar
        return reduce_classwise_ap(
            per_class, self.positives, self.empty_classes, self.cmap_average, self.names
        )


def per_attribute_precision(
    preds: Tensor,
    target: Tensor,
    threshold: float = 0.5,
    ignore_index: int | None = None,
) -> Tensor:
    r"""Per-attribute precision of Tab. B11 (App. E's :math:`TP_i / (TP_i + FP_i)`).

    .. math:: \mathrm{P}_c = \frac{TP_c}{TP_c + FP_c}, \quad
        \hat y_{n,c} = [\,s_{n,c} > \tau\,]

    A class that is never predicted positive (:math:`TP_c + FP_c = 0`) gets 0, as in sklearn's
    ``precision_score(average=None, zero_division=0)``.

    Example:
        >>> import torch
        >>> preds = torch.tensor([[0.9, 0.2], [0.6, 0.8], [0.3, 0.7], [0.1, 0.4]])
        >>> target = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
        >>> per_attribute_precision(preds, target)  # class 0: 1 of 2 predicted is right
        tensor([0.5000, 1.0000])
    """
    return multilabel_precision(
        preds, target, preds.shape[1], threshold=threshold, average="none",
        ignore_index=ignore_index,
    )  # fmt: skip


class PerAttributePrecision(MultilabelPrecision):
    r"""Per-attribute precision at a threshold (Tab. B11) as a torchmetrics ``Metric``.

    ``compute()`` returns the vector :math:`(P_c)_c` (formula in
    :func:`per_attribute_precision`); :meth:`as_dict` names its entries when ``names`` was given,
    which is what a results table or a logger wants.

    Args:
        num_labels: number of privacy attributes.
        threshold: scores ``> threshold`` count as predicted present (default 0.5).
        names: attribute names (e.g. VISPR ids ``a4_gender`` ...), in label order.

    Example:
        >>> import torch
        >>> metric = PerAttributePrecision(2, names=["gender", "face"])
        >>> metric.update(torch.tensor([[0.9, 0.2], [0.6, 0.8]]), torch.tensor([[1, 0], [0, 1]]))
        >>> metric.as_dict(metric.compute())
        {'gender': 0.5, 'face': 1.0}
    """

    is_differentiable = False
    higher_is_better = False  # a privacy score: less leakage is better for the anonymizer
    full_state_update = False

    def __init__(
        self,
        num_labels: int,
        threshold: float = 0.5,
        names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_labels, threshold=threshold, average="none", ignore_index=ignore_index,
            validate_args=validate_args, **kwargs,
        )  # fmt: skip
        self.names = _check_names(names, num_labels)

    def as_dict(self, values: Tensor) -> dict[str, float]:
        """``{name: precision}`` for a computed vector (names default to ``"0"``, ``"1"``, ...)."""
        names = self.names or [str(i) for i in range(len(values))]
        return {n: float(v) for n, v in zip(names, values.tolist(), strict=True)}
