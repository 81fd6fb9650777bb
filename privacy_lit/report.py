"""``python -m privacy_lit report RUN_DIR_OR_JSON ...``: one paper-style table from results files.

Reads the ``results.json`` that ``fit`` and ``test`` write (a run directory is searched for them
recursively) and prints a Markdown table — top-1 (or VQA accuracy) ↑, cMAP ↓, black-box calls per
training sample — with a "dominated by" column: the rows that are at least as good on both
utility and privacy and better on one (compared at the printed precision, 0.1 point, so the
column agrees with the table). Rows with an empty column form the Pareto front of the table.
Black-box calls are a cost, not an objective of the trade-off, and are left out of the
comparison.

A row that appears in several files with the same figures (raw data evaluated by the fit and by a
later ``test``) is printed once; rows of the same name with different figures (ours from two runs)
are told apart by their run directory.

With ``--aggregate`` the files are runs of one config with different seeds (a seeds sweep): each
method's row becomes mean ± std over the runs, dominance is judged on the means and flagged
"(within noise)" where the spreads overlap (:mod:`privacy_lit.analysis.spread`). A sweep's
``summary.json`` stands for the results files of its runs.

Examples::

    python -m privacy_lit report runs/demo
    python -m privacy_lit report runs/demo/lightning_logs/version_0 \\
        runs/demo/lightning_logs/version_1/results.json --precision
    python -m privacy_lit report --aggregate runs/sweeps/seeds/summary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from privacy_lit.analysis.pareto import Point
from privacy_lit.analysis.spread import aggregate, check_same_config, format_spread_table
from privacy_lit.evaluation import Row, format_precision_table, format_table, read_results


def find_results(paths: Sequence[str | Path], filename: str = "results.json") -> list[Path]:
    """The results files named by ``paths``: files as given, directories searched recursively
    (sorted, so ``version_0`` comes before ``version_1``)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            hits = _sweep_results(p) or [p]
        elif p.is_dir():
            hits = sorted(p.rglob(filename))
            if not hits:
                raise FileNotFoundError(f"no {filename} under {p}")
        else:
            raise FileNotFoundError(f"{p} does not exist")
        found += [h for h in hits if h not in found]
    return found


def _sweep_results(path: Path) -> list[Path]:
    """The results files of a sweep's ``summary.json`` (its finished runs); [] for other files."""
    if path.suffix != ".json":
        return []
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return []
    if not isinstance(payload, dict) or not isinstance(payload.get("runs"), list):
        return []
    finished = [r for r in payload["runs"] if isinstance(r, dict) and r.get("status") == "ok"]
    files = [Path(r["results_file"]) for r in finished if r.get("results_file")]
    if not files:
        raise FileNotFoundError(f"{path}: a sweep summary without a finished run")
    return files


def _printed_point(row: Row) -> Point:
    """The row as it is printed (percent, one decimal), so that dominance agrees with the table."""
    return Point(row.method, row.method, round(100 * row.top1, 1), round(100 * row.cmap, 1))


def dominates(a: Row, b: Row) -> bool:
    """Whether ``a`` is at least as good as ``b`` on top-1 (↑) and cMAP (↓) and better on one, at
    the printed precision. Rows scored with different utility metrics (top-1 vs VQA accuracy:
    different benchmarks) are not compared."""
    if a.utility_metric != b.utility_metric:
        return False
    return _printed_point(a).dominates(_printed_point(b))


def dominated_by(rows: Sequence[Row]) -> list[list[str]]:
    """For each row, the methods of the rows that dominate it."""
    return [[a.method for a in rows if a is not b and dominates(a, b)] for b in rows]


def collect_rows(files: Sequence[Path]) -> list[Row]:
    """Rows of every file in order; exact repeats dropped, same-named different rows labelled
    ``method (run directory)``."""
    loaded = [(path, row) for path in files for row in read_results(path)[0]]

    def key(row: Row) -> tuple:
        return row.method, row.top1, row.cmap, row.mllm_calls_per_sample

    unique: list[tuple[Path, Row]] = []
    for path, row in loaded:
        if all(key(row) != key(other) for _, other in unique):
            unique.append((path, row))
    names = [row.method for _, row in unique]
    sources = _source_labels([path for path, _ in unique])
    return [
        replace(row, method=f"{row.method} ({src})") if names.count(row.method) > 1 else row
        for (_, row), src in zip(unique, sources, strict=True)
    ]


def _source_labels(paths: Sequence[Path]) -> list[str]:
    """The shortest trailing part of each results file's directory that tells them apart."""
    dirs = [p.resolve().parent for p in paths]
    for depth in range(1, max((len(d.parts) for d in dirs), default=1) + 1):
        labels = ["/".join(d.parts[-depth:]) for d in dirs]
        if len(set(labels)) == len(set(dirs)):
            return labels
    return [str(d) for d in dirs]


def format_report(rows: Sequence[Row]) -> str:
    """The Markdown table with the "dominated by" column (— for rows on the Pareto front)."""
    cells = [", ".join(by) if by else "—" for by in dominated_by(rows)]
    return format_table(rows, ("dominated by", cells))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m privacy_lit report",
        description="Print one paper-style table (with Pareto dominance) from results files.",
    )
    parser.add_argument("paths", nargs="+", help="results.json files or run directories")
    parser.add_argument(
        "--precision", action="store_true", help="also print Tab. B11's per-attribute precision"
    )
    parser.add_argument("--filename", default="results.json", help="results file name in dirs")
    parser.add_argument(
        "--aggregate",
        action="store_true",
        help="the files are seeds of one config: mean ± std per method",
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        files = find_results(args.paths, args.filename)
        if args.aggregate:
            check_same_config(files)
            spread = aggregate([read_results(f)[0] for f in files])
        else:
            rows = collect_rows(files)
    except (FileNotFoundError, ValueError) as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    if args.aggregate:
        print(format_spread_table(spread))
        print(f"\n{len(files)} runs aggregated (mean ± sample std over seeds)")
        return 0
    print(format_report(rows))
    if args.precision:
        table = format_precision_table(rows) or "(no per-attribute figures in these files)"
        print(f"\nper-attribute precision (%) ↓ (Tab. B11):\n{table}")
    front = [r.method for r, by in zip(rows, dominated_by(rows), strict=True) if not by]
    print(f"\n{len(rows)} rows from {len(files)} file(s); Pareto front: {', '.join(front)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
