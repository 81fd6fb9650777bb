"""Lightning callbacks of the project."""

from privacy_lit.callbacks.budget import QueryBudget
from privacy_lit.callbacks.media import SampleGridLogger
from privacy_lit.callbacks.monitors import GradientVarianceMonitor, MLLMUsageMonitor
from privacy_lit.callbacks.report import PrivacyUtilityReport
from privacy_lit.callbacks.signal import UtilitySignalMeter

__all__ = [
    "GradientVarianceMonitor",
    "MLLMUsageMonitor",
    "PrivacyUtilityReport",
    "QueryBudget",
    "SampleGridLogger",
    "UtilitySignalMeter",
]
