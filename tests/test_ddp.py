"""The zeroth-order step under Lightning's DDP: two CPU ranks (gloo) follow one trajectory, the
one a single process follows on the same global batch, also across a resume from rank 0's
checkpoint.

The ranks run this file as a script (``python -m tests.test_ddp --worker ...``): Lightning's own
DDP launcher starts rank 1 from the same command line, as it does for a user's ``fit``. The black
box is the deterministic brightness namer of ``tests/paper_step.py`` (its answers, hence the loss
differences the ranks reduce, move with θ) and the reviewer has no batch norm (see
:class:`NormFreeReviewer`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from privacy_lit.zo.distributed import shard_mean, sharded

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH, GLOBAL_PRIVACY_BATCH = 4, 8
STEPS_PER_EPOCH, EPOCHS = 2, 2


class NormFreeReviewer(nn.Module):
    """A small reviewer without batch norm. A ResNet's batch norm normalises each rank's shard with
    the shard's own statistics, which only ``sync_batchnorm`` (GPUs only in torch) turns into the
    global batch's; without it, two ranks stay identical to each other but not to one process."""

    def __init__(self, num_attributes: int = 7):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_attributes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _flat(parameters: Any) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in parameters])


def _state(system: Any) -> dict[str, Any]:
    """What must agree across ranks: θ (the head), the estimator's state (the critical history),
    z*, the step counter; plus the reviewer, which h_k of the next step reads."""
    return {
        "theta": _flat(system.anonymizer.trainable_parameters()),
        "reviewer": _flat(system.reviewer.parameters()),
        "estimator": system.estimator.state_dict(),
        "ideal": system.scalarizer.ideal.clone(),
        "zo_step": system.zo_step,
        "calls": system.mllm.stats.calls,
    }


def worker(root: Path, out: Path, devices: int, tag: str, then_resume: bool) -> None:
    """Fit the adversarial phase for ``EPOCHS`` epochs of ``STEPS_PER_EPOCH`` steps on
    ``devices`` CPU ranks, the global batch split between them, and save every rank's state;
    with ``then_resume``, fit again in the same processes from the checkpoint rank 0 wrote
    after the first epoch (``resumed_rank*.pt``), then with a prior-guided estimator, whose
    proxy gradient is reduced too (``prior_rank*.pt``)."""
    _fit(root, out, devices, tag)
    if then_resume:
        _fit(root, out, devices, "resumed", out / f"{tag}_checkpoints" / "epoch=0-step=2.ckpt")
        from privacy_lit.proxy import RecognizerProxy
        from privacy_lit.zo.estimators import PriorGuided

        _fit(root, out, devices, "prior", estimator=PriorGuided(num_random=1),
             proxy=RecognizerProxy(epochs=1))  # fmt: skip


def _fit(
    root: Path, out: Path, devices: int, tag: str, resume: Path | None = None, **system_args: Any
) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from privacy_lit.data.synthetic import ACTION_PHRASES, SyntheticDataModule
    from privacy_lit.system import PrivacySystem
    from tests.conftest import TINY_IMAGES, TINY_VIDEOS
    from tests.paper_step import BrightnessMLLM

    torch.set_num_threads(1)  # two ranks share the machine's cores
    L.seed_everything(0)
    data = SyntheticDataModule(
        str(root), videos_per_action=TINY_VIDEOS, images=TINY_IMAGES,
        batch_size=GLOBAL_BATCH // devices, privacy_batch_size=GLOBAL_PRIVACY_BATCH // devices,
    )  # fmt: skip
    # answers that move with θ (the tests' one-epoch stand-in says "not sure" to everything,
    # which would leave every loss difference, and so the reduced ĝ, at zero)
    backend = BrightnessMLLM([ACTION_PHRASES[a] for a in sorted(ACTION_PHRASES)])
    settings = {"a": 1.0, "c": 0.05, "max_gradient_norm": 0.01} | system_args
    system = PrivacySystem(backend, reviewer_arch="resnet18", recon_epochs=0, reviewer_epochs=0,
                           **settings)  # fmt: skip
    system.reviewer = NormFreeReviewer()
    start = _state(system)["theta"]
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_find_unused_parameters_true",
        max_epochs=EPOCHS, limit_train_batches=STEPS_PER_EPOCH, limit_val_batches=0,
        num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
        enable_model_summary=False, deterministic=True, default_root_dir=out,
        callbacks=[ModelCheckpoint(dirpath=out / f"{tag}_checkpoints", save_top_k=-1)],
    )  # fmt: skip
    trainer.fit(system, datamodule=data, ckpt_path=resume)
    torch.save(_state(system) | {"start": start}, out / f"{tag}_rank{trainer.global_rank}.pt")


