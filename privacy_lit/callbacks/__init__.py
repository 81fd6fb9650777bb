"""Lightning callbacks of the project."""

from privacy_lit.callbacks.report import PrivacyUtilityReport

__all__ = ["PrivacyUtilityReport"]
