"""``bench zo --objective training``: estimators on the demo's adversarial phase itself.

The head task of :mod:`privacy_lit.bench.zo` asks which estimator descends the black-box loss
fastest. This mode asks what a user gets: every estimator runs the adversarial phase of a config
(by default ``conf/demo.yaml``: privacy push, augmented Tchebycheff switch, reviewer updates),
from one shared pre-training checkpoint (reconstruction and reviewer phases, which never query the
black box, so they are the same for every estimator), with the same seeds, and is evaluated by
the config's protocol (black-box top-1 on the test clips, cMAP of a fresh reviewer). The
*no-signal control* runs the paper's queries with a zero utility direction
(:class:`~privacy_lit.zo.estimators.NoSignal`): the loss values still drive the switch, so its row
shows what the switch and the privacy push reach alone, and every other row what its direction
adds. The surrogate comparison is evaluated in the paper estimator's runs.

Reported per estimator, mean ± std over seeds: top-1, cMAP, black-box calls per training sample
and the median cosine of the followed utility direction with the white-box gradient
(:class:`~privacy_lit.callbacks.signal.UtilitySignalMeter`). A row dominates another when its
mean is at least as good on both axes and better on one; "beyond the spread" when each
difference also exceeds the two rows' standard deviations added.

Every run is a plain ``fit`` of the CLI (the same code a user runs), in this process.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from privacy_lit.evaluation import Row, read_results

ESTIMATORS: dict[str, list[str]] = {
    "paper (SPSA + critical history)": [],
    "SPSA (no history)": ["--model.use_history=false"],
    "no signal (control)": ["--model.estimator=privacy_lit.zo.estimators.NoSignal"],
    "prior-guided (proxy)": [
        "--model.estimator=privacy_lit.zo.estimators.PriorGuided",
        "--model.proxy=privacy_lit.proxy.RecognizerProxy",
    ],
}
"""Rows and the CLI arguments that select their estimator (all at 2 queries per clip per step)."""

PAPER = "paper (SPSA + critical history)"
SURROGATE = "surrogate (true gradients of a TSM recognizer)"


@dataclass
class TrainingRow:
    method: str
    top1: list[float]
    cmap: list[float]
    calls_per_sample: list[float]
    median_cosine: list[float]

    def mean(self, field: str) -> float:
        values = [v for v in getattr(self, field) if v == v]
        return statistics.fmean(values) if values else math.nan

    def std(self, field: str) -> float:
        values = [v for v in getattr(self, field) if v == v]
        return statistics.stdev(values) if len(values) > 1 else 0.0


def _loggers(out: Path) -> str:
    return json.dumps(
        [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(out)}}]
    )


def pretrain(config: str, out: Path, extra: list[str]) -> Path:
    """The config's pre-training phases once (no black-box query): the shared starting point."""
    from privacy_lit.cli import main

    cli = main(["fit", "--config", config, f"--trainer.default_root_dir={out}",
                f"--trainer.logger={_loggers(out)}", "--trainer.callbacks.init_args.baselines=[]",
                "--trainer.callbacks.init_args.reviewer_epochs=0", *extra,
                f"--trainer.max_epochs={_pretraining_epochs(config, extra)}"])  # fmt: skip
    checkpoint = cli.trainer.checkpoint_callback.best_model_path or _last_checkpoint(out)
    if not checkpoint:
        raise FileNotFoundError(f"pre-training wrote no checkpoint under {out}")
    return Path(checkpoint)


def _pretraining_epochs(config: str, extra: list[str]) -> int:
    """Epochs of the reconstruction and reviewer phases, as ``fit`` would parse the config and
    the overrides (the same LightningCLI, not run)."""
    from lightning.pytorch.cli import LightningCLI

    from privacy_lit.cli import CLI_CLASSES

    cli = LightningCLI(**CLI_CLASSES, args=["--config", config, *extra], run=False)
    return cli.model.hparams.recon_epochs + cli.model.hparams.reviewer_epochs


