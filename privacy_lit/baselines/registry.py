"""The heuristic baselines by name, so configs and the results table can list them as strings.

>>> build_baseline("downsample4")
Downsample()
>>> build_baseline("blur_weak").sigma_fraction
0.05
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from privacy_lit.baselines.downsample import Downsample
from privacy_lit.baselines.obfuscation import (
    STRONG_BLUR_SIGMA_FRACTION,
    WEAK_BLUR_SIGMA_FRACTION,
    Obfuscate,
)


def _raw(**kwargs: Any) -> nn.Module:
    if kwargs:
        raise TypeError(f"baseline 'raw' takes no options, got {sorted(kwargs)}")
    return nn.Identity()


def _downsample(factor: int) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        if kwargs:
            raise TypeError(f"baseline 'downsample{factor}' takes no options, got {sorted(kwargs)}")
        return Downsample(factor)

    return build


def _obfuscate(mode: str, sigma_fraction: float | None = None) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        defaults: dict[str, Any] = {"mode": mode}
        if sigma_fraction is not None:
            defaults["sigma_fraction"] = sigma_fraction
        return Obfuscate(**(defaults | kwargs))

    return build


# name → (builder, label in the paper's tables). Builders take keyword options, e.g.
# build_baseline("blacken", detector=my_person_detector, margin=0.1).
_BASELINES: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "raw": (_raw, "Raw data"),
    "downsample2": (_downsample(2), "Downsample-2×"),
    "downsample4": (_downsample(4), "Downsample-4×"),
    "downsample8": (_downsample(8), "Downsample-8×"),
    "blacken": (_obfuscate("blacken"), "Obf-Blackening"),
    "blur_strong": (_obfuscate("blur", STRONG_BLUR_SIGMA_FRACTION), "Obf-StrongBlur"),
    "blur_weak": (_obfuscate("blur", WEAK_BLUR_SIGMA_FRACTION), "Obf-WeakBlur"),
}
BASELINE_NAMES: tuple[str, ...] = tuple(_BASELINES)


def baseline_label(name: str) -> str:
    """The row label of a baseline in the paper's tables (e.g. ``"Obf-StrongBlur"``)."""
    _check(name)
    return _BASELINES[name][1]


def build_baseline(name: str, **kwargs: Any) -> nn.Module:
    """A fresh baseline anonymizer: images ``B × 3 × H × W`` in [0, 1] → the same shape.

    Names: ``raw``, ``downsample2``, ``downsample4``, ``downsample8``, ``blacken``,
    ``blur_strong``, ``blur_weak``. Keyword options go to the obfuscation baselines'
    :class:`~privacy_lit.baselines.obfuscation.Obfuscate` (``detector``, ``margin``, ...).
    """
    _check(name)
    return _BASELINES[name][0](**kwargs)


def _check(name: str) -> None:
    if name not in _BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid names: {', '.join(BASELINE_NAMES)}")
