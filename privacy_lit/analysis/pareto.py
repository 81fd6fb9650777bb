"""Pareto analysis of runs: privacy–utility points, the non-dominated front, its hypervolume, the
λ trade-off curve (Fig. A2) and the gradient-variance curve (Fig. A1).

Every run of ``fit`` writes ``results.json`` (``{"rows": [{"method", "top1", "cmap",
"mllm_calls_per_sample"}], ...}``) and ``config.yaml`` in its log directory, and a sweep
(:mod:`privacy_lit.sweep`) writes a ``summary.json`` with every run's parameters and rows. This
module turns either into :class:`Point` s — utility = black-box top-1 (higher is better), privacy
= reviewer cMAP (lower is better) — so that the notebook ``notebooks/pareto_fronts.ipynb`` only
loads and plots. Runs on a W&B server can be read too (:func:`load_wandb_runs`), if the
``wandb`` API is reachable.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Reference = tuple[float, float]
"""(utility, privacy) of the hypervolume's reference point: worse than every point counted."""

WORST: Reference = (0.0, 1.0)
"""The worst possible (top-1, cMAP): a reference point that needs no knowledge of the runs."""


@dataclass(frozen=True)
class Point:
    """One method of one run on the privacy–utility plane.

    Attributes:
        utility: black-box top-1 in [0, 1], higher is better.
        privacy: reviewer cMAP in [0, 1], lower is better.
        parameters: the run's arguments with dotted names (``model.lambda_utility``).
    """

    label: str
    method: str
    utility: float
    privacy: float
    calls_per_sample: float = 0.0
    parameters: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    source: str = ""

    def dominates(self, other: Point) -> bool:
        """At least as good on both objectives and strictly better on one."""
        at_least = self.utility >= other.utility and self.privacy <= other.privacy
        return at_least and (self.utility > other.utility or self.privacy < other.privacy)


# ----------------------------------------------------------------------------- loading
def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings → dotted keys (``{"model": {"gamma": 0.5}}`` → ``{"model.gamma": 0.5}``)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and "class_path" not in value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def flatten_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Sweep parameters with their coupled mappings expanded: a ``model`` value such as
    ``"{lambda_utility: 0.1, lambda_privacy: 0.9}"`` (how ``conf/sweeps`` couples two arguments)
    becomes ``model.lambda_utility`` and ``model.lambda_privacy``."""
    flat: dict[str, Any] = {}
    for name, value in parameters.items():
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def _config_parameters(results_file: Path) -> dict[str, Any]:
    """The run's ``model`` arguments and seed from the ``config.yaml`` LightningCLI saved beside
    ``results.json`` (empty when there is none)."""
    config_file = results_file.parent / "config.yaml"
    if not config_file.is_file():
        return {}
    config = yaml.safe_load(config_file.read_text()) or {}
    model = {k: v for k, v in (config.get("model") or {}).items() if k != "mllm"}
    params = flatten(model, "model.")
    if "seed_everything" in config:
        params["seed_everything"] = config["seed_everything"]
    return params


def _points(
    rows: Iterable[Mapping[str, Any]], label: str, parameters: Mapping[str, Any], source: str
) -> list[Point]:
    points = []
    for row in rows:
        try:
            points.append(Point(
                label=label, method=str(row["method"]), utility=float(row["top1"]),
                privacy=float(row["cmap"]),
                calls_per_sample=float(row.get("mllm_calls_per_sample", 0.0)),
                parameters=dict(parameters), source=source,
            ))  # fmt: skip
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{source}: a results row needs method, top1 and cmap, got {dict(row)}"
            ) from error
    return points


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read results file {path}: {error}") from error
    if not isinstance(data, dict) or not ("rows" in data or "runs" in data):
        raise ValueError(f"{path} is neither a results.json (rows) nor a sweep summary (runs)")
    return data


def run_label(run_file: str | Path) -> str:
    """A short name for the run a file (``results.json``, ``metrics.csv``) belongs to:
    ``<root>/<version>`` for ``<root>/lightning_logs/version_N``, unique across the runs of one
    root; otherwise the run directory's name (a directory, e.g. an offline W&B run, names
    itself)."""
    run = Path(run_file) if Path(run_file).is_dir() else Path(run_file).parent
    if run.parent.name == "lightning_logs":
        return f"{run.parent.parent.name}/{run.name}"
    return run.name


def load_results(
    sources: str | Path | Iterable[str | Path], methods: Sequence[str] | None = None
) -> list[Point]:
    """Points from results files, sweep summaries and folders holding them (searched recursively
    for ``results.json`` and ``summary.json``).

    A run found both through a sweep summary and through its own ``results.json`` counts once,
    with the sweep's parameters. ``methods`` keeps only those rows (e.g. ``["ours"]``).
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            files += sorted(source.rglob("summary.json")) + sorted(source.rglob("results.json"))
        elif source.is_file():
            files.append(source)
        else:
            raise FileNotFoundError(f"no results file or folder at {source}")
    summaries, results = [], []
    for path in files:
        data = _read_json(path)
        (summaries if "runs" in data else results).append((path, data))
    points: list[Point] = []
    seen: set[Path] = set()
    for path, data in summaries:
        name = data.get("sweep", path.parent.name)
        for run in data["runs"]:
            if run.get("status") != "ok" or not run.get("rows"):
                continue
            if run.get("results_file"):
                seen.add(Path(run["results_file"]).resolve())
            label = f"{name}-{run.get('index', len(points)):03d}"
            params = flatten_parameters(run.get("parameters", {}))
            points += _points(run["rows"], label, params, str(path))
    for path, data in results:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        points += _points(data["rows"], run_label(path), _config_parameters(path), str(path))
    if methods is not None:
        points = [p for p in points if p.method in methods]
    return points


