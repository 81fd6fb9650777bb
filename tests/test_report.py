"""``python -m privacy_lit report``: one table from several results files, with Pareto dominance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privacy_lit.evaluation import Row, write_results
from privacy_lit.report import collect_rows, dominated_by, dominates, format_report, main

PRECISION = {"a4_gender": 0.7, "a9_face_complete": 0.6}


def _runs(tmp_path: Path) -> Path:
    """A fit (raw, 4× downsampling, ours) and a later test of the same run (more comparisons)."""
    logs = tmp_path / "runs" / "demo" / "lightning_logs"
    raw = Row("raw", 1.0, 0.810, 0.0, PRECISION)
    down4 = Row("downsample 4x", 0.885, 0.771, 0.0, PRECISION)
    ours = Row("ours", 0.938, 0.701, 12.5, PRECISION)
    write_results([raw, down4, ours], logs / "version_0" / "results.json", {"stage": "fit"})
    test_rows = [
        raw,  # the same figures again: printed once
        Row("downsample 8x", 0.60, 0.75, 0.0, PRECISION),  # dominated by ours and surrogate
        Row("blacken", 1.0, 0.812, 0.0, PRECISION),  # dominated by raw (same top-1, worse cMAP)
        Row("surrogate", 0.92, 0.72, 0.0, PRECISION),  # dominated by ours
        Row("ours", 0.950, 0.690, 12.5, PRECISION),  # another run's ours: both kept, labelled
    ]
    write_results(test_rows, logs / "version_1" / "results.json", {"stage": "test"})
    return tmp_path / "runs"


def test_dominance_at_printed_precision() -> None:
    a, b = Row("a", 0.9, 0.5), Row("b", 0.8, 0.6)
    assert dominates(a, b) and not dominates(b, a)
    assert not dominates(a, a)  # equal rows do not dominate each other
    tie = Row("tie", 0.9 + 1e-9, 0.5)  # a difference nobody can read in the table
    assert not dominates(tie, a) and not dominates(a, tie)
    trade = Row("trade", 1.0, 0.7)  # better utility, worse privacy: neither dominates
    assert dominated_by([a, b, trade]) == [[], ["a"], []]


def test_rows_from_several_runs(tmp_path: Path) -> None:
    files = sorted(_runs(tmp_path).rglob("results.json"))
    rows = collect_rows(files)
    methods = [r.method for r in rows]
    assert methods == [
        "raw", "downsample 4x", "ours (version_0)", "downsample 8x", "blacken", "surrogate",
        "ours (version_1)",
    ]  # fmt: skip
    table = format_report(rows)
    lines = {line.split(" | ")[0].removeprefix("| "): line for line in table.splitlines()[2:]}
    assert lines["raw"].endswith("| — |")
    assert lines["blacken"].endswith("| raw |")
    assert lines["ours (version_0)"].endswith("| ours (version_1) |")
    assert lines["surrogate"].endswith("| ours (version_0), ours (version_1) |")
    assert "| ours (version_1) | 95.0 | 69.0 | 12.5 | — |" in table


def test_main_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _runs(tmp_path)
    assert main([str(runs), "--precision"]) == 0
    out = capsys.readouterr().out
    assert "| method | top-1 (%) ↑ | cMAP (%) ↓ | MLLM calls / sample | dominated by |" in out
    by = "ours (version_0), surrogate, ours (version_1)"
    assert f"| downsample 8x | 60.0 | 75.0 | 0.0 | {by} |" in out
    assert "| a4_gender | a9_face_complete | cMAP |" in out
    assert "| raw | 70.0 | 60.0 | 81.0 |" in out
    assert "Pareto front: raw, ours (version_1)" in out

    # a results file written before per-attribute precision existed, named directly
    old = tmp_path / "old.json"
    row = {"method": "raw", "top1": 1.0, "cmap": 0.81, "mllm_calls_per_sample": 0.0}
    old.write_text(json.dumps({"rows": [row]}))
    assert main([str(old), "--precision"]) == 0
    assert "no per-attribute figures" in capsys.readouterr().out


def test_main_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no results.json under" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"rows": [{"method": "raw"}]}))
    assert main([str(tmp_path / "bad.json")]) == 2
    assert "lacks ['cmap', 'top1']" in capsys.readouterr().err
    for rows, expected in [
        ([3], "row 0 is 3, expected an object"),
        ([{"method": "raw", "top1": "0.9", "cmap": 0.8}], "row 0 (raw): top1 must be a number"),
    ]:
        (tmp_path / "bad.json").write_text(json.dumps({"rows": rows}))
        assert main([str(tmp_path / "bad.json")]) == 2
        assert f"bad.json: {expected}" in capsys.readouterr().err
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    assert main([str(tmp_path / "binary.json")]) == 2
    assert "not a JSON results file" in capsys.readouterr().err


def test_rows_of_different_utility_metrics_are_not_compared() -> None:
    action = Row("ours (hmdb)", 0.9, 0.5)
    vqa = Row("raw (okvqa)", 0.95, 0.4, utility_metric="vqa_accuracy")
    assert not dominates(vqa, action) and dominated_by([action, vqa]) == [[], []]
