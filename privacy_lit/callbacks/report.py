"""At the end of ``fit``: evaluate the trained anonymizer and the baselines, print the table and
write ``results.json`` into the run directory."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from privacy_lit.baselines.downsample import Downsample
from privacy_lit.evaluation import evaluate, format_table, write_results


class PrivacyUtilityReport(L.Callback):
    """Runs :func:`privacy_lit.evaluation.evaluate` for ours, raw data and ``downsample`` factors.

    Args:
        reviewer_epochs: epochs of each fresh reviewer of the privacy protocol.
        reviewer_arch: architecture of the fresh reviewers (default: the system's reviewer).
        downsample_factors: the downsampling baselines to include (Tab. B8).
        filename: results file, written in the trainer's log directory.
    """

    def __init__(
        self,
        reviewer_epochs: int = 8,
        reviewer_arch: str | None = None,
        downsample_factors: list[int] | None = None,
        filename: str = "results.json",
    ):
        self.reviewer_epochs = reviewer_epochs
        self.reviewer_arch = reviewer_arch
        self.downsample_factors = [4] if downsample_factors is None else downsample_factors
        self.filename = filename

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        datamodule = trainer.datamodule
        anonymizers: dict[str, nn.Module] = {"raw": nn.Identity()}
        anonymizers |= {f"downsample {f}x": Downsample(f) for f in self.downsample_factors}
        anonymizers["ours"] = pl_module.anonymizer
        train_calls = pl_module.mllm.stats.by_stage.get("train", 0)
        samples = len(datamodule.utility_dataset("train"))
        rows = evaluate(
            anonymizers, datamodule, pl_module.mllm, pl_module.scorer, pl_module.hparams.prompt,
            self.reviewer_arch or pl_module.hparams.reviewer_arch, self.reviewer_epochs,
            seed=0, calls_per_sample={"ours": train_calls / samples}, progress=pl_module.print,
        )  # fmt: skip
        table = format_table(rows)
        out = Path(trainer.log_dir or trainer.default_root_dir) / self.filename
        write_results(
            rows, out, {"mllm": pl_module.mllm.stats.as_dict(), "zo_steps": pl_module.zo_step}
        )
        pl_module.print(f"\n{table}\n\nresults written to {out}")
