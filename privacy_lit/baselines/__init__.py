"""Heuristic anonymizers the method is compared with (same interface as the anonymizer)."""

from privacy_lit.baselines.downsample import Downsample

__all__ = ["Downsample"]
