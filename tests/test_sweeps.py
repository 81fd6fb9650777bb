"""W&B sweep files parse as CLI arguments, and the offline sweep runner runs and summarizes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import privacy_lit.cli
from privacy_lit import sweep as sweep_module
from privacy_lit.cli import PrivacyCLI
from privacy_lit.sweep import (
    SweepError,
    configurations,
    load_sweep,
    parse_overrides,
    run_arguments,
)
from privacy_lit.zo.history import CriticalHistoryEstimator
from privacy_lit.zo.scalarize import ParetoScalarizer
from tests.conftest import TINY_CONFIG, TinyBenchmark

SWEEPS = sorted(Path("conf/sweeps").glob("*.yaml"))
# the paper's grids (supplement Tab. A1–A5); b = 2 is outside CriticalHistoryEstimator's range
PAPER_GRIDS = {
    "gamma.yaml": ("model.gamma", [0.0, 0.3, 0.5, 0.7, 1.0]),
    "b.yaml": ("model.b", [0.0, 0.1, 0.3, 0.5, 1.0, 2.0]),
    "decay.yaml": ("model.decay", [0.1, 0.5, 0.9, 1.0]),
}


class _ParseOnly(PrivacyCLI):
    """The project's LightningCLI, built by ``privacy_lit.cli.main`` but never instantiating."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["run"] = False
        super().__init__(*args, **kwargs)

    def instantiate_classes(self) -> None:
        pass


@pytest.fixture(scope="module")
def cli_parser():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(privacy_lit.cli, "PrivacyCLI", _ParseOnly)
        cli = privacy_lit.cli.main(["--config", "conf/demo.yaml"])
    return cli.parser