def starting_point(checkpoint: Path, out: Path) -> Path:
    """``checkpoint`` without its saved hyper-parameters, as ``out/start.ckpt``.

    ``fit --ckpt_path`` makes LightningCLI parse a checkpoint's hyper-parameters *over* the
    command line's model arguments: from the pre-training checkpoint itself every row would run
    with the pre-training's estimator switches (``use_history``) and ``zo_seed``, whatever its
    arguments say. Only the states are needed to go on from it. Read with ``weights_only``: a
    ``--pretrained`` file may come from elsewhere.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state.pop("hyper_parameters", None)
    start = out / "start.ckpt"
    start.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, start.with_suffix(".tmp"))
    start.with_suffix(".tmp").replace(start)  # a stopped bench never leaves half a file
    return start


def _last_checkpoint(out: Path) -> Path | None:
    found = sorted(out.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def run_one(
    config: str, checkpoint: Path, out: Path, seed: int, estimator_args: list[str],
    baselines: list[str], reviewer_epochs: int, extra: list[str],
) -> None:  # fmt: skip
    """One adversarial phase from ``checkpoint``, written under ``out`` (results.json and the
    signal meter's medians in metrics.csv)."""
    from privacy_lit.cli import main

    main(["fit", "--config", config, "--ckpt_path", str(checkpoint),
          f"--seed_everything={seed}", f"--model.zo_seed={seed}",
          f"--trainer.default_root_dir={out}", f"--trainer.logger={_loggers(out)}",
          f"--trainer.callbacks.init_args.baselines={json.dumps(baselines)}",
          f"--trainer.callbacks.init_args.reviewer_epochs={reviewer_epochs}",
          f"--trainer.callbacks.init_args.adversarial.seed={seed}",
          *estimator_args, *extra])  # fmt: skip


def _run_dir(out: Path, name: str, seed: int) -> Path:
    return out / f"{_slug(name)}-seed{seed}"


def _finished(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("lightning_logs/version_*/results.json"))
    return found[-1] if found else None


def run(
    config: str, out: Path, seeds: int, reviewer_epochs: int, extra: list[str],
    checkpoint: Path | None = None, only: list[str] | None = None, surrogate: bool = True,
) -> list[TrainingRow]:  # fmt: skip
    """Every estimator × seed that ``out`` does not hold yet (a bench that was stopped resumes
    where it was), then the table of everything under ``out``."""
    if checkpoint is None:  # one pre-training per bench folder, kept for a resumed bench
        checkpoint = _last_checkpoint(out / "pretrain") or pretrain(config, out / "pretrain", extra)
    checkpoint = starting_point(checkpoint, out)
    for seed in range(seeds):
        for name, args in ESTIMATORS.items():
            if (only is not None and name not in only) or _finished(_run_dir(out, name, seed)):
                continue
            baselines = ["surrogate"] if surrogate and name == PAPER else []
            if any(a.startswith("--model.proxy=") for a in args):  # train the proxy once
                args = [*args, f"--model.proxy.init_args.cache_dir={out / 'proxy_cache'}"]
            run_one(config, checkpoint, _run_dir(out, name, seed), seed, args, baselines,
                    reviewer_epochs, extra)  # fmt: skip
    return collect(out)


def collect(out: Path) -> list[TrainingRow]:
    """Rows from the finished runs under ``out``: each run's ``ours`` (and surrogate) results and
    the signal meter's median cosine from its metrics.csv."""
    rows: dict[str, TrainingRow] = {}

    def add(name: str, result: Row, cosine: float) -> None:
        row = rows.setdefault(name, TrainingRow(name, [], [], [], []))
        row.top1.append(result.top1)
        row.cmap.append(result.cmap)
        row.calls_per_sample.append(result.mllm_calls_per_sample)
        row.median_cosine.append(cosine)

    for name in ESTIMATORS:
        for run_dir in sorted(out.glob(f"{_slug(name)}-seed*")):
            results = _finished(run_dir)
            if results is None:
                continue
            by_method = {row.method: row for row in read_results(results)[0]}
            add(name, by_method["ours"], _median_cosine(results.parent / "metrics.csv"))
            if "surrogate" in by_method:
                add(SURROGATE, by_method["surrogate"], math.nan)
    return list(rows.values())


def _median_cosine(metrics: Path) -> float:
    """The last ``signal/median_cosine`` the meter logged (NaN if none)."""
    value = math.nan
    if metrics.is_file():
        with metrics.open() as f:
            for record in csv.DictReader(f):
                if record.get("signal/median_cosine"):
                    value = float(record["signal/median_cosine"])
    return value


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.split(" (")[0]).strip("_")


def dominance(rows: list[TrainingRow], row: TrainingRow) -> list[str]:
    """The rows whose means dominate ``row``'s (top-1 ↑, cMAP ↓), marked "(within noise)" where a
    difference does not exceed the two standard deviations added, or a row has a single seed."""
    out = []
    for other in rows:
        if other is row:
            continue
        dt = other.mean("top1") - row.mean("top1")
        dc = row.mean("cmap") - other.mean("cmap")
        if dt >= 0 and dc >= 0 and (dt > 0 or dc > 0):
            beyond = min(len(other.top1), len(row.top1)) > 1 and all(
                d > other.std(f) + row.std(f) for d, f in ((dt, "top1"), (dc, "cmap")) if d > 0
            )  # one seed shows no spread: never "beyond" it
            out.append(other.method + ("" if beyond else " (within noise)"))
    return out


def format_table(rows: list[TrainingRow]) -> str:
    def pm(row: TrainingRow, field: str, scale: float = 100.0, digits: int = 1) -> str:
        if math.isnan(row.mean(field)):
            return "—"
        return f"{scale * row.mean(field):.{digits}f} ± {scale * row.std(field):.{digits}f}"

    lines = [
        "the adversarial phase per estimator, mean ± std over seeds",
        "| method | seeds | top-1 (%) ↑ | cMAP (%) ↓ | MLLM calls / sample "
        "| median cos(direction, ∇) | dominated by |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.method} | {len(row.top1)} | {pm(row, 'top1')} | {pm(row, 'cmap')} | "
            f"{row.mean('calls_per_sample'):.1f} | {pm(row, 'median_cosine', 1.0, 3)} | "
            f"{', '.join(dominance(rows, row)) or '—'} |"
        )
    return "\n".join(lines)
