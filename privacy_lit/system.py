"""The LightningModule: one training step of the paper (Eq. 11–12), and the pre-training phases.

``fit`` runs three phases, chosen by epoch, so one command does everything and a checkpoint of any
phase resumes where it stopped:

1. ``recon_epochs``: the whole anonymizer learns to reconstruct its input (L1; App. E, SPAct).
2. ``reviewer_epochs``: the privacy reviewer learns the attributes on anonymized images.
3. the rest: the adversarial phase. Each step (DESIGN.md "One training step"):
   privacy loss and its autograd gradient h_k; the utility direction from the configured
   :class:`~privacy_lit.zo.estimators.GradientEstimator` — by default the paper's, SPSA ĝ_k from
   black-box evaluations at θ ± c_kΔ_k with critical-history g̃_k and I_k (Alg. 1), all of a
   step's queries in one backend call; the augmented Tchebycheff branch (Eq. 11);
   θ ← θ − a_k ∇̂L_AT (Eq. 12); then one reviewer step.

Only the anonymizer head (``Anonymizer.trainable_parameters``) is perturbed and updated in phase 3.
The black box is reached only through :class:`privacy_lit.mllm.BlackBoxMLLM` with uint8 pixels.
What it is sent are the *training* inputs through the current anonymizer, which starts as the
identity: every step logs how close they are to the raw inputs (``blackbox/psnr_median``,
``blackbox/ssim_median``), so a run on private data shows what left the machine.

Under Lightning's DDP strategy (``conf/ddp.yaml``) every rank evaluates its own shard of the batch
and the step is taken on the global batch: the black-box losses, h_k, L_P and a proxy's prior are
all-reduced weighted by shard size (:mod:`privacy_lit.zo.distributed`) before the estimator, the
history or the scalarizer read them, so θ, the estimator's state and z* stay identical on every
rank; the reviewer's update goes through ``manual_backward``, whose gradients DDP all-reduces.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from privacy_lit.callbacks.resume import ResumeCheckpoint
from privacy_lit.metrics import VQAAccuracy
from privacy_lit.mllm.base import FAILED, Answer, BatchError, BlackBoxMLLM, QueryStats, Request
from privacy_lit.models.anonymizer import Anonymizer, anonymize_pixels, to_float, to_uint8
from privacy_lit.models.reviewer import build_reviewer
from privacy_lit.privacy import privacy_loss
from privacy_lit.proxy import UtilityProxy
from privacy_lit.utility.retrieval import RetrievalScorer
from privacy_lit.utility.vqa import VQAScorer
from privacy_lit.zo.distributed import shard_mean, sharded, world_size
from privacy_lit.zo.estimators import (
    SPSA,
    Evaluate,
    GradientEstimator,
    HistoryEnhanced,
    StepContext,
)
from privacy_lit.zo.history import Selection
from privacy_lit.zo.scalarize import Method, ParetoScalarizer
from privacy_lit.zo.spsa import (
    GainSchedule,
    assign_flat,
    assigned,
    flat_gradient,
    flat_parameters,
)

PSNR_IDENTICAL = 100.0
"""The PSNR (dB) reported for a frame sent exactly as it was (the true value is infinite)."""


class PrivacySystem(L.LightningModule):
    """Anonymizer f_A trained against a black-box MLLM and an adversarial privacy reviewer f_P.

    Args:
        mllm: the black box (any :class:`BlackBoxMLLM`).
        prompt: the question sent with every visual input; for VQA data (``utility_task ==
            "vqa"``) ``{question}`` in it is replaced by each sample's question, and the utility
            loss is the text-embedding distance of the answer to the human answers (App. E).
        lambda_utility, lambda_privacy: λ₁, λ₂ of Eq. 4–6 (App. E: 0.5, 0.5).
        scalarization: ``"at"`` (Eq. 6), ``"t"`` (Eq. 5) or ``"ws"`` (Eq. 4) — Tab. 5.
        eps_ratio, sigma: ε = eps_ratio·z* and σ of Eq. 6 (0.1, 1e-4).
        gamma, b, history_size, decay: γ, b, m, d of Eq. 8–10 (0.5, 0.3, 10, 0.5).
        history_selection, use_history, adjust_direction, adjust_step: the Tab. 7 ablations.
            These, ``zo_seed`` and ``num_perturbations`` configure the paper's estimator,
            ``HistoryEnhanced(SPSA(num_perturbations, zo_seed), gamma, ...)``, which is used when
            ``estimator`` is not given (so the Tab. 6 / 7 / A1–A5 sweeps set them directly).
        a, a_decay, a_stability, c, c_decay: SPSA gains a_k = a/(k+1+A)^α, c_k = c/(k+1)^γ_c.
        reviewer_arch: ``"resnet50"`` (paper) or ``"resnet18"`` (CPU demo only).
        anonymizer_widths, head_hidden: UNet trunk widths and head widths (~9k head parameters).
        recon_epochs, reviewer_epochs: lengths of the pre-training phases.
        recon_lr, reviewer_lr: Adam learning rates of reconstruction and of the reviewer.
        text_encoder, retrieval_temperature: retrieval scoring of answers (None = all-MiniLM-L6-v2).
        zo_seed: base seed of the perturbations Δ_k (Δ_k is regenerated from (zo_seed, k)).
        num_perturbations: q, the SPSA estimates averaged per step (2q queries per clip; the
            paper uses q = 1).
        estimator: any :class:`~privacy_lit.zo.estimators.GradientEstimator` (a ``class_path``
            in YAML); None builds the paper's from the arguments above, which it then replaces.
        proxy: a local differentiable stand-in for the black box's utility
            (:class:`~privacy_lit.proxy.UtilityProxy`) whose gradient is the prior of a
            prior-guided estimator; required by estimators that need a prior, unused otherwise.
        max_gradient_norm: if set, each objective's gradient — the estimated (1+I_k)g̃_k and the
            computed h_k — is clipped to this L2 norm before Eq. 11 combines them; a_k then scales
            the step as in Eq. 12, so its decay is kept. Not in the paper (None is Eq. 12 exactly).
            The two gradients are "unbalanced" (Sec. 3.3): an SPSA estimate has norm
            ~√p·|∂L/∂Δ| (√9067 ≈ 95 times the directional derivative) and points mostly at random,
            while h_k is exact and grows as the reviewer grows confident. With one a_k for both, a
            gain that lets h_k move θ turns every utility step into a long random jump. Clipping
            each keeps the augmented Tchebycheff switch in charge: when L_MLLM (measured exactly
            by the black box) rises above its share, privacy steps pause.
        max_failed_fraction: a query that fails for good (after the backend's retries: a server
            error, a malformed reply) is scored as a blind guess and counted (``mllm/failed``);
            a batch in which more than this fraction failed stops the run instead, since its
            step would follow noise (a server that is down, a wrong URL).
        checkpoint_every_n_steps: write ``checkpoints/resume.ckpt`` every this many training
            steps and on SIGTERM / SIGINT (:class:`~privacy_lit.callbacks.resume.
            ResumeCheckpoint`), so a killed run resumed with ``--ckpt_path`` loses at most this
            many steps and re-asks nothing it paid for; None: epoch-end checkpoints only.
    """

    def __init__(
        self,
        mllm: BlackBoxMLLM,
        prompt: str = "What is the person in the video doing? Answer in one sentence.",
        lambda_utility: float = 0.5,
        lambda_privacy: float = 0.5,
        scalarization: Method = "at",
        eps_ratio: float = 0.1,
        sigma: float = 1e-4,
        gamma: float = 0.5,
        b: float = 0.3,
        history_size: int = 10,
        decay: float = 0.5,
        history_selection: Selection = "critical",
        use_history: bool = True,
        adjust_direction: bool = True,
        adjust_step: bool = True,
        a: float = 0.01,
        a_decay: float = 0.4,
        a_stability: float = 0.0,
        c: float = 0.005,
        c_decay: float = 0.2,
        reviewer_arch: str = "resnet50",
        num_attributes: int = 7,
        anonymizer_widths: Sequence[int] = (16, 32, 64, 128),
        head_hidden: Sequence[int] = (88, 64),
        recon_epochs: int = 2,
        reviewer_epochs: int = 2,
        recon_lr: float = 1e-3,
        reviewer_lr: float = 1e-3,
        text_encoder: str | None = None,
        retrieval_temperature: float = 0.05,
        zo_seed: int = 0,
        num_perturbations: int = 1,
        max_gradient_norm: float | None = None,
        estimator: GradientEstimator | None = None,
        proxy: UtilityProxy | None = None,
        max_failed_fraction: float = 0.5,
        checkpoint_every_n_steps: int | None = 10,
    ):
        super().__init__()
        if num_perturbations < 1:
            raise ValueError(f"num_perturbations must be >= 1, got {num_perturbations}")
        if not 0 <= max_failed_fraction <= 1:
            raise ValueError(f"max_failed_fraction must be in [0, 1], got {max_failed_fraction}")
        # objects are configuration, not checkpoint content: a checkpoint must load without them
        self.save_hyperparameters(ignore=["mllm", "estimator", "proxy"])
        self.automatic_optimization = False
        self.mllm = mllm
        self.anonymizer = Anonymizer(anonymizer_widths, head_hidden)
        self.reviewer = build_reviewer(reviewer_arch, num_attributes)
        self.gains = GainSchedule(a, a_decay, a_stability, c, c_decay)
        self.estimator = estimator or HistoryEnhanced(
            SPSA(num_perturbations, zo_seed), gamma, b, history_size, decay, history_selection,
            use_history, adjust_direction, adjust_step,
        )  # fmt: skip
        if self.estimator.needs_prior and proxy is None:
            raise ValueError(
                f"{type(self.estimator).__name__} measures along a proxy's gradient: set `proxy` "
                "(e.g. privacy_lit.proxy.RecognizerProxy)"
            )
        self.proxy = proxy
        self.scalarizer = ParetoScalarizer(
            (lambda_utility, lambda_privacy), scalarization, eps_ratio, sigma
        )
        self.zo_step = 0
        # The utility gradient estimates of the latest ZO step, for monitoring only (Fig. A1,
        # :class:`privacy_lit.callbacks.GradientVarianceMonitor`): the raw SPSA ĝ_k and the
        # direction the step followed (g̃_k, or ĝ_k for plain SPSA), before (1 + I_k) and clipping.
        self.last_raw_gradient_estimate: Tensor | None = None
        self.last_gradient_estimate: Tensor | None = None
        self.scorer: RetrievalScorer | None = None
        self.test_scorer: RetrievalScorer | None = None
        self.vqa_scorer: VQAScorer | None = None
        self.utility_task = "action"
        self.val_top1: MulticlassAccuracy | VQAAccuracy | None = None
        self.val_cmap = MultilabelAveragePrecision(num_attributes, average="macro")
        self._sent_fidelity: dict[str, list[Tensor]] = {"psnr": [], "ssim": []}
        self.answer_counts = {"failed": 0, "overlong": 0}
        """Answers of every query so far that failed (scored as blind guesses) or were cut."""
        self._ledger_run_restored = False

    # ----------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if len(datamodule.attribute_names) != self.hparams.num_attributes:
            raise ValueError(
                f"num_attributes={self.hparams.num_attributes} but the data has "
                f"{len(datamodule.attribute_names)}: {datamodule.attribute_names}"
            )
        self.utility_task = getattr(datamodule, "utility_task", "action")
        hp = self.hparams
        if self.utility_task == "vqa":
            self.vqa_scorer = VQAScorer(hp.text_encoder)
            self.val_top1 = VQAAccuracy(num_answers=None)
        else:
            self.scorer = RetrievalScorer(
                datamodule.class_names, hp.text_encoder, hp.retrieval_temperature
            )
            # cross-dataset settings (UCF101 -> PA-HMDB51) score test answers against test classes
            test_classes = getattr(datamodule, "test_class_names", datamodule.class_names)
            self.test_scorer = (
                self.scorer
                if list(test_classes) == list(datamodule.class_names)
                else RetrievalScorer(test_classes, hp.text_encoder, hp.retrieval_temperature)
            )
            self.val_top1 = MulticlassAccuracy(len(test_classes), average="micro")
        self.val_top1 = self.val_top1.to(self.device)
        backend = self.mllm.innermost
        if getattr(backend, "mode", None) == "option_scores" and not backend.options:
            backend.options = list(datamodule.class_names)  # score the classes being learned
        self.mllm.prepare()
        if stage == "fit" and self.proxy is not None and self.estimator.needs_prior:
            self.proxy.prepare(datamodule, self.device)

    def on_fit_start(self) -> None:
        wrapper = self.trainer.strategy.model
        if isinstance(wrapper, DistributedDataParallel) and not wrapper.find_unused_parameters:
            # each phase's backward reaches one network only (the reconstruction the anonymizer,
            # the reviewer's update the reviewer, the ZO step none): DDP must not wait for the
            # gradients of the other, or it stops at the next step
            raise ValueError(
                "PrivacySystem under DDP needs find_unused_parameters=True: use "
                "--trainer.strategy=ddp_find_unused_parameters_true (conf/ddp.yaml does)"
            )
        self._point_to_ledger()
        trainable = sum(p.numel() for p in self.anonymizer.trainable_parameters())
        total = sum(p.numel() for p in self.anonymizer.parameters())
        self.print(f"anonymizer: {total} parameters, {trainable} trained by the ZO step (head)")
        for logger in self.loggers:
            logger.log_hyperparams(
                {"anonymizer_head_parameters": trainable, "anonymizer_parameters": total}
            )

    def on_test_start(self) -> None:
        self._point_to_ledger()

    def _point_to_ledger(self) -> None:
        """One ledger run id for every rank (rank 0's, or the checkpoint's on resume), and
        ``ledger.json`` in the log directory naming the ledger and the run, for
        ``python -m privacy_lit usage RUN``."""
        ledger = self.mllm.ledger
        if ledger is None:
            return
        if not self._ledger_run_restored:
            ledger.run = self.trainer.strategy.broadcast(ledger.run)
        # a run without loggers has no run directory (its log_dir would be the working one)
        directory = self.trainer.log_dir if self.trainer.loggers else None
        if self.trainer.is_global_zero and directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            pointer = {"ledger": str(ledger.path.resolve()), "run": ledger.run}
            (Path(directory) / "ledger.json").write_text(json.dumps(pointer, indent=1))

    def configure_callbacks(self) -> list[L.Callback]:
        every = self.hparams.checkpoint_every_n_steps
        return [] if every is None else [ResumeCheckpoint(every)]

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.Adam(self.anonymizer.parameters(), lr=self.hparams.recon_lr),
            torch.optim.Adam(self.reviewer.parameters(), lr=self.hparams.reviewer_lr),
        ]

    @property
    def phase(self) -> str:
        epoch, hp = self.current_epoch, self.hparams
        if epoch < hp.recon_epochs:
            return "reconstruction"
        if epoch < hp.recon_epochs + hp.reviewer_epochs:
            return "reviewer"
        return "adversarial"

    # ----------------------------------------------------------------------------- helpers
    def _ask(self, visuals: list[Tensor], prompts: list[str]) -> list[Answer]:
        """The black box's answers; a query that failed for good gets :data:`FAILED` (a blind
        guess) unless more than ``max_failed_fraction`` of the batch failed."""
        requests = [Request(v.cpu(), p) for v, p in zip(visuals, prompts, strict=True)]
        try:
            answers = self.mllm.answer(requests)
        except BatchError as error:
            if len(error.failures) > self.hparams.max_failed_fraction * len(requests):
                raise BatchError(error.failures, error.answers) from error
            answers = [FAILED if a is None else a for a in error.answers]
        self.answer_counts["failed"] += sum(a.failed for a in answers)
        self.answer_counts["overlong"] += sum(a.overlong for a in answers)
        return answers

    def _answer_quality(self) -> dict[str, float]:
        """Awkward answers so far: failed and cut (here), empty, refusing and multi-sentence
        (the scorer's counts), for the per-step figures ``mllm/failed``, ``mllm/refusals``..."""
        scorer = self.vqa_scorer if self.utility_task == "vqa" else self.scorer
        counts = scorer.counts if scorer is not None else None
        return {
            "mllm/failed": self.answer_counts["failed"],
            "mllm/overlong": self.answer_counts["overlong"],
            "mllm/empty": counts.empty if counts else 0,
            "mllm/refusals": counts.refusal if counts else 0,
            "mllm/multi_sentence": counts.multi_sentence if counts else 0,
        }

    def _utility_visuals(self, utility: dict[str, Any]) -> Tensor:
        """``B × T × H × W × 3`` uint8: clips as they are, VQA images as one-frame clips."""
        return utility["image"].unsqueeze(1) if self.utility_task == "vqa" else utility["clip"]

    def _requests_of(self, frames: Tensor) -> list[Tensor]:
        """Anonymized ``B × T × ...`` pixels → one visual per request (an image for VQA)."""
        return list(frames[:, 0] if self.utility_task == "vqa" else frames)

    def _prompts(self, utility: dict[str, Any]) -> list[str]:
        prompt = self.hparams.prompt
        if self.utility_task == "vqa":
            return [prompt.format(question=q) for q in utility["question"]]
        return [prompt] * len(utility["clip"])

    def _utility_loss(self, answers: list[Answer], utility: dict[str, Any]) -> float:
        """L_MLLM of a batch's answers: retrieval cross-entropy (actions; a local model's
        per-option scores when it gives them) or VQA embedding distance."""
        if self.utility_task == "vqa":
            return float(self.vqa_scorer.loss([a.text for a in answers], utility["answers"]))
        return float(self.scorer.loss(answers, utility["action"]))

    def _black_box_objective(
        self, utility: dict[str, Any], clip_shape: torch.Size, frames: Tensor, features: Tensor
    ) -> Evaluate:
        """The batch's black-box utility loss as a batched function of θ (the head, flat): for
        n points, n·B anonymized visuals go to the black box in one call."""
        params = self.anonymizer.trainable_parameters()
        b, t = clip_shape

        def evaluate(points: list[Tensor]) -> list[float]:
            anonymized = []
            with torch.no_grad():
                for theta in points:
                    with assigned(params, theta):
                        pixels = to_uint8(self.anonymizer.decode(frames, features))
                    self._measure_sent(pixels, frames)
                    anonymized += self._requests_of(pixels.reshape(b, t, *pixels.shape[1:]))
            answers = self._ask(anonymized, self._prompts(utility) * len(points))
            return [
                self._utility_loss(answers[i : i + b], utility) for i in range(0, len(answers), b)
            ]

        return evaluate

    def _measure_sent(self, sent: Tensor, raw: Tensor) -> None:
        """How close the frames sent to the black box (uint8 ``N × H × W × 3``) are to the raw
        inputs (float ``N × 3 × H × W``): per-frame PSNR (dB, identical frames count as
        :data:`PSNR_IDENTICAL`) and SSIM, kept for the step's ``blackbox/`` figures. For VQA
        data the frame sent is the image; for clips, every frame (even where a backend sends
        only some of them)."""
        sent = to_float(sent).to(raw)
        psnr = peak_signal_noise_ratio(sent, raw, data_range=1.0, reduction="none", dim=(1, 2, 3))
        ssim = structural_similarity_index_measure(sent, raw, data_range=1.0, reduction="none")
        self._sent_fidelity["psnr"].append(psnr.nan_to_num(posinf=PSNR_IDENTICAL).cpu())
        self._sent_fidelity["ssim"].append(ssim.cpu())

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, dict[str, Tensor]], batch_idx: int) -> None:
        # samples a loader left out as unreadable (data.skip_unreadable; each one named in a
        # warning), counted where every logger sees them
        skipped = sum(part.get("skipped", 0) for part in batch.values() if isinstance(part, dict))
        self.log("data/skipped", float(skipped), on_step=True, on_epoch=False)
        getattr(self, f"_{self.phase}_step")(batch)

    def _reconstruction_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        anonymizer_opt, _ = self.optimizers()
        # every privacy image and one frame per clip: frames of a clip are near-duplicates
        first = self._utility_visuals(batch["utility"])[:, 0]
        frames = torch.cat([first, batch["privacy"]["image"]])
        x = to_float(frames)
        loss = F.l1_loss(self.anonymizer(x), x)
        anonymizer_opt.zero_grad()
        self.manual_backward(loss)
        anonymizer_opt.step()
        self.log("pretrain/recon_l1", loss, prog_bar=True)

    def _reviewer_update(self, images: Tensor, attributes: Tensor) -> Tensor:
        _, reviewer_opt = self.optimizers()
        self.reviewer.train()
        loss = F.binary_cross_entropy_with_logits(self.reviewer(images), attributes)
        reviewer_opt.zero_grad()
        self.manual_backward(loss)
        reviewer_opt.step()
        return loss

    def _reviewer_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        with torch.no_grad():
            x_a = self.anonymizer(to_float(batch["privacy"]["image"]))
        loss = self._reviewer_update(x_a, batch["privacy"]["attributes"])
        self.log("pretrain/reviewer_bce", loss, prog_bar=True)

    def _adversarial_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        k = self.zo_step
        quality_before = self._answer_quality()
        params = self.anonymizer.trainable_parameters()
        a_k, c_k = self.gains.step_size(k), self.gains.perturbation_size(k)

        # 1. privacy loss on x_a = f_A(x; θ) and its white-box gradient h_k
        images, attributes = to_float(batch["privacy"]["image"]), batch["privacy"]["attributes"]
        self.reviewer.eval()  # a fixed adversary for this step: no batch-norm statistics updates
        with torch.no_grad():
            image_features = self.anonymizer.trunk(images)
        loss_privacy = privacy_loss(self.reviewer(self.anonymizer.decode(images, image_features)))
        # under DDP: the global batch's h_k and L_P from every rank's shard (one process: as is)
        h = shard_mean(flat_gradient(loss_privacy, params), len(images))
        privacy_value = float(shard_mean(loss_privacy.detach(), len(images)))

        # 2. the utility direction from the black box: every query of the step in one call
        utility = batch["utility"]
        clips = self._utility_visuals(utility)
        with torch.no_grad():
            clip_frames = to_float(clips.flatten(0, 1))
            clip_features = self.anonymizer.trunk(clip_frames)
        prior = None
        if self.estimator.needs_prior:
            frames = self.anonymizer.decode(clip_frames, clip_features)
            proxy_loss = self.proxy.loss(frames.reshape(*clips.shape[:2], *frames.shape[1:]),
                                         utility)  # fmt: skip
            prior = shard_mean(flat_gradient(proxy_loss, params), len(clips))
        self._sent_fidelity = {"psnr": [], "ssim": []}
        evaluate = sharded(
            self._black_box_objective(utility, clips.shape[:2], clip_frames, clip_features),
            len(clips),
            self.device,
        )
        estimate = self.estimator.estimate(
            flat_parameters(params), evaluate, StepContext(k, c_k, a_k, prior)
        )
        g_hat, direction, indicator = (
            estimate.raw.to(h),
            estimate.direction.to(h),
            estimate.indicator,
        )
        loss_utility = estimate.loss  # L_MLLM(θ_k) without an extra query

        # 3.–4. the scalarized direction (Eq. 11)
        clip = self.hparams.max_gradient_norm
        grad_at, branch = self.scalarizer.direction(
            [loss_utility, privacy_value],
            [_clipped((1.0 + indicator) * direction, clip), _clipped(h, clip)],
        )
        # 5. θ ← θ − a_k ∇̂L_AT (Eq. 12), then the adversarial reviewer step on the new x_a
        step = a_k * grad_at.to(h)
        with torch.no_grad():
            assign_flat(params, flat_parameters(params) - step)
            x_a = self.anonymizer.decode(images, image_features)
        loss_reviewer = self._reviewer_update(x_a, attributes)
        self.zo_step += 1
        self.last_raw_gradient_estimate = g_hat.detach()
        self.last_gradient_estimate = direction.detach()

        objectives = [loss_utility, privacy_value]
        deviations = self.scalarizer.deviations(objectives)  # read-only: z* is already updated
        self.log_dict(
            {
                "train/utility_loss": loss_utility,
                "train/privacy_loss": privacy_value,
                "train/reviewer_bce": loss_reviewer.item(),
                "train/scalarized_loss": self.scalarizer.value(objectives),
                "zo/step": float(k),
                "zo/branch": float(branch),
                "zo/deviation_utility": float(deviations[0]),
                "zo/deviation_privacy": float(deviations[1]),
                "zo/indicator": indicator,
                "zo/a_k": a_k,
                "zo/c_k": c_k,
                "zo/z_utility": float(self.scalarizer.ideal[0]),
                "zo/z_privacy": float(self.scalarizer.ideal[1]),
                "zo/a_k_adjusted": a_k * (1.0 + indicator),  # a'_k of Eq. 10
                "zo/g_hat_norm": float(g_hat.norm()),
                "zo/direction_norm": float(direction.norm()),
                "zo/h_norm": float(h.norm()),
                "zo/step_norm": float(step.norm()),
                "zo/queries": float(estimate.queries),
                **{f"zo/{key}": float(value) for key, value in estimate.info.items()},
                # what the black box saw: the images sent, against the raw training inputs
                **{
                    f"blackbox/{name}_median": float(torch.cat(values).median())
                    for name, values in self._sent_fidelity.items()
                    if values
                },
            }
        )
        # every rank counts the queries of its own shard: the run's total is their sum
        self.log("mllm/calls", float(self.mllm.stats.calls), sync_dist=True, reduce_fx="sum")
        # this step's awkward answers, to every logger (the rates are findings in themselves);
        # a failed query is scored as an empty answer, but counted as failed only
        quality = {k: v - quality_before[k] for k, v in self._answer_quality().items()}
        quality["mllm/empty"] -= quality["mllm/failed"]
        for name, count in quality.items():
            self.log(name, float(count), sync_dist=True, reduce_fx="sum")
        self.log_dict({"L_u": loss_utility, "L_p": privacy_value}, prog_bar=True, logger=False)

    # ----------------------------------------------------------------------------- evaluation
    def _evaluation_step(self, batch: dict[str, dict[str, Tensor] | None], prefix: str) -> None:
        self.mllm.stage = prefix
        utility, privacy = batch.get("utility"), batch.get("privacy")
        with torch.no_grad():
            if utility is not None:
                frames = anonymize_pixels(self.anonymizer, self._utility_visuals(utility))
                answers = self._ask(self._requests_of(frames), self._prompts(utility))
                if self.utility_task == "vqa":
                    self.val_top1.update([a.text for a in answers], utility["answers"])
                else:
                    predicted = self.test_scorer.predict(answers).to(self.device)
                    self.val_top1.update(predicted, utility["action"])
            if privacy is not None:
                self.reviewer.eval()
                logits = self.reviewer(self.anonymizer(to_float(privacy["image"])))
                self.val_cmap.update(torch.sigmoid(logits), privacy["attributes"].long())
        self.mllm.stage = "train"

    def _log_evaluation(self, prefix: str) -> None:
        self.log_dict(
            {
                # top-1 of the retrieved class for actions, VQA accuracy for VQA data
                f"{prefix}/{'vqa_accuracy' if self.utility_task == 'vqa' else 'top1'}": (
                    self.val_top1.compute()
                ),
                f"{prefix}/reviewer_cmap": self.val_cmap.compute(),
            }
        )
        self.val_top1.reset()
        self.val_cmap.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Anonymized uint8 pixels of the batch's clips (``B × T × H × W × 3``)."""
        clips = batch["utility"]["clip"] if "utility" in batch else batch["clip"]
        return anonymize_pixels(self.anonymizer, clips)

    # ----------------------------------------------------------------------------- state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["zo"] = {
            "step": self.zo_step,
            "estimator_class": type(self.estimator).__qualname__,
            "estimator": self.estimator.state_dict(),
            "scalarizer": self.scalarizer.state_dict(),
            "mllm_stats": asdict(self.mllm.stats),
            "ledger_run": None if self.mllm.ledger is None else self.mllm.ledger.run,
            # what the next steps draw from (the order of the next passes over the data):
            # restored, a resumed run draws what the uninterrupted one would have
            "rng": _rng_states(),
        }
        if world_size() > 1:  # every rank calls this; rank 0 writes the file
            ranks: list[Any] = [None] * world_size()
            torch.distributed.all_gather_object(ranks, checkpoint["zo"]["mllm_stats"])
            checkpoint["zo"]["mllm_stats_by_rank"] = ranks

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("zo")
        if state is None:
            return
        self.zo_step = state["step"]
        if "rng" in state:
            _set_rng_states(state["rng"])
        saved_class = state.get("estimator_class", "HistoryEnhanced")
        if saved_class == type(self.estimator).__qualname__:
            self.estimator.load_state_dict(state["estimator"])
        elif self.zo_step > 0:
            raise ValueError(
                f"the checkpoint's zeroth-order phase ran {saved_class} for {self.zo_step} steps; "
                f"this run configures {type(self.estimator).__qualname__}: resume with the same "
                "estimator"
            )
        # else: a checkpoint from before the adversarial phase starts any estimator afresh
        self.scalarizer.load_state_dict(state["scalarizer"])
        ledger, run = self.mllm.ledger, state.get("ledger_run")
        if ledger is not None and run is not None:
            ledger.run, self._ledger_run_restored = run, True
        self.mllm.stats = self._restored_stats(state)

    def _restored_stats(self, state: dict[str, Any]) -> QueryStats:
        """This rank's query counts on resume: its own where the checkpoint kept every rank's and
        the world size is the same; otherwise rank 0 carries the whole run's total (and the other
        ranks start from zero), so the sum over ranks stays the run's count.

        Calls, hits, tokens and dollars come from the ledger where the black box keeps one: it
        also holds what was paid after the checkpoint was written, before the process died.
        Failed queries and per-endpoint figures are not in it: those are the checkpoint's."""
        by_rank = state.get("mllm_stats_by_rank") or [state["mllm_stats"]]
        rank, size = self.global_rank, max(world_size(), 1)
        same = len(by_rank) == size
        if same:
            saved = QueryStats(**by_rank[rank])
        else:
            saved = _summed([QueryStats(**s) for s in by_rank]) if rank == 0 else QueryStats()
        ledger = self.mllm.ledger
        if ledger is None or not self._ledger_run_restored or not (same or rank == 0):
            return saved
        counted = ledger.totals(ledger.run, rank if same else None)
        counted.failed, counted.by_endpoint = saved.failed, saved.by_endpoint
        return counted


def _rng_states() -> dict[str, Any]:
    """torch's, numpy's and Python's global generators (numpy's as a tensor: checkpoints load
    with ``weights_only``)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _summed(stats: Sequence[QueryStats]) -> QueryStats:
    """Several ranks' query counts as one: every counter added, per stage and per endpoint too."""
    total: dict[str, Any] = asdict(QueryStats())
    for part in map(asdict, stats):
        for name, value in part.items():
            if isinstance(value, dict):
                _add_into(total[name], value)
            else:
                total[name] += value
    return QueryStats(**total)


def _add_into(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _add_into(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value


def _clipped(gradient: Tensor, max_norm: float | None) -> Tensor:
    """``gradient`` rescaled to L2 norm at most ``max_norm`` (unchanged when it is None)."""
    norm = float(gradient.norm())
    if max_norm is None or norm <= max_norm:
        return gradient
    return gradient * (max_norm / norm)