def test_there_is_a_sweep_per_study() -> None:
    names = {p.stem for p in SWEEPS}
    expected = {"lambda", "gamma", "b", "history_size", "decay", "optimizer", "scalarization"}
    assert expected <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_is_a_standard_wandb_grid(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    assert raw["method"] == "grid"
    # a study's runs need only the Pareto plots' references; the seeds sweep's spread table
    # needs every row
    rows = [] if path.name == "seeds.yaml" else [
        "--trainer.callbacks.init_args.baselines=[raw,downsample4]"
    ]  # fmt: skip
    assert raw["command"] == [
        "${env}", "${interpreter}", "-m", "privacy_lit", "fit", "--config", "conf/demo.yaml",
        *rows, "${args}",
    ]  # fmt: skip
    assert all("values" in spec for spec in raw["parameters"].values())
    if path.name in PAPER_GRIDS:
        name, grid = PAPER_GRIDS[path.name]
        assert raw["parameters"] == {name: {"values": grid}}


def _check_runs(cli_parser, first_only: bool) -> int:
    """Each run's arguments, as the W&B agent formats them, parse with the project's CLI and give
    the model the intended values, which the ZO pieces accept (their checks run at construction,
    so a value like b = 2 fails here rather than in the middle of a sweep)."""
    checked = 0
    for path in SWEEPS:
        sweep = load_sweep(path)
        for parameters in configurations(sweep, count=1 if first_only else None):
            args = run_arguments(sweep, parameters, {})
            assert args[:3] == ["fit", "--config", "conf/demo.yaml"]
            config = cli_parser.parse_args(args[1:])  # the parse-only parser has no subcommands
            model = config.model
            for name, value in parameters.items():
                if not name.startswith("model"):  # a top-level argument (the seeds sweep)
                    assert config[name] == value, (path.name, name)
                    continue
                expected = yaml.safe_load(value) if name == "model" else {name[6:]: value}
                for key, v in expected.items():
                    assert model[key] == v, (path.name, name, key)
            CriticalHistoryEstimator(
                model.gamma, model.b, model.history_size, model.decay, model.history_selection,
                model.use_history, model.adjust_direction, model.adjust_step,
            )  # fmt: skip
            ParetoScalarizer((model.lambda_utility, model.lambda_privacy), model.scalarization)
            checked += 1
    return checked


def test_each_sweeps_first_run_is_a_valid_cli_argument(cli_parser) -> None:
    assert _check_runs(cli_parser, first_only=True) == len(SWEEPS)


@pytest.mark.slow  # ~50 parses of the demo config; the inner loop parses each sweep's first run
def test_every_swept_value_is_a_valid_cli_argument(cli_parser) -> None:
    assert _check_runs(cli_parser, first_only=False) >= 40


def test_lambda_sweep_keeps_the_weights_summing_to_one(cli_parser) -> None:
    sweep = load_sweep("conf/sweeps/lambda.yaml")
    pairs = set()
    for parameters in configurations(sweep):
        model = cli_parser.parse_args(run_arguments(sweep, parameters, {})[1:]).model
        assert model.lambda_utility + model.lambda_privacy == pytest.approx(1.0)
        pairs.add((model.lambda_utility, model.scalarization))
        assert model.gamma == 0.5 and model.a == 100.0  # the rest of the config is kept
    assert len(pairs) == 10


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


GRID = """
method: grid
command: [python-placeholder]
parameters:
  model.gamma: {values: [0.3, 0.7]}
  model.b: {values: [0.1, 0.5]}
"""


def _grid(tmp_path: Path) -> Path:
    text = GRID.replace(
        "[python-placeholder]",
        '["${env}", "${interpreter}", "-m", "privacy_lit", "fit", "--config", "c.yaml", "${args}"]',
    )
    return _write(tmp_path, text)


def test_grid_random_and_errors(tmp_path: Path) -> None:
    sweep = load_sweep(_grid(tmp_path))
    assert sweep.name == "sweep"
    runs = configurations(sweep)
    assert runs == [
        {"model.gamma": 0.3, "model.b": 0.1}, {"model.gamma": 0.3, "model.b": 0.5},
        {"model.gamma": 0.7, "model.b": 0.1}, {"model.gamma": 0.7, "model.b": 0.5},
    ]  # fmt: skip
    assert configurations(sweep, count=3) == runs[:3]
    assert run_arguments(sweep, runs[0], {"trainer.max_epochs": "2"}) == [
        "fit", "--config", "c.yaml", "--model.gamma=0.3", "--model.b=0.1",
        "--trainer.max_epochs=2",
    ]  # fmt: skip

    sweep.method = "random"
    sweep.parameters["model.a"] = {"distribution": "log_uniform_values", "min": 1.0, "max": 100.0}
    draws = configurations(sweep, count=5, seed=1)
    assert draws == configurations(sweep, count=5, seed=1) != configurations(sweep, 5, seed=2)
    assert all(1.0 <= d["model.a"] <= 100.0 and d["model.b"] in (0.1, 0.5) for d in draws)
    with pytest.raises(SweepError, match="--count"):
        configurations(sweep)

    with pytest.raises(SweepError, match="swept parameter 'model.gamma'"):
        parse_overrides(["model.gamma=0.1"], ["model.gamma"])
    with pytest.raises(SweepError, match="key=value"):
        parse_overrides(["trainer.max_epochs"])
    bad = GRID.replace("[python-placeholder]", '["python", "train.py", "${args}"]')
    with pytest.raises(SweepError, match="-m privacy_lit"):
        load_sweep(_write(tmp_path, bad))
    with pytest.raises(SweepError, match="needs `values`"):
        load_sweep(_write(tmp_path, GRID.replace("{values: [0.1, 0.5]}", "{min: 0, max: 1}")))


def test_dry_run_prints_the_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert sweep_module.main([str(_grid(tmp_path)), "--dry-run", "--set", "seed_everything=3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert lines[0] == (
        "python -m privacy_lit fit --config c.yaml --model.gamma=0.3 --model.b=0.1 "
        "--seed_everything=3"
    )


def test_runner_collects_every_runs_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs in process (the CLI replaced by a stub writing a results.json); a failing run is
    recorded and the sweep goes on."""
    seen: list[list[str]] = []

    class FakeCLI:
        def __init__(self, log_dir: Path):
            self.trainer = type("T", (), {"log_dir": str(log_dir)})()

    def fake_main(args: list[str]) -> FakeCLI:
        seen.append(args)
        if "--model.b=0.5" in args and "--model.gamma=0.7" in args:
            raise SystemExit(2)  # what a LightningCLI parse error does
        log_dir = tmp_path / f"run{len(seen)}"
        log_dir.mkdir()
        gamma = float(args[3].split("=")[1])
        rows = [{"method": "ours", "top1": gamma, "cmap": 0.5, "mllm_calls_per_sample": 2.0}]
        (log_dir / "results.json").write_text(json.dumps({"rows": rows, "zo_steps": 4}))
        return FakeCLI(log_dir)

    monkeypatch.setattr(privacy_lit.cli, "main", fake_main)
    out = tmp_path / "summary.json"
    code = sweep_module.main([str(_grid(tmp_path)), "--in-process", "--out", str(out),
                              "--set", "trainer.max_epochs=1"])  # fmt: skip
    assert code == 1  # one run failed
    summary = json.loads(out.read_text())
    assert summary["sweep"] == "sweep" and summary["method"] == "grid"
    runs = summary["runs"]
    assert [r["status"] for r in runs] == ["ok", "ok", "ok", "failed"]
    assert runs[2]["parameters"] == {"model.gamma": 0.7, "model.b": 0.1}
    assert runs[2]["rows"][0]["top1"] == 0.7 and runs[2]["zo_steps"] == 4
    assert "SystemExit" in runs[3]["error"]
    assert all(a[-1] == "--trainer.max_epochs=1" for a in seen)


def test_runner_runs_the_real_cli_in_process(tiny: TinyBenchmark, tmp_path: Path) -> None:
    """One real (fast_dev_run) fit through ``privacy_lit.cli``: the summary finds its log dir."""
    sweep_file = tmp_path / "one.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "one", "method": "grid",
        "command": ["${env}", "${interpreter}", "-m", "privacy_lit", "fit", "--config",
                    "conf/demo.yaml", "${args}"],
        "parameters": {"model.gamma": {"values": [0.3]}},
    }))  # fmt: skip
    out = tmp_path / "summary.json"
    overrides = [
        f"config={TINY_CONFIG}", *tiny.settings(), "trainer.fast_dev_run=1",
        "trainer.logger=false", f"trainer.default_root_dir={tmp_path}",
        'model.mllm={"class_path": "tests.conftest.PricedFakeMLLM"}',
    ]  # fmt: skip
    args = [str(sweep_file), "--in-process", "--out", str(out)]
    assert sweep_module.main(args + [a for o in overrides for a in ("--set", o)]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["status"] == "ok" and run["parameters"] == {"model.gamma": 0.3}
    assert Path(run["log_dir"]) == tmp_path and "no results.json" in run["note"]
