"""Figures with their spread: the rows of several runs of one config (different seeds) as
mean ± std per method, with Pareto dominance judged on the means and flagged when it is within
the seed-to-seed noise.

A single run's row moves by 1–3 cMAP points from seed to seed (the reviewer, the trajectory and
the floating-point path all change), so one run cannot say that a row dominates another. Here a
dominance on the means is *beyond noise* only where, on every objective the dominating row is
better on, the two rows' mean ± std intervals do not overlap; otherwise it is reported as
"within noise".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from privacy_lit.analysis.pareto import flatten
from privacy_lit.evaluation import Row, utility_header

SEED_KEYS = ("seed_everything",)
"""Config keys that may differ between the runs of one aggregate (the seeds)."""

RUN_KEYS = ("trainer.default_root_dir", "trainer.logger", "ckpt_path")
"""Config keys that say where a run writes, not what it computes."""


@dataclass(frozen=True)
class SpreadRow:
    """One method over ``n`` runs: means and sample standard deviations (0 for one run)."""

    method: str
    n: int
    top1: float
    top1_std: float
    cmap: float
    cmap_std: float
    mllm_calls_per_sample: float
    utility_metric: str = "top1"


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(runs: Sequence[Sequence[Row]]) -> list[SpreadRow]:
    """Mean ± std per method over runs (each run: its results rows), methods in first-seen order.

    Every run must hold the same methods: a method missing from one run would make its mean a
    mean over other seeds than its neighbours', so that is an error naming the method.
    """
    if not runs:
        raise ValueError("no runs to aggregate")
    methods = list(dict.fromkeys(r.method for run in runs for r in run))
    by_method: dict[str, list[Row]] = {m: [] for m in methods}
    for i, run in enumerate(runs):
        names = [r.method for r in run]
        if missing := [m for m in methods if m not in names]:
            raise ValueError(f"run {i} has no row for {missing}; every run needs every method")
        for row in run:
            by_method[row.method].append(row)
    out = []
    for method, rows in by_method.items():
        metrics = {r.utility_metric for r in rows}
        if len(metrics) > 1:
            raise ValueError(f"{method}: rows mix utility metrics {sorted(metrics)}")
        top1, cmap = [r.top1 for r in rows], [r.cmap for r in rows]
        out.append(SpreadRow(
            method, len(rows), statistics.fmean(top1), _std(top1), statistics.fmean(cmap),
            _std(cmap), statistics.fmean(r.mllm_calls_per_sample for r in rows), metrics.pop(),
        ))  # fmt: skip
    return out


def _printed(value: float) -> float:
    return round(100 * value, 1)


def dominates(a: SpreadRow, b: SpreadRow) -> bool:
    """``a`` at least as good as ``b`` on mean top-1 (↑) and mean cMAP (↓) and better on one, at
    the printed precision (0.1 point); rows of different utility metrics are not compared."""
    if a.utility_metric != b.utility_metric:
        return False
    ta, tb, ca, cb = _printed(a.top1), _printed(b.top1), _printed(a.cmap), _printed(b.cmap)
    return ta >= tb and ca <= cb and (ta > tb or ca < cb)


def beyond_noise(a: SpreadRow, b: SpreadRow) -> bool:
    """Whether ``a``'s dominance over ``b`` holds beyond one standard deviation: on each objective
    ``a`` is better on, ``a``'s mean − std is above ``b``'s mean + std (top-1) or ``a``'s mean +
    std below ``b``'s mean − std (cMAP). False for single runs of either (no spread measured)."""
    if not dominates(a, b) or a.n < 2 or b.n < 2:
        return False
    separated = []
    if _printed(a.top1) > _printed(b.top1):
        separated.append(a.top1 - a.top1_std > b.top1 + b.top1_std)
    if _printed(a.cmap) < _printed(b.cmap):
        separated.append(a.cmap + a.cmap_std < b.cmap - b.cmap_std)
    return all(separated)


def dominance_cells(rows: Sequence[SpreadRow]) -> list[str]:
    """For each row, the rows dominating it on the means, each marked "(within noise)" where the
    spreads overlap; "—" for rows on the front of the means."""
    cells = []
    for b in rows:
        by = [
            a.method if beyond_noise(a, b) else f"{a.method} (within noise)"
            for a in rows
            if a is not b and dominates(a, b)
        ]
        cells.append(", ".join(by) if by else "—")
    return cells


def format_spread_table(rows: Sequence[SpreadRow]) -> str:
    """A Markdown table: mean ± std of utility and cMAP, runs, calls, and the dominance column."""
    header = utility_header([Row(r.method, r.top1, r.cmap, utility_metric=r.utility_metric)
                             for r in rows])  # fmt: skip
    lines = [
        f"| method | runs | {header} | cMAP (%) ↓ | MLLM calls / sample | dominated by (means) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r, cell in zip(rows, dominance_cells(rows), strict=True):
        lines.append(
            f"| {r.method} | {r.n} | {100 * r.top1:.1f} ± {100 * r.top1_std:.1f} "
            f"| {100 * r.cmap:.1f} ± {100 * r.cmap_std:.1f} | {r.mllm_calls_per_sample:.1f} "
            f"| {cell} |"
        )
    return "\n".join(lines)


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    flat = flatten(config)
    skip = SEED_KEYS + RUN_KEYS
    return {k: v for k, v in flat.items() if not any(k == s or k.startswith(f"{s}.") for s in skip)}


def check_same_config(results_files: Sequence[Path]) -> None:
    """Refuse to aggregate runs whose saved configs (``config.yaml`` beside each results file, as
    LightningCLI writes it) differ in anything but the seed and where the run writes: a mean over
    different settings is not a spread. Files without a saved config are accepted as they are."""
    reference: tuple[Path, dict[str, Any]] | None = None
    for path in results_files:
        config_file = Path(path).parent / "config.yaml"
        if not config_file.is_file():
            continue
        config = _comparable(yaml.safe_load(config_file.read_text()) or {})
        if reference is None:
            reference = (config_file, config)
            continue
        differing = sorted(k for k in set(config) | set(reference[1])
                           if config.get(k, math.nan) != reference[1].get(k, math.nan))  # fmt: skip
        if differing:
            raise ValueError(
                f"{config_file} and {reference[0]} differ in {differing[:5]}"
                f"{' ...' if len(differing) > 5 else ''}: only runs of one config (other seeds) "
                "can be aggregated"
            )
