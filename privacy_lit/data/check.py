"""``data check``: validate the dataset folders a config points at, before any training.

    python -m privacy_lit.data.check --config conf/hmdb.yaml [--root /datasets] [--decode 200]

For every dataset module of the config's ``data`` section it checks, and prints one line per
finding, naming the file:

- errors (exit status 1): missing folders, split lists, annotation or label files; lines that do
  not parse; listed videos or images that are missing, empty, unreadable or truncated (videos are
  decoded: first, middle and last frame, frame count against the container header); labels
  outside the attribute table; empty splits; label spaces of the setting that do not fit.
- warnings (exit status 0): counts that differ from the official release (a subset is fine),
  attributes without a positive sample (their AP is undefined), test images without privacy
  labels, videos without video-level labels.

``--decode N`` decodes at most N videos/images per dataset (0: none; default: all of them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from privacy_lit.data.base import CheckReport, DatasetModule
from privacy_lit.data.joint import JointDataModule, PrivacyUtilityDataModule


def load_data_module(config: str | Path) -> PrivacyUtilityDataModule | DatasetModule:
    """The config's ``data`` module, instantiated exactly as the LightningCLI would."""
    from jsonargparse import ArgumentParser

    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    spec = (yaml.safe_load(path.read_text()) or {}).get("data")
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"{path}: expected a 'data:' section with a class_path")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--data", type=PrivacyUtilityDataModule | DatasetModule)
    cfg = parser.parse_object({"data": spec})
    return parser.instantiate(cfg).data


def _generic_check(module: PrivacyUtilityDataModule, report: CheckReport) -> None:
    """Modules without per-dataset checks (e.g. the synthetic one): build and read one sample."""
    for role in ("utility", "privacy"):
        for stage in ("train", "test"):
            try:
                dataset = getattr(module, f"{role}_dataset")(stage)
                report.count(f"{type(module).__name__} {role} {stage}", len(dataset), None)
                if len(dataset):
                    dataset[0]
            except Exception as err:  # report whatever stops the loader
                report.error(f"{type(module).__name__} {role} {stage}", str(err))


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
        _generic_check(module, report)
        return [(type(module).__name__, report)]
    seen = set()
    for component in components:
        key = (type(component), component.root, getattr(component, "setting", None))
        if key in seen:  # e.g. PA-HMDB51 as both test utility and test privacy
            continue
        seen.add(key)
        report = CheckReport()
        if not component.root.is_dir():
            report.error(
                component.root, "missing dataset folder (data/README.md says what goes there)"
            )
            reports.append((component.name, report))
            continue
        try:
            component.check(report, decode)
        except Exception as err:  # a check must report, never crash
            report.error(component.root, f"check stopped: {type(err).__name__}: {err}")
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
    parser = argparse.ArgumentParser(
        prog="python -m privacy_lit data check",
        description="Validate the dataset folders a config points at.",
    )
    parser.add_argument("--config", required=True, help="a config of conf/, e.g. conf/hmdb.yaml")
    parser.add_argument("--root", help="folder holding the dataset folders (default: the config's)")
    parser.add_argument(
        "--decode",
        type=int,
        default=None,
        help="decode at most this many videos/images per dataset (0: none)",
    )
    args = parser.parse_args(argv)
    try:
        module = load_data_module(args.config)
    except Exception as err:
        print(f"cannot load the data section of {args.config}: {err}", file=sys.stderr)
        return 2
    if args.root is not None:
        if isinstance(module, JointDataModule):
            module.set_data_dir(args.root)
        elif isinstance(module, DatasetModule):
            module.set_data_dir(args.root)
        else:
            module.root = Path(args.root)
    failed = False
    for name, report in check(module, args.decode):
        print(f"== {name}")
        print(report.render())
        failed |= report.failed
    print("data check:", "FAILED (fix the errors above)" if failed else "passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
