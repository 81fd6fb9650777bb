"""``python -m privacy_lit``: a LightningCLI over :class:`PrivacySystem` and any benchmark
DataModule (subclass mode: ``--data.class_path``), configured by YAML in ``conf/``.

Project subcommands that are not a Lightning loop run their own ``main(argv)`` instead:

- ``bench zo``: :mod:`privacy_lit.bench.zo`, every zeroth-order optimizer side by side;
- ``bench mllm``: :mod:`privacy_lit.bench.mllm`, HTTP backend throughput against a loopback server;
- ``bench data``: :mod:`privacy_lit.bench.data`, clip loading throughput;
- ``data check``: :mod:`privacy_lit.data.check`, validates a dataset folder against its config;
- ``sweep``: :mod:`privacy_lit.sweep`, runs a W&B sweep file's grid locally;
- ``anonymize``: :mod:`privacy_lit.anonymize`, a trained anonymizer applied to images and videos;
- ``serve``: :mod:`privacy_lit.serve`, an OpenAI-compatible proxy that anonymizes every image;
- ``bench serve``: :mod:`privacy_lit.bench.serve`, the latency and throughput that proxy costs;
- ``report``: :mod:`privacy_lit.report`, one table (with Pareto dominance) from results files;
- ``usage``: :mod:`privacy_lit.usage`, a run's calls, cache hits, tokens and dollars (its ledger).

Tests call :func:`main` in-process: ``main(["fit", "--config", cfg, "--trainer.fast_dev_run=1"])``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from privacy_lit.data.joint import PrivacyUtilityDataModule
from privacy_lit.system import PrivacySystem

SUBCOMMANDS: dict[tuple[str, ...], str] = {
    ("bench", "zo"): "privacy_lit.bench.zo",
    ("bench", "mllm"): "privacy_lit.bench.mllm",
    ("bench", "data"): "privacy_lit.bench.data",
    ("data", "check"): "privacy_lit.data.check",
    ("sweep",): "privacy_lit.sweep",
    ("anonymize",): "privacy_lit.anonymize",
    ("serve",): "privacy_lit.serve",
    ("bench", "serve"): "privacy_lit.bench.serve",
    ("report",): "privacy_lit.report",
    ("usage",): "privacy_lit.usage",
}
"""Words after ``python -m privacy_lit`` → the module whose ``main(argv)`` runs them."""


CLI_CLASSES = {
    "model_class": PrivacySystem,
    "datamodule_class": PrivacyUtilityDataModule,
    "subclass_mode_data": True,
    "seed_everything_default": 0,
}
"""What ``fit`` and the other loops parse; ``data check`` parses the same (and builds only the
data module), so configs and overlays mean the same to both."""


class PrivacyCLI(LightningCLI):
    """LightningCLI that names the model arguments a checkpoint's hyper-parameters replace.

    With ``--ckpt_path``, LightningCLI parses the checkpoint's saved hyper-parameters *over* the
    config and the command line: right for a resume, silent for a researcher who starts from a
    shared checkpoint with other arguments (``--model.use_history=false`` would run with history).
    The behaviour stays Lightning's; the warning says which arguments it overrode.
    """

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        before = self.config[subcommand].model.as_dict() if subcommand else {}
        super()._parse_ckpt_path()
        if not subcommand:
            return
        after = self.config[subcommand].model.as_dict()
        replaced = replaced_arguments(before, after)
        if replaced:
            changes = ", ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in replaced.items())
            rank_zero_warn(
                f"{self.config[subcommand].ckpt_path}: the checkpoint's saved hyper-parameters "
                f"replace these model arguments: {changes}. To go on from its weights with "
                "other arguments, load a copy without its 'hyper_parameters' entry (as "
                "`bench zo --objective training` does)."
            )


def replaced_arguments(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple]:
    """The keys whose values differ between two model configurations: (before, after)."""
    return {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()
            if before.get(k) != after.get(k)}  # fmt: skip


def _subcommand(argv: list[str]) -> tuple[str, list[str]] | None:
    for words, module in SUBCOMMANDS.items():
        if tuple(argv[: len(words)]) == words:
            return module, argv[len(words) :]
    return None


def main(args: list[str] | None = None) -> LightningCLI | None:
    argv = sys.argv[1:] if args is None else args
    found = _subcommand(argv)
    if found is not None:
        module, rest = found
        code = importlib.import_module(module).main(rest)
        if args is None and isinstance(code, int) and code != 0:
            sys.exit(code)  # a broken dataset folder must fail a shell script
        return None
    # W&B must never need an account: without an API key runs are written offline.
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    return PrivacyCLI(**CLI_CLASSES, save_config_kwargs={"overwrite": True}, args=args)
