"""Analysis of finished runs: Pareto fronts and curves (:mod:`~privacy_lit.analysis.pareto`) and
offline W&B run files (:mod:`~privacy_lit.analysis.wandb_offline`). ``notebooks/`` plots them."""

from privacy_lit.analysis.pareto import (
    Point,
    hypervolume,
    load_results,
    non_dominated,
    tradeoff_curve,
    variance_curve,
)

__all__ = [
    "Point",
    "hypervolume",
    "load_results",
    "non_dominated",
    "tradeoff_curve",
    "variance_curve",
]
