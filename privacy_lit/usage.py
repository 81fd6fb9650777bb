"""``usage``: what a run paid the black box, read from the query ledger beside the response cache.

    python -m privacy_lit usage runs/gpt4o/lightning_logs/version_3   # one run
    python -m privacy_lit usage runs/gpt4o                              # every run under it
    python -m privacy_lit usage .cache/mllm/gpt4o                       # every run of a cache
        [--json]

A run's log directory holds ``ledger.json`` (written when ``fit`` or ``test`` starts), naming its
ledger and its run id; a run resumed from a checkpoint keeps the id, so its figures include what
was paid before the process was killed. A cache folder (or its ``ledger.jsonl``) gives every run
recorded in it. Printed per run: calls (answered queries), cache hits, prompt and completion
tokens, and dollars as the backend's price table counted them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from privacy_lit.mllm.base import QueryStats
from privacy_lit.mllm.cache import LEDGER_NAME, QueryLedger


def _sources(path: Path) -> list[tuple[QueryLedger, list[str], str]]:
    """(ledger, its runs to show, where the run was named) for ``path``."""
    if (path.is_file() and path.name == "ledger.json") or (path / "ledger.json").is_file():
        pointers = [path if path.is_file() else path / "ledger.json"]
    elif path.is_file():  # a ledger file
        ledger = QueryLedger(path)
        return [(ledger, ledger.runs(), str(path))]
    elif (path / LEDGER_NAME).is_file():  # a cache folder
        ledger = QueryLedger(path / LEDGER_NAME)
        return [(ledger, ledger.runs(), str(path / LEDGER_NAME))]
    else:
        pointers = sorted(path.rglob("ledger.json"))
    sources = []
    for pointer in pointers:
        named = json.loads(pointer.read_text())
        sources.append((QueryLedger(named["ledger"]), [named["run"]], str(pointer.parent)))
    return sources


def usage(path: str | Path) -> list[dict[str, object]]:
    """One row per run found at ``path`` (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    rows = []
    for ledger, runs, where in _sources(path):
        if not ledger.path.is_file():
            raise FileNotFoundError(f"{where} names the ledger {ledger.path}, which is missing")
        for run in runs:
            stats: QueryStats = ledger.totals(run)
            figures = {k: v for k, v in asdict(stats).items() if k != "by_endpoint"}
            rows.append({"where": where, "run": run, "ledger": str(ledger.path)} | figures)
    if not rows:
        raise FileNotFoundError(
            f"no query ledger at {path}: expected a run's log directory (with ledger.json), a "
            f"folder of runs, or a response-cache folder (with {LEDGER_NAME})"
        )
    return rows


def render(rows: list[dict[str, object]]) -> str:
    lines = [
        f"{'run':<34} {'calls':>8} {'cache hits':>10} {'prompt tok':>11} {'compl. tok':>10} "
        f"{'USD':>10}  where"
    ]
    for row in rows:
        lines.append(
            f"{row['run']!s:<34} {row['calls']:>8} {row['cache_hits']:>10} "
            f"{row['prompt_tokens']:>11} {row['completion_tokens']:>10} "
            f"{row['cost_usd']:>10.4f}  {row['where']}"
        )
    if len(rows) > 1:
        names = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "cost_usd")
        total = {k: sum(r[k] for r in rows) for k in names}
        lines.append(
            f"{'total':<34} {total['calls']:>8} {total['cache_hits']:>10} "
            f"{total['prompt_tokens']:>11} {total['completion_tokens']:>10} "
            f"{total['cost_usd']:>10.4f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m privacy_lit usage",
        description="Calls, cache hits, tokens and dollars of runs, from the query ledger.",
    )
    parser.add_argument("run", help="a run's log directory, a folder of runs, or a cache folder")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    try:
        rows = usage(args.run)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"usage: {error}", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=1) if args.json else render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
