"""The LightningModule: a ZO step touches only the head; the CLI runs the whole pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from privacy_lit.callbacks.signal import UtilitySignalMeter
from privacy_lit.cli import main
from privacy_lit.proxy import RecognizerProxy
from privacy_lit.system import PrivacySystem
from privacy_lit.zo.estimators import (
    HistoryEnhanced,
    NoSignal,
    PriorGuided,
    PriorGuidedSearch,
    QueriedHistory,
)
from tests.conftest import TinyBenchmark


@pytest.mark.parametrize("num_perturbations", [1, 2])
def test_one_zo_step_changes_only_the_head(tiny: TinyBenchmark, num_perturbations: int) -> None:
    L.seed_everything(0)
    data, backend = tiny.data(), tiny.standin()
    system = PrivacySystem(
        backend, reviewer_arch="resnet18", recon_epochs=0, reviewer_epochs=0, c=0.5,
        num_perturbations=num_perturbations, **tiny.system_args,
    )  # fmt: skip
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False,
                        limit_val_batches=0, accelerator="cpu")  # fmt: skip
    before = {k: v.clone() for k, v in system.anonymizer.state_dict().items()}
    trainer.fit(system, datamodule=data)
    after = system.anonymizer.state_dict()
    head = {f"head.{k}" for k in system.anonymizer.head.state_dict()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= head
    # θ ± cΔ_j for each of the 4 clips and each of the q perturbations
    assert backend.stats.by_stage["train"] == 2 * 4 * num_perturbations
    assert system.zo_step == 1


def test_gradient_clipping_bounds_each_step(tiny: TinyBenchmark) -> None:
    L.seed_everything(0)
    data, backend = tiny.data(), tiny.standin()
    system = PrivacySystem(
        backend, reviewer_arch="resnet18", recon_epochs=0, reviewer_epochs=0, a=1.0, c=0.5,
        max_gradient_norm=1e-3, **tiny.system_args,
    )  # fmt: skip
    trainer = L.Trainer(
        max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        limit_val_batches=0, accelerator="cpu",
    )  # fmt: skip
    before = torch.cat([p.detach().flatten().clone() for p in system.anonymizer.head.parameters()])
    trainer.fit(system, datamodule=data)
    after = torch.cat([p.detach().flatten() for p in system.anonymizer.head.parameters()])
    # unclipped, SPSA estimates alone would move θ by ~|ΔL|/c·√p; clipped, each of the 3 steps
    # is at most a_k · 1e-3 (a_k <= a = 1; + the σ-term of Eq. 6)
    assert 0 < float((after - before).norm()) <= 3 * 1e-3 * (1 + 1e-3)


def test_fast_dev_run_takes_one_reconstruction_step_and_skips_the_report(
    tiny: TinyBenchmark, tmp_path: Path
) -> None:
    cli = main(["fit", *tiny.cli_args(tmp_path), "--trainer.fast_dev_run=1"])
    # the demo's first phase is reconstruction pre-training: one anonymizer step, no ZO step
    assert cli.trainer.global_step == 1 and cli.model.zo_step == 0
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["pretrain/recon_l1"]) and "pretrain/reviewer_bce" not in metrics
    assert "train" not in cli.model.mllm.stats.by_stage  # no query in that phase
    assert not list(tmp_path.rglob("results.json"))  # the report waits for a real run


def _tiny_pipeline(tiny: TinyBenchmark, out: Path) -> dict[str, dict]:
    args = tiny.cli_args(out) + [
        "--trainer.max_epochs=3", "--trainer.limit_train_batches=2", "--model.recon_epochs=1",
        "--model.reviewer_epochs=1", "--trainer.callbacks.init_args.reviewer_epochs=1",
        "--trainer.callbacks.init_args.baselines=[raw,downsample4]",
    ]  # fmt: skip
    main(["fit", *args])
    results = list(out.rglob("results.json"))
    assert len(results) == 1
    return {r["method"]: r for r in json.loads(results[0].read_text())["rows"]}


@pytest.mark.slow
def test_full_tiny_pipeline_is_complete_and_reproducible(
    tiny: TinyBenchmark, tmp_path: Path
) -> None:
    rows = _tiny_pipeline(tiny, tmp_path / "first")
    assert set(rows) == {"raw", "downsample 4x", "ours"}
    assert rows["ours"]["mllm_calls_per_sample"] > 0
    assert all(0.0 <= r["top1"] <= 1.0 and 0.0 <= r["cmap"] <= 1.0 for r in rows.values())
    assert list(tmp_path.rglob("*.ckpt"))
    assert _tiny_pipeline(tiny, tmp_path / "second") == rows  # same seed, same figures


def _adversarial_fit(
    tiny: TinyBenchmark, steps: int, callbacks=(), **system_args
) -> PrivacySystem:  # fmt: skip
    L.seed_everything(0)
    data, backend = tiny.data(), tiny.standin()
    system = PrivacySystem(backend, reviewer_arch="resnet18", recon_epochs=0, reviewer_epochs=0,
                           c=0.05, **(tiny.system_args | system_args))  # fmt: skip
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, accelerator="cpu",
                        callbacks=list(callbacks))  # fmt: skip
    trainer.fit(system, datamodule=data)
    return system


def test_a_prior_guided_step_measures_along_the_proxy_gradient(tiny: TinyBenchmark) -> None:
    system = _adversarial_fit(tiny, 1, estimator=PriorGuided(), proxy=RecognizerProxy(epochs=1))
    assert system.mllm.stats.by_stage["train"] == 2 * 4  # θ ± r·prior for each of the 4 clips
    assert system.proxy.model is not None  # trained on the training clips, in setup
    assert system.last_gradient_estimate is not None


def test_a_prior_guided_search_step_queries_the_centre_and_keeps_its_scale(
    tiny: TinyBenchmark,
) -> None:
    search = PriorGuidedSearch()
    system = _adversarial_fit(tiny, 2, estimator=search, proxy=RecognizerProxy(epochs=1))
    assert system.mllm.stats.by_stage["train"] == 2 * 3 * 4  # θ and θ ± r·u, 4 clips, 2 steps
    assert search.scale in {1 / 4, 1 / 2, 1.0}  # halved or doubled back at each of 2 steps
    checkpoint: dict = {}
    system.on_save_checkpoint(checkpoint)
    assert checkpoint["zo"]["estimator"] == {"scale": search.scale}  # resumes where it was


def test_an_estimator_that_needs_a_prior_refuses_to_run_without_a_proxy(
    tiny: TinyBenchmark,
) -> None:
    with pytest.raises(ValueError, match="proxy"):
        PrivacySystem(tiny.standin(), estimator=PriorGuided())


@pytest.mark.slow  # two fits
def test_the_signal_meter_measures_the_followed_direction(tiny: TinyBenchmark) -> None:
    meter = UtilitySignalMeter(every_n_steps=1)
    _adversarial_fit(tiny, 3, callbacks=[meter])
    assert len(meter.cosines) == 3
    assert all(-1.0 <= c <= 1.0 for c in meter.cosines)
    control = UtilitySignalMeter(every_n_steps=2)
    system = _adversarial_fit(tiny, 3, callbacks=[control], estimator=NoSignal())
    assert len(control.cosines) == 2  # steps 0 and 2
    assert control.cosines == [0.0, 0.0]  # a zero direction has no signal by construction
    assert system.mllm.stats.by_stage["train"] == 3 * 2 * 4  # the paper's queries all the same


def test_the_cli_takes_an_estimator_as_a_class_path(tiny: TinyBenchmark, tmp_path: Path) -> None:
    cli = main(["fit", *tiny.cli_args(tmp_path), "--trainer.fast_dev_run=1",
                "--model.recon_epochs=0", "--model.reviewer_epochs=0",
                "--model.estimator=privacy_lit.zo.estimators.HistoryEnhanced",
                "--model.estimator.init_args.base=privacy_lit.zo.estimators.QueriedHistory",
                "--model.estimator.init_args.gamma=0.3"])  # fmt: skip
    estimator = cli.model.estimator
    assert isinstance(estimator, HistoryEnhanced) and isinstance(estimator.base, QueriedHistory)
    assert estimator.history.gamma == 0.3 and cli.model.zo_step == 1


def test_a_checkpoint_from_pretraining_starts_any_estimator(tiny: TinyBenchmark) -> None:
    system = _adversarial_fit(tiny, 1)
    checkpoint: dict = {}
    system.on_save_checkpoint(checkpoint)
    other = PrivacySystem(system.mllm, estimator=NoSignal())
    checkpoint["zo"]["step"] = 0  # as written at the end of pre-training
    other.on_load_checkpoint(checkpoint)
    checkpoint["zo"]["step"] = 1  # mid adversarial phase: the estimator state must match
    with pytest.raises(ValueError, match="same estimator"):
        other.on_load_checkpoint(checkpoint)


def test_the_cli_names_the_arguments_a_checkpoints_hyper_parameters_replace(
    tiny: TinyBenchmark, tmp_path: Path
) -> None:
    cli = main(["fit", *tiny.cli_args(tmp_path / "a"), "--trainer.fast_dev_run=1"])
    checkpoint = tmp_path / "pretrained.ckpt"
    cli.trainer.save_checkpoint(checkpoint, weights_only=False)  # saved with use_history=True
    with pytest.warns(
        UserWarning, match=r"replace these model arguments: .*use_history: False → True"
    ):
        again = main(["fit", *tiny.cli_args(tmp_path / "b"), "--trainer.fast_dev_run=1",
                      f"--ckpt_path={checkpoint}", "--model.use_history=false"])  # fmt: skip
    assert again.model.hparams.use_history  # Lightning's behaviour, now said out loud
