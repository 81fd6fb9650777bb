"""The results table: evaluate the trained anonymizer and the comparison methods with the full
protocol (:mod:`privacy_lit.evaluation`), print the table and write ``results.json`` into the run
directory — at the end of ``fit``, and at the end of ``test``.

``python -m privacy_lit test --config conf/demo.yaml --ckpt_path RUN/checkpoints/X.ckpt
--trainer.callbacks.init_args.baselines=[all]`` evaluates a checkpoint against every comparison
method (the miniature Tab. 1). Without ``--ckpt_path`` there is no trained anonymizer: ``test``
then evaluates the comparison methods only, and says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import nn

from privacy_lit.baselines.registry import BASELINE_NAMES, build_baseline
from privacy_lit.baselines.surrogate import (
    AdversarialConfig,
    SurrogateConfig,
    train_surrogate_anonymizer,
    train_whitebox_anonymizer,
)
from privacy_lit.evaluation import (
    Row,
    evaluate,
    format_precision_table,
    format_table,
    write_results,
)
from privacy_lit.row_cache import RowCache

TRAINED_COMPARISONS: tuple[str, ...] = ("surrogate", "whitebox")
"""Comparison methods that train an anonymizer first (:mod:`privacy_lit.baselines.surrogate`)."""
COMPARISON_NAMES: tuple[str, ...] = (*BASELINE_NAMES, *TRAINED_COMPARISONS)
"""Everything ``baselines`` may list; ``"all"`` stands for all of them, in this order."""


def method_name(name: str) -> str:
    """The row name of a comparison in the results (``downsample4`` → ``downsample 4x``, as the
    fit's table has always said; the rest keep their registry name)."""
    if name.startswith("downsample"):
        return f"downsample {name.removeprefix('downsample')}x"
    return name


def results_metrics(rows: list[Row]) -> dict[str, float]:
    """The rows as flat metrics, ``results/<method>/top1|cmap|calls_per_sample`` (spaces in a
    method's name become ``_``): what the loggers get, so that a W&B run's summary holds the
    table (:func:`privacy_lit.analysis.pareto.load_wandb_runs` reads ``results/ours/*``)."""
    metrics = {}
    for row in rows:
        key = f"results/{row.method.replace(' ', '_')}"
        metrics |= {f"{key}/top1": row.top1, f"{key}/cmap": row.cmap,
                    f"{key}/calls_per_sample": row.mllm_calls_per_sample}  # fmt: skip
    return metrics


def expand_baselines(names: list[str]) -> list[str]:
    """``"all"`` expanded, unknown names refused (listing the valid ones), duplicates dropped."""
    out: list[str] = []
    for name in names:
        for n in COMPARISON_NAMES if name == "all" else (name,):
            if n not in COMPARISON_NAMES:
                raise ValueError(
                    f"unknown baseline {n!r}; valid: all, {', '.join(COMPARISON_NAMES)}"
                )
            if n not in out:
                out.append(n)
    return out


class PrivacyUtilityReport(L.Callback):
    """Runs :func:`privacy_lit.evaluation.evaluate` for ours and the comparison methods.

    Args:
        reviewer_epochs: epochs of each fresh reviewer of the privacy protocol.
        reviewer_arch: architecture of the fresh reviewers (default: the system's reviewer); also
            the adversary of the surrogate and white-box training.
        downsample_factors: with ``baselines`` unset, the rows are raw data and these downsampling
            factors (Tab. B8; default ``[4]``).
        filename: results file, written in the trainer's log directory.
        baselines: the comparison rows, by name: ``raw``, ``downsample2|4|8``, ``blacken``,
            ``blur_strong``, ``blur_weak`` (:mod:`privacy_lit.baselines.registry`), ``surrogate``
            (trained against a surrogate recognizer, Tab. 1–4), ``whitebox`` (true gradients of
            the stand-in's own model, Tab. B7 — needs a black box that exposes ``recognizer``),
            or ``all``: every one that applies to this run (the others are left out with a
            warning; one named explicitly that cannot apply is an error at the start).
            Overrides ``downsample_factors``.
        adversarial: the surrogate and white-box training (steps, batch sizes, learning rates,
            privacy weight, seed; :class:`~privacy_lit.baselines.surrogate.AdversarialConfig`).
        surrogate: the surrogate recognizer trained on raw clips (epochs, width, seed;
            :class:`~privacy_lit.baselines.surrogate.SurrogateConfig`).
        row_cache: a folder where the comparison rows are kept (:mod:`privacy_lit.row_cache`):
            they do not depend on the anonymizer a run trains, so a later run with the same
            data, black box, protocol and seed reads them instead of training their reviewers
            (and the surrogate / white-box anonymizers) again. Needs the run's saved config
            (``config.yaml`` in the log directory, as LightningCLI writes it) for the data part
            of the key; without one nothing is cached. None: no cache.
        seed: the fresh reviewers' seed; None: the run's seed (``seed_everything``), so a seeds
            sweep measures the reviewer's spread too.
        reviewer_processes: train the fresh reviewers in this many one-thread worker processes
            beside the rest of the evaluation (0: in this process; see
            :func:`~privacy_lit.evaluation.evaluate`).
    """

    def __init__(
        self,
        reviewer_epochs: int = 8,
        reviewer_arch: str | None = None,
        downsample_factors: list[int] | None = None,
        filename: str = "results.json",
        baselines: list[str] | None = None,
        adversarial: AdversarialConfig | None = None,
        surrogate: SurrogateConfig | None = None,
        row_cache: str | None = None,
        seed: int | None = None,
        reviewer_processes: int = 0,
    ):
        self.reviewer_epochs = reviewer_epochs
        self.reviewer_arch = reviewer_arch
        self.downsample_factors = [4] if downsample_factors is None else downsample_factors
        self.filename = filename
        self.baselines = None if baselines is None else expand_baselines(baselines)
        self._named = set(baselines or ()) - {"all"}  # asked for by name, not through "all"
        if reviewer_epochs < 0:
            raise ValueError(f"reviewer_epochs must be >= 0, got {reviewer_epochs}")
        self.adversarial = adversarial or AdversarialConfig()
        self.surrogate = surrogate or SurrogateConfig()
        self.row_cache = None if row_cache is None else RowCache(row_cache)
        self.seed = seed
        if reviewer_processes < 0:
            raise ValueError(f"reviewer_processes must be >= 0, got {reviewer_processes}")
        self.reviewer_processes = reviewer_processes

    @property
    def comparisons(self) -> list[str]:
        if self.baselines is not None:
            return self.baselines
        return ["raw", *(f"downsample{f}" for f in self.downsample_factors)]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse a comparison this run cannot have now, not at the end of a long training."""
        for name in [n for n in self.comparisons if n in TRAINED_COMPARISONS]:
            try:
                self._check_trainable(name, pl_module, trainer.datamodule)
            except ValueError as error:
                if name in self._named or self.baselines is None:
                    raise
                # "all" means all that apply to this run: say what is left out, and why
                rank_zero_warn(f"'all' leaves out {name!r}: {error}")
                self.baselines = [n for n in self.baselines if n != name]

    @staticmethod
    def _check_trainable(name: str, pl_module: L.LightningModule, datamodule) -> None:
        task = getattr(datamodule, "utility_task", "action")
        if task != "action":
            raise ValueError(
                f"baseline {name!r} trains against an action recognizer; this data's utility "
                f"task is {task!r} (the paper's VQA surrogate is a VQA model, not provided)"
            )
        if name != "whitebox":
            return
        backend = pl_module.mllm.innermost
        if not hasattr(type(backend), "recognizer"):
            raise ValueError(
                f"baseline 'whitebox' needs the black box's own differentiable model; "
                f"{type(backend).__name__} exposes none (only the embedded stand-in does)"
            )
        classes = getattr(backend, "classes", None)  # label order of its recognizer
        if classes is None:
            return
        phrases = getattr(backend, "phrases", {})  # the stand-in's class id → class name
        predicted = [phrases.get(c, c) for c in classes]
        if predicted != list(datamodule.class_names):
            raise ValueError(
                f"baseline 'whitebox': the black box's recognizer predicts {predicted}, "
                f"the data's action labels are {list(datamodule.class_names)} (order matters)"
            )

    def _build(self, name: str, pl_module: L.LightningModule, datamodule, arch: str) -> nn.Module:
        if name not in TRAINED_COMPARISONS:
            return build_baseline(name)
        hp = pl_module.hparams
        shape = {"anonymizer_widths": hp.anonymizer_widths, "head_hidden": hp.head_hidden}
        config = self.adversarial
        if name == "surrogate":
            return train_surrogate_anonymizer(
                datamodule, arch, config, self.surrogate, progress=pl_module.print, **shape
            ).anonymizer
        recognizer = pl_module.mllm.innermost.recognizer
        return train_whitebox_anonymizer(
            datamodule, recognizer, arch, config, progress=pl_module.print, **shape
        ).anonymizer

    def _report(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, include_ours: bool
    ) -> None:
        datamodule = trainer.datamodule
        arch = self.reviewer_arch or pl_module.hparams.reviewer_arch
        anonymizers: dict[str, nn.Module | Callable[[], nn.Module]] = {
            method_name(n): partial(self._build, n, pl_module, datamodule, arch)
            for n in self.comparisons
        }
        cache_keys = self._cache_keys(trainer, pl_module)
        calls = {}
        if include_ours:
            anonymizers["ours"] = pl_module.anonymizer
            train_calls = pl_module.mllm.stats.by_stage.get("train", 0)
            calls["ours"] = train_calls / len(datamodule.utility_dataset("train"))
        out = Path(trainer.log_dir or trainer.default_root_dir) / self.filename
        extra = {
            "zo_steps": pl_module.zo_step,
            "stage": stage,
            "checkpoint": None if trainer.ckpt_path is None else str(trainer.ckpt_path),
            "reviewer_epochs": self.reviewer_epochs,
        }

        def save(rows: list[Row]) -> None:
            # after every row: a failure on the 9th (a paid API down) keeps the first 8
            done = {"complete": len(rows) == len(anonymizers)}
            write_results(rows, out, {"mllm": pl_module.mllm.stats.as_dict(), **extra, **done})

        # test answers are scored against the test classes (they differ cross-dataset)
        scorer = getattr(pl_module, "test_scorer", None) or pl_module.scorer
        rows = evaluate(
            anonymizers, datamodule, pl_module.mllm, scorer, pl_module.hparams.prompt, arch,
            self.reviewer_epochs, seed=self._seed(), calls_per_sample=calls,
            progress=pl_module.print, on_row=save, cache=self.row_cache, cache_keys=cache_keys,
            reviewer_processes=self.reviewer_processes,
        )  # fmt: skip
        for logger in trainer.loggers:  # finalized already, but W&B and CSV still take rows
            logger.log_metrics(results_metrics(rows), step=trainer.global_step)
            logger.save()
        table = format_table(rows)
        if precision := format_precision_table(rows):
            table += f"\n\nper-attribute precision (%) ↓ (Tab. B11):\n{precision}"
        pl_module.print(f"\n{table}\n\nresults written to {out}")

    def _seed(self) -> int:
        if self.seed is not None:
            return self.seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0))  # set by seed_everything

    def _cache_keys(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, dict]:
        """What each comparison row depends on besides the protocol and the reviewer data: the
        run's data config, and for the trained comparisons their training settings and the
        anonymizer's shape. Empty (nothing cached) without a cache or a saved config."""
        config_file = Path(trainer.log_dir or trainer.default_root_dir) / "config.yaml"
        if self.row_cache is None or not config_file.is_file():
            return {}
        data = (yaml.safe_load(config_file.read_text()) or {}).get("data")
        hp = pl_module.hparams
        trained = {
            "adversarial": asdict(self.adversarial), "surrogate": asdict(self.surrogate),
            "anonymizer": [list(hp.anonymizer_widths), list(hp.head_hidden)],
        }  # fmt: skip
        return {
            method_name(n): {"data": data, **(trained if n in TRAINED_COMPARISONS else {})}
            for n in self.comparisons
        }

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        self._report(trainer, pl_module, "fit", include_ours=True)

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        # "ours" needs a trained anonymizer: a checkpoint, or the weights of a fit in this process
        trained = trainer.ckpt_path is not None or pl_module.zo_step > 0
        if not trained:
            pl_module.print(
                "no checkpoint (--ckpt_path): the anonymizer is untrained, so 'ours' is left out "
                "and only the comparison methods are evaluated"
            )
        # the test loop runs its hooks under inference mode; the protocol trains fresh reviewers
        # (and the surrogate / white-box anonymizers), which needs autograd back
        with torch.inference_mode(False), torch.enable_grad():
            self._report(trainer, pl_module, "test", include_ours=trained)