def load_wandb_runs(
    path: str,
    utility_key: str = "results/ours/top1",
    privacy_key: str = "results/ours/cmap",
    method: str = "ours",
    filters: Mapping[str, Any] | None = None,
    api: Any = None,
) -> list[Point]:
    """Points from the runs of a W&B project (``"entity/project"``) through the public API.

    Each finished run with both summary keys gives one point; its config is the parameters. Needs
    a W&B server and an API key (offline runs: :mod:`privacy_lit.analysis.wandb_offline`).
    ``api`` replaces ``wandb.Api()`` (tests).
    """
    if api is None:
        try:
            import wandb

            api = wandb.Api()
        except Exception as error:  # noqa: BLE001 - any failure means: no API here
            raise RuntimeError(
                f"cannot reach the W&B API for {path!r} ({type(error).__name__}: {error}); "
                "set WANDB_API_KEY, or load the runs' results.json files with load_results"
            ) from error
    points = []
    for run in api.runs(path, filters=dict(filters or {})):
        summary = dict(run.summary)
        if utility_key not in summary or privacy_key not in summary:
            continue
        points.append(Point(
            label=run.name, method=method, utility=float(summary[utility_key]),
            privacy=float(summary[privacy_key]),
            calls_per_sample=float(summary.get("mllm/calls_per_sample", 0.0)),
            parameters=flatten(dict(run.config)), source=f"wandb:{path}/{run.id}",
        ))  # fmt: skip
    return points


# ----------------------------------------------------------------------------- the front
def non_dominated(points: Iterable[Point]) -> list[Point]:
    """The Pareto front (utility ↑, privacy ↓), sorted by utility; identical points all stay.

    One pass over the points sorted by utility (best first): a point is on the front when its
    privacy is strictly better than every point of higher utility, or ties the best one at equal
    utility.
    """
    ordered = sorted(points, key=lambda p: (-p.utility, p.privacy))
    front: list[Point] = []
    best_privacy = math.inf  # among points of strictly higher utility
    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j].utility == ordered[i].utility:
            j += 1
        group = ordered[i:j]  # equal utility, sorted by privacy
        lowest = group[0].privacy
        if lowest < best_privacy:
            front += [p for p in group if p.privacy == lowest]
            best_privacy = lowest
        i = j
    return sorted(front, key=lambda p: (p.utility, p.privacy))


def hypervolume(points: Iterable[Point], reference: Reference = WORST) -> float:
    """Area of the (utility, privacy) region the points dominate, bounded by ``reference``.

    The 2-D hypervolume indicator: the union of the rectangles between each point and the
    reference point, which must be worse on both objectives (lower utility, higher privacy);
    points that are not strictly better than it on both add nothing. Larger is better, and it
    grows with every point that extends the front.
    """
    ref_u, ref_p = reference
    inside = [p for p in points if p.utility > ref_u and p.privacy < ref_p]
    area, previous_u = 0.0, ref_u
    for p in non_dominated(inside):  # utility ascending, privacy ascending
        area += (p.utility - previous_u) * (ref_p - p.privacy)
        previous_u = p.utility
    return area


# ----------------------------------------------------------------------------- curves
@dataclass(frozen=True)
class CurvePoint:
    """One point of a trade-off curve: the swept value and where it landed."""

    value: float
    utility: float
    privacy: float
    label: str


