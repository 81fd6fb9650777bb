"""Three adversarial steps of the paper's estimator on the tiny benchmark with a deterministic fake
black box, through the estimator seam and through :class:`PreSeamSystem` — the adversarial step
as it was written before the seam (commit 924f35b, verbatim but for where its history lives) —
so the refactored step is checked bit for bit on whatever machine runs the tests."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from privacy_lit.mllm.base import Answer, BlackBoxMLLM, Request
from privacy_lit.models.anonymizer import to_float, to_uint8
from privacy_lit.privacy import privacy_loss
from privacy_lit.system import PrivacySystem, _clipped
from privacy_lit.zo.history import CriticalHistoryEstimator
from privacy_lit.zo.spsa import (
    assign_flat,
    averaged_spsa_gradient,
    flat_parameters,
    perturbation_seed,
    perturbed,
    rademacher,
)
from tests.conftest import TinyBenchmark


class BrightnessMLLM(BlackBoxMLLM):
    """Names an action from the clip's mean brightness in fine bins: a loss that moves with θ."""

    def __init__(self, phrases: list[str]):
        super().__init__()
        self.phrases = phrases

    def _answer(self, requests: list[Request]) -> list[Answer]:
        means = [float(r.visual.double().mean()) for r in requests]
        return [Answer(f"The person is {self.phrases[int(m * 7) % len(self.phrases)]}.")
                for m in means]  # fmt: skip


class PreSeamSystem(PrivacySystem):
    """The step before the estimator seam: SPSA and critical history written inline."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        hp = self.hparams
        self.legacy_history = CriticalHistoryEstimator(
            hp.gamma, hp.b, hp.history_size, hp.decay, hp.history_selection, hp.use_history,
            hp.adjust_direction, hp.adjust_step,
        )  # fmt: skip

    def _adversarial_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        k = self.zo_step
        params = self.anonymizer.trainable_parameters()
        a_k, c_k = self.gains.step_size(k), self.gains.perturbation_size(k)

        # 1. privacy loss on x_a = f_A(x; θ) and its white-box gradient h_k
        images, attributes = to_float(batch["privacy"]["image"]), batch["privacy"]["attributes"]
        self.reviewer.eval()  # a fixed adversary for this step: no batch-norm statistics updates
        with torch.no_grad():
            image_features = self.anonymizer.trunk(images)
        loss_privacy = privacy_loss(self.reviewer(self.anonymizer.decode(images, image_features)))
        h = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_privacy, params)])

        # 2. SPSA through the black box: θ ± c_kΔ_k for q perturbations, 2q queries per clip,
        #    one backend call
        utility = batch["utility"]
        clips = self._utility_visuals(utility)
        b, t = clips.shape[:2]
        deltas = [
            rademacher(h.numel(), seed=perturbation_seed(self.hparams.zo_seed, k, j))
            for j in range(self.hparams.num_perturbations)
        ]
        with torch.no_grad():
            clip_frames = to_float(clips.flatten(0, 1))
            clip_features = self.anonymizer.trunk(clip_frames)
            anonymized = []
            for delta in deltas:
                for sign in (1.0, -1.0):
                    with perturbed(params, delta.to(h), sign * c_k):
                        frames = to_uint8(self.anonymizer.decode(clip_frames, clip_features))
                    anonymized += self._requests_of(frames.reshape(b, t, *frames.shape[1:]))
        answers = self._ask(anonymized, self._prompts(utility) * (2 * len(deltas)))
        losses = [
            self._utility_loss(answers[i : i + b], utility) for i in range(0, len(answers), b)
        ]
        pairs = list(zip(losses[0::2], losses[1::2], strict=True))
        g_hat = averaged_spsa_gradient(pairs, deltas, c_k).to(h)
        loss_utility = sum(losses) / len(losses)  # L_MLLM(θ_k) without an extra query

        # 3.–4. critical history (Alg. 1), then the scalarized direction (Eq. 11)
        direction, indicator = self.legacy_history.step(g_hat, k)
        clip = self.hparams.max_gradient_norm
        grad_at, branch = self.scalarizer.direction(
            [loss_utility, loss_privacy.item()],
            [_clipped((1.0 + indicator) * direction, clip), _clipped(h, clip)],
        )
        # 5. θ ← θ − a_k ∇̂L_AT (Eq. 12), then the adversarial reviewer step on the new x_a
        step = a_k * grad_at.to(h)
        with torch.no_grad():
            assign_flat(params, flat_parameters(params) - step)
            x_a = self.anonymizer.decode(images, image_features)
        self._reviewer_update(x_a, attributes)
        self.zo_step += 1
        self.last_raw_gradient_estimate = g_hat.detach()
        self.last_gradient_estimate = direction.detach()


def run_paper_steps(
    tiny: TinyBenchmark, steps: int = 3, system: type[PrivacySystem] = PrivacySystem,
    **system_args,
) -> torch.Tensor:  # fmt: skip
    """θ (the head, flat) after ``steps`` adversarial steps from seed 0, with the tiny overlay's
    anonymizer."""
    from privacy_lit.data.synthetic import ACTION_PHRASES

    L.seed_everything(0)
    data = tiny.data()
    mllm = BrightnessMLLM([ACTION_PHRASES[a] for a in sorted(ACTION_PHRASES)])
    system = system(mllm, reviewer_arch="resnet18", recon_epochs=0, reviewer_epochs=0,
                    a=1.0, c=0.05, max_gradient_norm=0.01,
                    **(tiny.system_args | system_args))  # fmt: skip
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, accelerator="cpu", deterministic=True)  # fmt: skip
    trainer.fit(system, datamodule=data)
    return torch.cat([p.detach().flatten() for p in system.anonymizer.trainable_parameters()])
