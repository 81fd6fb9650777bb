"""Seeds of one config as mean ± std per row (``report --aggregate``)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from privacy_lit.analysis.spread import (
    SpreadRow,
    aggregate,
    beyond_noise,
    check_same_config,
    dominance_cells,
)
from privacy_lit.evaluation import Row, write_results
from privacy_lit.report import main as report_main


def _runs() -> list[list[Row]]:
    return [
        [Row("raw", 1.00, 0.80), Row("ours", 0.97, 0.64), Row("blur", 0.99, 0.66)],
        [Row("raw", 0.99, 0.81), Row("ours", 0.95, 0.62), Row("blur", 0.98, 0.61)],
        [Row("raw", 1.00, 0.79), Row("ours", 0.96, 0.66), Row("blur", 0.99, 0.65)],
    ]


def test_aggregate_gives_mean_and_sample_std_per_method():
    rows = {r.method: r for r in aggregate(_runs())}
    ours = rows["ours"]
    assert ours.n == 3
    assert ours.top1 == pytest.approx(statistics.fmean([0.97, 0.95, 0.96]))
    assert ours.cmap_std == pytest.approx(statistics.stdev([0.64, 0.62, 0.66]))
    assert [r.method for r in aggregate(_runs())] == ["raw", "ours", "blur"]


def test_a_method_missing_from_one_run_is_refused():
    runs = _runs()
    runs[1] = runs[1][:2]
    with pytest.raises(ValueError, match=r"run 1 has no row for \['blur'\]"):
        aggregate(runs)


def test_dominance_on_means_is_flagged_within_noise_where_spreads_overlap():
    ours = SpreadRow("ours", 3, 0.96, 0.01, 0.64, 0.02, 12.5)
    close = SpreadRow("blur", 3, 0.97, 0.01, 0.63, 0.03, 0.0)  # better on means, overlapping
    far = SpreadRow("far", 3, 0.99, 0.002, 0.50, 0.01, 0.0)  # better beyond one std on both
    assert not beyond_noise(close, ours)
    assert beyond_noise(far, ours)
    cells = dominance_cells([ours, close, far])
    assert cells[0] == "blur (within noise), far"
    assert cells[2] == "—"


def test_a_single_run_never_dominates_beyond_noise():
    one = SpreadRow("a", 1, 0.99, 0.0, 0.10, 0.0, 0.0)
    other = SpreadRow("b", 3, 0.50, 0.01, 0.90, 0.01, 0.0)
    assert not beyond_noise(one, other)


def _write_run(root: Path, index: int, rows: list[Row], config: dict) -> Path:
    run = root / f"version_{index}"
    write_results(rows, run / "results.json")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run / "results.json"


def test_runs_of_different_configs_are_not_aggregated(tmp_path: Path):
    a = _write_run(tmp_path, 0, _runs()[0], {"seed_everything": 0, "model": {"gamma": 0.5}})
    b = _write_run(tmp_path, 1, _runs()[1], {"seed_everything": 1, "model": {"gamma": 0.5}})
    check_same_config([a, b])  # seeds differ only: fine
    c = _write_run(tmp_path, 2, _runs()[2], {"seed_everything": 2, "model": {"gamma": 0.3}})
    with pytest.raises(ValueError, match=r"differ in \['model.gamma'\]"):
        check_same_config([a, b, c])


def test_report_aggregates_a_sweep_summary(tmp_path: Path, capsys: pytest.CaptureFixture):
    files = [
        _write_run(tmp_path, i, rows, {"seed_everything": i, "trainer": {"max_epochs": 7}})
        for i, rows in enumerate(_runs())
    ]
    summary = tmp_path / "summary.json"
    runs = [{"status": "ok", "results_file": str(f)} for f in files]
    runs.append({"status": "failed", "error": "boom"})  # a failed run is left out
    summary.write_text(json.dumps({"sweep": "seeds", "runs": runs}))
    assert report_main(["--aggregate", str(summary)]) == 0
    out = capsys.readouterr().out
    assert "| ours | 3 | 96.0 ± 1.0 | 64.0 ± 2.0 |" in out
    assert "3 runs aggregated" in out
