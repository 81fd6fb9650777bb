"""Heuristic anonymizers the method is compared with (same interface as the anonymizer).

``build_baseline(name)`` gives any of them by name (``raw``, ``downsample2|4|8``, ``blacken``,
``blur_strong``, ``blur_weak``).
"""

from privacy_lit.baselines.downsample import Downsample
from privacy_lit.baselines.obfuscation import (
    CascadeFaceDetector,
    HaarCascadeDetector,
    HOGPersonDetector,
    Obfuscate,
    RegionDetector,
    TorchvisionDetector,
    UnionDetector,
)
from privacy_lit.baselines.registry import BASELINE_NAMES, baseline_label, build_baseline

__all__ = [
    "BASELINE_NAMES",
    "CascadeFaceDetector",
    "Downsample",
    "HOGPersonDetector",
    "HaarCascadeDetector",
    "Obfuscate",
    "RegionDetector",
    "TorchvisionDetector",
    "UnionDetector",
    "baseline_label",
    "build_baseline",
]
