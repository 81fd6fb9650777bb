"""``python -m privacy_lit``: a LightningCLI over :class:`PrivacySystem` and any benchmark
DataModule (subclass mode: ``--data.class_path``), configured by YAML in ``conf/``.

``python -m privacy_lit bench zo`` runs :mod:`privacy_lit.bench.zo` instead.

Tests call :func:`main` in-process: ``main(["fit", "--config", cfg, "--trainer.fast_dev_run=1"])``.
"""

from __future__ import annotations

import os
import sys

from lightning.pytorch.cli import LightningCLI

from privacy_lit.data.joint import PrivacyUtilityDataModule
from privacy_lit.system import PrivacySystem


def main(args: list[str] | None = None) -> LightningCLI | None:
    argv = sys.argv[1:] if args is None else args
    if argv[:2] == ["bench", "zo"]:
        from privacy_lit.bench.zo import main as bench_zo

        bench_zo(argv[2:])
        return None
    # W&B must never need an account: without an API key runs are written offline.
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    return LightningCLI(
        PrivacySystem,
        PrivacyUtilityDataModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
    )
