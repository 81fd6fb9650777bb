"""``data check``: validate the dataset folders a config points at, before any training.

    python -m privacy_lit data check --config conf/hmdb.yaml [--config overlay.yaml]
        [--root /datasets] [--sample 200] [--data.init_args.utility.init_args.split=2 ...]

The config is parsed by the very LightningCLI parser ``fit`` uses, so several ``--config`` files
overlay each other and ``--data.*`` overrides apply exactly as they would for ``fit``; only the
``data`` section is instantiated (no model, no black box). For every dataset module it checks,
and prints one line per finding, naming the file once:

- errors (exit status 1): missing folders, split lists, annotation or label files; lines that do
  not parse; listed videos or images that are missing, empty, unreadable or truncated (videos are
  decoded: first, middle and last frame, frame count against the container header); labels
  outside the attribute table; empty splits; label spaces of the setting that do not fit.
- warnings (exit status 0): counts that differ from the official release (a subset is fine),
  attributes without a positive sample (their AP is undefined), test images without privacy
  labels, videos without video-level labels, duplicate label entries.
- counts (``ok`` lines): split sizes, videos left out or kept and why (PA-HMDB51 test videos left
  out of HMDB51 training, videos marked ``"review": false``, videos without a label).

A data module without per-dataset checks (the synthetic benchmark) has every sample of every
split it serves read through its datasets, as training reads them — clips decoded, videos checked
to be whole, images decoded, labels parsed — and each unreadable one reported by name.

An error that several dataset modules find (e.g. one VISPR annotation file read for VISPR1 and for
VISPR2) is printed by the first and counted by the others. ``--sample N`` decodes N videos/images
per dataset, spread evenly over it, for a quick look (0: none; default: every one of them);
``--decode N`` is its older name.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from privacy_lit.data.base import CheckReport, DatasetModule, spread
from privacy_lit.data.joint import JointDataModule, PrivacyUtilityDataModule


class DataCheckCLI(LightningCLI):
    """``fit``'s LightningCLI (:data:`privacy_lit.cli.CLI_CLASSES`, same parser, same config
    merging) that instantiates the ``data`` section only: a folder check must not build the
    model or load a black box. Adds ``--root`` and ``--sample`` (or ``--decode``)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--root", type=str | None, default=None, help="folder holding the dataset folders"
        )
        parser.add_argument(
            "--sample",
            "--decode",
            type=int | None,
            default=None,
            help="decode this many videos/images per dataset, spread evenly over it (0: none; "
            "default: all)",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Sequence[str]) -> None:
        # args are always ours here (never sys.argv twice), so LightningCLI's warning about
        # both being set does not apply
        self.config = parser.parse_args(list(args))

    def instantiate_classes(self) -> None:
        from jsonargparse import ArgumentParser

        parser = ArgumentParser(exit_on_error=False)
        parser.add_subclass_arguments(self._datamodule_class, "data", fail_untyped=False)
        data = parser.parse_object({"data": self.config["data"].as_dict()})
        self.datamodule = parser.instantiate_classes(data).data
        self.model = self.trainer = None


def data_cli(args: Sequence[str]) -> DataCheckCLI:
    """Parse ``args`` (``--config A --config B --data.x=y --root R --decode N``) as ``fit``
    does and build the data module; a bad config raises (``exit_on_error=False``)."""
    from privacy_lit.cli import CLI_CLASSES

    return DataCheckCLI(
        **CLI_CLASSES, run=False, args=list(args), parser_kwargs={"exit_on_error": False}
    )


def load_data_module(
    *configs: str | Path, overrides: Sequence[str] = ()
) -> PrivacyUtilityDataModule:
    """The data module of ``configs`` (later ones overlay earlier ones) and ``overrides``
    (``--data.init_args.root=/datasets``), instantiated exactly as ``fit`` would."""
    for config in configs:
        if not Path(config).is_file():
            raise FileNotFoundError(f"config {config} does not exist")
    args = [a for c in configs for a in ("--config", str(c))] + list(overrides)
    return data_cli(args).datamodule


def _generic_check(
    module: PrivacyUtilityDataModule, report: CheckReport, sample: int | None = None
) -> None:
    """Modules without per-dataset checks (e.g. the synthetic one): read every sample of every
    split (``sample`` of them spread over each, with ``--sample``) as training reads it."""
    from tqdm import tqdm

    splits = [("utility", "train"), ("utility", "test"), ("privacy", "train"),
              ("privacy", "val"), ("privacy", "test")]  # fmt: skip
    for role, stage in splits:
        where = f"{type(module).__name__} {role} {stage}"
        try:
            dataset = getattr(module, f"{role}_dataset")(stage)
        except Exception as err:  # report whatever stops the loader
            report.error(where, str(err))
            continue
        report.count(where, len(dataset), None)
        todo = spread(range(len(dataset)), sample)
        for index in tqdm(todo, desc=f"reading {role} {stage}", unit="sample", leave=False,
                          disable=len(todo) < 50):  # fmt: skip
            try:
                dataset[index]
            except Exception as err:  # the dataset's errors name the file
                report.error(f"{where} sample {index}", f"{type(err).__name__}: {err}")
        if len(todo) < len(dataset):
            report.note(f"{where}: read {len(todo)} of {len(dataset)} samples (--sample)")


def check(
    module: PrivacyUtilityDataModule | DatasetModule, decode: int | None = None
) -> list[tuple[str, CheckReport]]:
    """One report per dataset module (and one for the setting's label spaces)."""
    reports = []
    if isinstance(module, JointDataModule):
        components = module.components
    elif isinstance(module, DatasetModule):
        components = [module]
    else:
        report = CheckReport()
        _generic_check(module, report, decode)
        return [(type(module).__name__, report)]
    done = set()
    seen_errors: set[str] = set()
    for component in components:
        key = (type(component), component.root, getattr(component, "setting", None))
        if key in done:  # e.g. PA-HMDB51 as both test utility and test privacy
            continue
        done.add(key)
        report = CheckReport()
        if not component.root.is_dir():
            report.error(
                component.root, "missing dataset folder (data/README.md says what goes there)"
            )
        else:
            try:
                component.check(report, decode)
            except Exception as err:  # a check must report, never crash
                report.error(component.root, f"check stopped: {type(err).__name__}: {err}")
        report.drop_repeated(seen_errors)
        reports.append((component.name, report))
    if isinstance(module, JointDataModule) and not any(r.failed for _, r in reports):
        report = CheckReport()
        try:
            module.validate()
            report.note(
                f"utility classes: {len(module.class_names)} train, "
                f"{len(module.test_class_names)} test"
            )
            report.note(
                f"privacy attributes: train {module.attribute_names}, "
                f"test {module.test_attribute_names}"
            )
        except Exception as err:
            report.error("setting", str(err))
        reports.append(("the setting's label spaces", report))
    return reports


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 passed (warnings allowed), 1 errors found, 2 the config cannot be read."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        cli = data_cli(args)
    except SystemExit as exit:  # --help
        return int(exit.code or 0)
    except Exception as err:
        print(f"cannot load the data section of {' '.join(args)}: {err}", file=sys.stderr)
        return 2
    module, root, decode = cli.datamodule, cli.config["root"], cli.config["sample"]
    if root is not None:
        if isinstance(module, JointDataModule | DatasetModule):
            module.set_data_dir(root)
        else:
            module.root = Path(root)
    failed = False
    for name, report in check(module, decode):
        print(f"== {name}")
        print(report.render())
        failed |= report.failed
    print("data check:", "FAILED (fix the errors above)" if failed else "passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
