"""The methods ours is compared with (same interface as the anonymizer).

``build_baseline(name)`` gives any heuristic one by name (``raw``, ``downsample2|4|8``,
``blacken``, ``blur_strong``, ``blur_weak``). :mod:`privacy_lit.baselines.surrogate` trains the
gradient-based ones: against a surrogate recognizer (``train_surrogate_anonymizer``, Tab. 1–4) or
the stand-in's own model (``train_whitebox_anonymizer``, the white-box reference of Tab. B7).
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
from privacy_lit.baselines.surrogate import (
    AdversarialConfig,
    AdversarialResult,
    SurrogateConfig,
    train_adversarial_anonymizer,
    train_recognizer_on_raw,
    train_surrogate_anonymizer,
    train_whitebox_anonymizer,
)

__all__ = [
    "AdversarialConfig",
    "AdversarialResult",
    "BASELINE_NAMES",
    "CascadeFaceDetector",
    "Downsample",
    "HOGPersonDetector",
    "HaarCascadeDetector",
    "Obfuscate",
    "RegionDetector",
    "SurrogateConfig",
    "TorchvisionDetector",
    "UnionDetector",
    "baseline_label",
    "build_baseline",
    "train_adversarial_anonymizer",
    "train_recognizer_on_raw",
    "train_surrogate_anonymizer",
    "train_whitebox_anonymizer",
]