def tradeoff_curve(
    points: Iterable[Point],
    parameter: str = "model.lambda_utility",
    method: str = "ours",
    group_by: str | None = "model.scalarization",
) -> dict[str, list[CurvePoint]]:
    """Fig. A2: ``method``'s points ordered by ``parameter`` (λ₁ by default), one curve per value
    of ``group_by`` (e.g. augmented Tchebycheff vs weighted sum, Tab. A1).

    Points without the parameter are left out; several runs at one value (seeds) are averaged.
    """
    buckets: dict[str, dict[float, list[Point]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        if p.method != method or parameter not in p.parameters:
            continue
        group = str(p.parameters.get(group_by, "")) if group_by else ""
        buckets[group][float(p.parameters[parameter])].append(p)
    curves = {}
    for group, by_value in sorted(buckets.items()):
        curves[group] = [
            CurvePoint(
                value,
                sum(p.utility for p in runs) / len(runs),
                sum(p.privacy for p in runs) / len(runs),
                ", ".join(p.label for p in runs),
            )
            for value, runs in sorted(by_value.items())
        ]
    return curves


def swept_parameters(
    points: Iterable[Point],
    method: str = "ours",
    exclude: Sequence[str] = ("model.lambda_privacy",),
) -> list[str]:
    """The numeric parameters that take more than one value among ``method``'s points (what a
    sweep varied: γ, b, m, d, λ₁ …), sorted. Flags (booleans) and text are left out, and so is
    ``exclude`` (λ₂, which the sweep files tie to 1 − λ₁)."""
    values: dict[str, set[float]] = defaultdict(set)
    for p in points:
        if p.method != method:
            continue
        for name, value in p.parameters.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[name].add(float(value))
    return sorted(name for name, seen in values.items() if len(seen) > 1 and name not in exclude)


def metrics_files(source: str | Path, name: str = "metrics.csv") -> list[Path]:
    """The ``metrics.csv`` of the runs behind ``source``: a folder (searched recursively), a sweep
    summary (each run's ``log_dir``) or a ``results.json`` (the one beside it). Runs without one
    are skipped."""
    source = Path(source)
    if source.is_dir():
        return sorted(source.rglob(name))
    data = _read_json(source)
    if "runs" in data:
        dirs = [Path(run["log_dir"]) for run in data["runs"] if run.get("log_dir")]
    else:
        dirs = [source.parent]
    return [d / name for d in dirs if (d / name).is_file()]


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a Lightning ``metrics.csv`` with the empty cells left out (each logging call
    fills only its own columns)."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as error:
        raise ValueError(f"cannot read metrics file {path}: {error}") from error
    out = []
    for row in rows:
        parsed = {}
        for key, value in row.items():
            if value not in ("", None):
                try:
                    parsed[key] = float(value)
                except ValueError:
                    continue  # a text column: not a series
        out.append(parsed)
    return out


def series(
    rows: Iterable[Mapping[str, Any]], column: str, step_column: str = "step"
) -> tuple[list[int], list[float]]:
    """(steps, values) of one column over rows (CSV rows or W&B history rows), NaNs dropped;
    the last value wins where a step appears twice."""
    by_step: dict[int, float] = {}
    for row in rows:
        if column in row and step_column in row:
            value = float(row[column])
            if not math.isnan(value):
                by_step[int(row[step_column])] = value
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def variance_curve(
    metrics: str | Path, column: str = "zo/grad_variance_window"
) -> tuple[list[int], list[float]]:
    """Fig. A1: the gradient-estimate variance over training steps, from a run's ``metrics.csv``
    (written by :class:`~privacy_lit.callbacks.GradientVarianceMonitor`) or from the history of
    an offline W&B run directory.

    The default column is the sliding-window variance (how noisy the estimates are *at* a step);
    ``zo/grad_variance`` is the variance over all steps so far, ``zo/raw_grad_variance*`` the same
    for the raw SPSA estimates ĝ_k.
    """
    metrics = Path(metrics)
    if metrics.is_dir():
        from privacy_lit.analysis.wandb_offline import read_history

        steps, values = series(read_history(metrics), column, "trainer/global_step")
    else:
        steps, values = series(read_metrics(metrics), column)
    if not steps:
        raise ValueError(
            f"{metrics} has no {column!r} values: was GradientVarianceMonitor among the callbacks?"
        )
    return steps, values


def run_parameters(metrics_csv: str | Path) -> dict[str, Any]:
    """The model arguments of the run a ``metrics.csv`` belongs to (from its ``config.yaml``), to
    label curves (e.g. ``model.use_history``)."""
    return _config_parameters(Path(metrics_csv).parent / "results.json")
