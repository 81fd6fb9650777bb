"""Three adversarial steps of the paper's estimator on the tiny benchmark with a deterministic fake
black box: the θ they reach is pinned in ``tests/data/paper_step_theta.pt`` (written by the step
before the estimator seam existed), so the refactored step is checked bit for bit."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from privacy_lit.data.synthetic import SyntheticDataModule
from privacy_lit.mllm.base import Answer, BlackBoxMLLM, Request
from privacy_lit.system import PrivacySystem
from tests.conftest import TINY_IMAGES, TINY_VIDEOS

REFERENCE = Path(__file__).parent / "data" / "paper_step_theta.pt"


class BrightnessMLLM(BlackBoxMLLM):
    """Names an action from the clip's mean brightness in fine bins: a loss that moves with θ."""

    def __init__(self, phrases: list[str]):
        super().__init__()
        self.phrases = phrases

    def _answer(self, requests: list[Request]) -> list[Answer]:
        means = [float(r.visual.double().mean()) for r in requests]
        return [Answer(f"The person is {self.phrases[int(m * 7) % len(self.phrases)]}.")
                for m in means]  # fmt: skip


def run_paper_steps(root: Path, steps: int = 3, **system_args) -> torch.Tensor:
    """θ (the head, flat) after ``steps`` adversarial steps from seed 0."""
    from privacy_lit.data.synthetic import ACTION_PHRASES

    L.seed_everything(0)
    data = SyntheticDataModule(str(root), videos_per_action=TINY_VIDEOS, images=TINY_IMAGES,
                               batch_size=4, privacy_batch_size=8)  # fmt: skip
    mllm = BrightnessMLLM([ACTION_PHRASES[a] for a in sorted(ACTION_PHRASES)])
    system = PrivacySystem(mllm, reviewer_arch="resnet18", recon_epochs=0, reviewer_epochs=0,
                           a=1.0, c=0.05, max_gradient_norm=0.01, **system_args)  # fmt: skip
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, accelerator="cpu", deterministic=True)  # fmt: skip
    trainer.fit(system, datamodule=data)
    return torch.cat([p.detach().flatten() for p in system.anonymizer.trainable_parameters()])
