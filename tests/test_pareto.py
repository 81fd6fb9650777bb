"""Pareto analysis: loading results, the front, hypervolume, curves; the notebook runs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_lit.analysis.pareto import (
    Point,
    flatten_parameters,
    hypervolume,
    load_results,
    load_wandb_runs,
    non_dominated,
    read_metrics,
    run_parameters,
    swept_parameters,
    tradeoff_curve,
    variance_curve,
)

NOTEBOOK = Path("notebooks/pareto_fronts.ipynb")


def _p(u: float, p: float, label: str = "") -> Point:
    return Point(label or f"{u},{p}", "ours", u, p)


def test_non_dominated_keeps_exactly_the_front() -> None:
    a, b, c = _p(0.9, 0.6), _p(0.7, 0.4), _p(0.5, 0.3)
    dominated = [_p(0.8, 0.6), _p(0.7, 0.5), _p(0.4, 0.3), _p(0.5, 0.7)]
    twin = _p(0.7, 0.4, "twin")  # identical objectives: neither dominates the other
    front = non_dominated([*dominated, a, twin, b, c])
    assert front == [c, b, twin, a] or front == [c, twin, b, a]
    assert non_dominated([]) == []
    assert a.dominates(_p(0.9, 0.7)) and not a.dominates(a) and not a.dominates(b)


def test_hypervolume_by_hand() -> None:
    ref = (0.0, 1.0)
    assert hypervolume([_p(0.5, 0.5)], ref) == pytest.approx(0.25)
    # two steps: [0, .5] x [.2, 1] and [.5, .8] x [.6, 1]
    two = [_p(0.5, 0.2), _p(0.8, 0.6)]
    assert hypervolume(two, ref) == pytest.approx(0.5 * 0.8 + 0.3 * 0.4)
    assert hypervolume([*two, _p(0.4, 0.5)], ref) == pytest.approx(hypervolume(two, ref))
    assert hypervolume([_p(0.5, 0.5)], (0.6, 1.0)) == 0.0  # not better than the reference
    assert hypervolume([], ref) == 0.0


def _grid_area(points: list[Point], ref: tuple[float, float]) -> float:
    """Reference: area of the union of rectangles by coordinate compression."""
    xs = sorted({ref[0], *(p.utility for p in points)})
    ys = sorted({ref[1], *(p.privacy for p in points)})
    area = 0.0
    for x0, x1 in zip(xs, xs[1:], strict=False):
        for y0, y1 in zip(ys, ys[1:], strict=False):
            mid_u, mid_p = (x0 + x1) / 2, (y0 + y1) / 2
            covered = any(
                ref[0] <= mid_u <= p.utility and p.privacy <= mid_p <= ref[1] for p in points
            )
            area += (x1 - x0) * (y1 - y0) * covered
    return area


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=12))
def test_hypervolume_matches_the_union_of_rectangles(coords: list[tuple[float, float]]) -> None:
    points = [_p(u, p) for u, p in coords]
    ref = (0.1, 0.9)
    inside = [p for p in points if p.utility > ref[0] and p.privacy < ref[1]]
    assert hypervolume(points, ref) == pytest.approx(_grid_area(inside, ref), abs=1e-12)
    front = non_dominated(points)
    assert all(not q.dominates(f) for f in front for q in points)
    assert all(any(f.dominates(p) or f == p for f in front) for p in points)


def _rows(top1: float, cmap: float) -> list[dict]:
    return [
        {"method": "raw", "top1": 1.0, "cmap": 0.81, "mllm_calls_per_sample": 0.0},
        {"method": "downsample 4x", "top1": 0.885, "cmap": 0.771, "mllm_calls_per_sample": 0.0},
        {"method": "ours", "top1": top1, "cmap": cmap, "mllm_calls_per_sample": 12.5},
    ]


def _metrics_csv(path: Path, variance: list[float]) -> None:
    """A Lightning-style metrics.csv: rows fill only their own columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(
            f, ["epoch", "step", "train/utility_loss", "zo/grad_variance_window"]
        )
        writer.writeheader()
        for step, value in enumerate(variance):
            writer.writerow({"epoch": 0, "step": step, "train/utility_loss": 2.0})
            writer.writerow({"epoch": 0, "step": step, "zo/grad_variance_window": value})


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A λ sweep summary (ours and the weighted sum at three λ₁) whose runs' results.json also
    lie under the same folder, plus one plain-SPSA run with its own config and metrics."""
    root = tmp_path / "runs"
    summary = {"sweep": "lambda", "method": "grid", "runs": []}
    index = 0
    for scalarization, gain in (("at", 0.0), ("ws", -0.1)):
        for lam, (top1, cmap) in zip((0.1, 0.5, 0.9), ((0.90, 0.66), (0.93, 0.70), (0.96, 0.75)),
                                     strict=True):  # fmt: skip
            log_dir = root / "demo" / "lightning_logs" / f"version_{index}"
            log_dir.mkdir(parents=True)
            results = {"rows": _rows(top1 + gain, cmap - gain / 2), "zo_steps": 100}
            (log_dir / "results.json").write_text(json.dumps(results))
            summary["runs"].append({
                "index": index, "status": "ok", "log_dir": str(log_dir),
                "results_file": str(log_dir / "results.json"),
                "parameters": {"model": f"{{lambda_utility: {lam}, lambda_privacy: {1 - lam:g}}}",
                               "model.scalarization": scalarization},
                **results,
            })  # fmt: skip
            index += 1
    summary["runs"].append({"index": index, "status": "failed", "error": "boom", "parameters": {}})
    (root / "sweeps" / "lambda").mkdir(parents=True)
    (root / "sweeps" / "lambda" / "summary.json").write_text(json.dumps(summary))

    for name, use_history, variance in (("history", True, [4.0, 2.0, 1.0, 0.8]),
                                        ("spsa", False, [9.0, 8.0, 9.5, 8.5])):  # fmt: skip
        log_dir = root / name / "lightning_logs" / "version_0"
        _metrics_csv(log_dir / "metrics.csv", variance)
        (log_dir / "results.json").write_text(json.dumps({"rows": _rows(0.9, 0.7)}))
        config = {"seed_everything": 0, "model": {"use_history": use_history, "gamma": 0.5,
                                                  "mllm": {"class_path": "x.Y"}}}  # fmt: skip
        (log_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def test_load_results_counts_each_run_once_with_its_parameters(runs: Path) -> None:
    points = load_results(runs)
    assert len(points) == 3 * (6 + 2)  # 6 sweep runs (not again through results.json) + 2 runs
    sweep = [p for p in points if p.label.startswith("lambda-")]
    assert len(sweep) == 18
    assert sweep[0].parameters == {
        "model.lambda_utility": 0.1, "model.lambda_privacy": 0.9, "model.scalarization": "at",
    }  # fmt: skip
    (spsa,) = [p for p in points if p.label == "spsa/version_0" and p.method == "ours"]
    assert spsa.parameters == {"model.use_history": False, "model.gamma": 0.5,
                               "seed_everything": 0}  # fmt: skip
    assert {p.method for p in load_results(runs, methods=["ours"])} == {"ours"}
    assert len(load_results(runs / "spsa" / "lightning_logs" / "version_0" / "results.json")) == 3


def test_load_results_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing"):
        load_results(tmp_path / "nothing")
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read results file"):
        load_results(bad)
    bad.write_text(json.dumps({"rows": [{"method": "ours", "top1": 0.5}]}))
    with pytest.raises(ValueError, match="needs method, top1 and cmap"):
        load_results(bad)


def test_tradeoff_curve_per_scalarization(runs: Path) -> None:
    curves = tradeoff_curve(load_results(runs))
    assert set(curves) == {"at", "ws"}
    assert [c.value for c in curves["at"]] == [0.1, 0.5, 0.9]
    assert [c.utility for c in curves["at"]] == [0.90, 0.93, 0.96]
    assert curves["ws"][0].utility == pytest.approx(0.80)
    (averaged,) = tradeoff_curve(load_results(runs), "model.gamma", group_by=None)[""]
    assert (averaged.value, averaged.utility) == (0.5, pytest.approx(0.9))  # two runs, one value
    assert averaged.label == "history/version_0, spsa/version_0"


def test_swept_parameters_are_the_numbers_that_vary(runs: Path) -> None:
    assert swept_parameters(load_results(runs)) == ["model.lambda_utility"]  # not λ₂, flags, text

    def point(**parameters: object) -> Point:
        return Point("run", "ours", 0.9, 0.7, parameters=parameters)

    points = [point(**{"model.gamma": g, "model.history_size": 10, "seed": 0}) for g in (0, 0.5)]
    assert swept_parameters([*points, point(**{"model.gamma": 1})]) == ["model.gamma"]
    assert swept_parameters(points, method="raw") == []


def test_flatten_parameters_expands_coupled_mappings() -> None:
    assert flatten_parameters({"model": "{use_history: false}", "model.b": 0.3}) == {
        "model.use_history": False, "model.b": 0.3,
    }  # fmt: skip
    assert flatten_parameters({"model": "{not yaml"}) == {"model": "{not yaml"}


def test_variance_curve_from_metrics_csv(runs: Path) -> None:
    path = runs / "history" / "lightning_logs" / "version_0" / "metrics.csv"
    assert variance_curve(path) == ([0, 1, 2, 3], [4.0, 2.0, 1.0, 0.8])
    assert run_parameters(path)["model.use_history"] is True
    assert len(read_metrics(path)) == 8
    with pytest.raises(ValueError, match="GradientVarianceMonitor"):
        variance_curve(path, column="zo/missing")


def test_load_wandb_runs_through_the_api() -> None:
    runs = [
        SimpleNamespace(name="a", id="1", summary={"results/ours/top1": 0.9,
                        "results/ours/cmap": 0.6}, config={"model": {"gamma": 0.3}}),
        SimpleNamespace(name="b", id="2", summary={"train/utility_loss": 1.0}, config={}),
    ]  # fmt: skip
    api = SimpleNamespace(runs=lambda path, filters: runs)
    (point,) = load_wandb_runs("me/privacy_lit", api=api)
    assert (point.utility, point.privacy, point.parameters) == (0.9, 0.6, {"model.gamma": 0.3})


def test_notebook_is_committed_without_outputs() -> None:
    notebook = json.loads(NOTEBOOK.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.slow  # a Jupyter kernel
def test_notebook_runs_end_to_end(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    figures = tmp_path / "figures"
    monkeypatch.setenv("PRIVACY_LIT_RESULTS", str(runs))
    monkeypatch.setenv("PRIVACY_LIT_FIGURES", str(figures))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent.resolve())}},
    )  # fmt: skip
    client.execute(env=dict(os.environ))
    text = "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert "24 points from 8 runs" in text and "hypervolume" in text
    assert {p.name for p in figures.iterdir()} == {
        "pareto_front.png", "lambda_tradeoff.png", "gradient_variance.png",
        "sweep_model.lambda_utility.png",
    }  # fmt: skip