def _launch(root: Path, out: Path, devices: int, tag: str, then_resume: bool = False):
    command = [sys.executable, "-m", "tests.test_ddp", "--worker", "--root", str(root),
               "--out", str(out), "--devices", str(devices), "--tag", tag]  # fmt: skip
    if then_resume:
        command.append("--then-resume")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", WANDB_MODE="offline")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _wait(process: subprocess.Popen, what: str) -> None:
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, f"{what} failed:\n{output[-4000:]}"


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def _assert_equal(a: Any, b: Any, exact: bool, where: str = "") -> None:
    """Nested states equal: bit for bit (``exact``) or to float tolerance."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal(a[key], b[key], exact, f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal(x, y, exact, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        if exact:
            assert torch.equal(a, b), where
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=where)
    elif isinstance(a, float) and not exact:
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), where
    else:
        assert a == b, where


@pytest.mark.slow
def test_two_ranks_follow_one_trajectory_and_resume_from_rank_zero(
    tiny_root: Path, tmp_path: Path
) -> None:
    # the DDP run, then a resume of both ranks from the checkpoint rank 0 wrote after the
    # first epoch; beside them, one process on the same global batches
    ddp = _launch(tiny_root, tmp_path, 2, "ddp", then_resume=True)
    single = _launch(tiny_root, tmp_path, 1, "one")
    _wait(single, "the single-process run")
    _wait(ddp, "the two-rank run")

    ranks = [_load(tmp_path / f"ddp_rank{r}.pt") for r in (0, 1)]
    one = _load(tmp_path / "one_rank0.pt")
    steps = STEPS_PER_EPOCH * EPOCHS
    history = one["estimator"]["history"]["gradients"]
    assert one["zo_step"] == steps and any(g.abs().sum() > 0 for g in history)  # ĝ ≠ 0 measured
    assert not torch.equal(one["theta"], one["start"])  # θ moved
    # every rank queried only its own shard: half the single process's queries each
    assert ranks[0]["calls"] == ranks[1]["calls"] == one["calls"] // 2 == steps * 2 * 2
    ranks[0].pop("calls"), ranks[1].pop("calls"), one.pop("calls")
    _assert_equal(ranks[0], ranks[1], exact=True)  # the ranks agree bit for bit
    _assert_equal(ranks[0], one, exact=False)  # and follow the single process's trajectory

    after_resume = [_load(tmp_path / f"resumed_rank{r}.pt") for r in (0, 1)]
    assert [s.pop("calls") for s in after_resume] == [steps * 2 * 2] * 2  # own counts restored
    _assert_equal(after_resume[0], after_resume[1], exact=True)
    _assert_equal(after_resume[0], ranks[0], exact=False)

    # any estimator: a prior-guided one (its state is the previous direction) stays identical too
    prior = [_load(tmp_path / f"prior_rank{r}.pt") for r in (0, 1)]
    assert prior[0]["estimator"]["previous"] is not None
    _assert_equal(prior[0], prior[1], exact=True)


def test_one_process_gets_its_own_values_back() -> None:
    values = torch.randn(5)
    assert shard_mean(values, 3) is values

    def evaluate(points: list[torch.Tensor]) -> list[float]:
        return [float(p.sum()) for p in points]

    assert sharded(evaluate, 4) is evaluate


def test_a_local_model_loads_on_the_rank_s_current_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from privacy_lit.mllm.transformers_backend import resolve_device

    # Lightning makes rank r's GPU current before setup(): "auto" and "cuda" must follow it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 3)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # an explicit index is kept
    assert resolve_device("cpu") == torch.device("cpu")


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--then-resume", action="store_true")
    args = parser.parse_args()
    worker(args.root, args.out, args.devices, args.tag, args.then_resume)


if __name__ == "__main__":
    _main()
