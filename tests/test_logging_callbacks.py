"""The experiment-logging callbacks: a tiny offline fit writes the same series to W&B and CSV."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from privacy_lit.analysis.wandb_offline import find_runs, media_files, read_history
from privacy_lit.callbacks import GradientVarianceMonitor, MLLMUsageMonitor, SampleGridLogger
from privacy_lit.callbacks.media import sample_grid
from privacy_lit.callbacks.monitors import RunningVariance
from privacy_lit.cli import main
from privacy_lit.data.synthetic import ACTION_PHRASES
from tests.conftest import PRICE_PER_TOKEN, TINY_VIDEOS, TinyBenchmark, csv_logger

STEPS = 3
CLIPS = 2  # utility clips per batch


def _fit_args(tiny: TinyBenchmark, out: Path) -> list[str]:
    wandb = {"class_path": "lightning.pytorch.loggers.WandbLogger",
             "init_args": {"save_dir": str(out), "project": "privacy_lit"}}  # fmt: skip
    callbacks = [
        {"class_path": "privacy_lit.callbacks.GradientVarianceMonitor",
         "init_args": {"window": 2}},
        {"class_path": "privacy_lit.callbacks.MLLMUsageMonitor"},
        {"class_path": "privacy_lit.callbacks.SampleGridLogger",
         "init_args": {"every_n_steps": 2, "num_images": 2, "num_frames": 4}},
    ]  # fmt: skip
    return [
        "fit", *tiny.cli_args(out, loggers=[csv_logger(out), wandb]),
        f"--trainer.callbacks={json.dumps(callbacks)}",
        "--trainer.max_epochs=1", f"--trainer.limit_train_batches={STEPS}",
        "--trainer.log_every_n_steps=1",
        f"--data.init_args.batch_size={CLIPS}", "--data.init_args.privacy_batch_size=4",
        '--model.mllm={"class_path": "tests.conftest.PricedFakeMLLM"}',
        "--model.recon_epochs=0", "--model.reviewer_epochs=0",  # every step a ZO step
    ]  # fmt: skip


def _csv_rows(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def tiny_fit(tiny: TinyBenchmark, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import wandb

    out = tmp_path_factory.mktemp("logging_fit")
    main(_fit_args(tiny, out))
    wandb.finish()  # Lightning leaves the run open; the run file is complete once it is finished
    return out


SERIES = [
    "train/utility_loss", "train/privacy_loss", "train/reviewer_bce", "train/scalarized_loss",
    "zo/branch", "zo/indicator", "zo/a_k", "zo/a_k_adjusted", "zo/c_k", "zo/z_utility",
    "zo/z_privacy", "zo/deviation_utility", "zo/deviation_privacy", "zo/step",
    "zo/grad_variance", "zo/grad_variance_window", "zo/raw_grad_variance",
    "mllm/step_calls", "mllm/step_cache_hits", "mllm/step_tokens", "mllm/step_usd",
    "mllm/step_calls_per_sample", "mllm/total_calls", "mllm/total_usd", "mllm/calls_per_sample",
    "mllm/cache_hit_rate",
]  # fmt: skip


@pytest.mark.slow
def test_fit_logs_every_series_to_csv_and_wandb_alike(tiny_fit: Path) -> None:
    (metrics,) = tiny_fit.rglob("metrics.csv")
    rows = _csv_rows(metrics)
    by_step = {int(r["step"]): r for r in rows if "zo/step" in r}
    assert sorted(by_step) == list(range(STEPS))  # log_every_n_steps=1: one row per ZO step
    for name in SERIES:
        assert all(name in r for r in by_step.values() if r["zo/step"] >= 1 or "grad" not in name)

    # a ZO step queries θ ± c_kΔ_k for every clip of the batch: 2 calls per sample
    assert all(r["mllm/step_calls"] == 2 * CLIPS and r["mllm/step_calls_per_sample"] == 2
               for r in rows if "mllm/step_calls" in r)  # fmt: skip
    assert by_step[STEPS - 1]["mllm/total_calls"] == 2 * CLIPS * STEPS
    assert by_step[0]["mllm/step_usd"] == pytest.approx(
        by_step[0]["mllm/step_tokens"] * PRICE_PER_TOKEN
    )
    train_clips = len(ACTION_PHRASES) * TINY_VIDEOS["train"]  # logged values are float32
    expected = 2 * CLIPS * STEPS / train_clips
    assert by_step[STEPS - 1]["mllm/calls_per_sample"] == pytest.approx(expected)
    assert math.isfinite(by_step[STEPS - 1]["zo/grad_variance"])
    assert by_step[1]["zo/grad_variance"] == pytest.approx(by_step[1]["zo/grad_variance_window"])

    (run,) = find_runs(tiny_fit)
    history = read_history(run)
    wandb_by_step: dict[int, dict] = {}
    for row in history:
        if "trainer/global_step" in row:
            wandb_by_step.setdefault(int(row["trainer/global_step"]), {}).update(row)
    for step, csv_row in ((int(r["step"]), r) for r in rows):
        for name, value in csv_row.items():
            if name not in ("step", "epoch"):  # identical numbers, CSV rounds nothing
                assert wandb_by_step[step][name] == pytest.approx(value, rel=1e-6), name

    # the sample grids: every 2 steps and at the end, raw/anonymized/difference rows
    media = [p for p in media_files(run) if p.suffix == ".png"]
    assert {p.name.split("_")[0] for p in media} >= {"images", "clip"}
    logged = sorted(int(r["trainer/global_step"]) for r in history if "samples/images" in r)
    assert logged == [2, STEPS]


@pytest.mark.slow
def test_variance_checkpoint_state_loads_without_pickle(tiny_fit: Path) -> None:
    (ckpt,) = tiny_fit.rglob("*.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # the anonymize CLI does so
    (monitor_state,) = [v for k, v in state["callbacks"].items() if "GradientVariance" in k]
    assert monitor_state["stats"]["grad_variance"]["count"] == STEPS


def test_demo_config_lists_the_monitors_before_the_report() -> None:
    callbacks = yaml.safe_load(Path("conf/demo.yaml").read_text())["trainer"]["callbacks"]
    names = [c["class_path"].rsplit(".", 1)[-1] for c in callbacks]
    assert {"GradientVarianceMonitor", "MLLMUsageMonitor", "SampleGridLogger"} <= set(names)
    assert names[-1] == "PrivacyUtilityReport"  # `--trainer.callbacks.init_args.*` edits it


def test_running_variance_matches_torch() -> None:
    gen = torch.Generator().manual_seed(0)
    vectors = [torch.randn(50, generator=gen) * (i + 1) + 3 for i in range(7)]
    full, window = RunningVariance(), RunningVariance(window=3)
    for v in vectors:
        full.update(v)
        window.update(v)
    assert full.value() == pytest.approx(float(torch.stack(vectors).double().var(0).mean()))
    assert window.value() == pytest.approx(float(torch.stack(vectors[-3:]).double().var(0).mean()))
    assert math.isnan(RunningVariance().value())


def test_sample_grid_layout() -> None:
    tiles = torch.zeros(3, 4, 5, 3, dtype=torch.uint8)
    grid = sample_grid([tiles, tiles + 255], pad=1, scale=2)
    assert grid.shape == (2 * (8 + 1) + 1, 3 * (10 + 1) + 1, 3)
    assert grid[1, 1].tolist() == [0, 0, 0] and grid[10, 1].tolist() == [255, 255, 255]


def test_media_needs_wandb_only_when_required(tmp_path: Path) -> None:
    trainer = L.Trainer(logger=CSVLogger(tmp_path), accelerator="cpu")
    SampleGridLogger().setup(trainer, L.LightningModule(), "fit")  # skipped quietly
    with pytest.raises(MisconfigurationException, match="WandbLogger"):
        SampleGridLogger(require_wandb=True).setup(trainer, L.LightningModule(), "fit")


def test_monitors_say_what_the_module_lacks() -> None:
    with pytest.raises(AttributeError, match="last_gradient_estimate"):
        GradientVarianceMonitor().on_fit_start(L.Trainer(logger=False), L.LightningModule())
    with pytest.raises(TypeError, match="black box at `mllm`"):
        MLLMUsageMonitor().on_train_start(L.Trainer(logger=False), L.LightningModule())
