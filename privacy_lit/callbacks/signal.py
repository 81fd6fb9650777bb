"""A signal meter in every run: did the black-box queries buy a utility direction?

Every ``every_n_steps`` adversarial steps, :class:`UtilitySignalMeter` computes — *for
measurement only*, never read by the step — the white-box utility gradient at θ_k on the step's
own clips, where the black box has a differentiable twin (the embedded stand-in's recognizer,
``EmbeddedActionMLLM.recognizer``): ∇θ of its cross-entropy on the float anonymized frames. It
logs the cosine of the direction the step followed (``signal/cosine``) and of the raw estimate
before any history (``signal/raw_cosine``) with it, and the per-coordinate variance of the
followed directions over the latest ``window`` measurements (``signal/variance``). At the end of
``fit`` it prints their medians. An estimate from random directions in p dimensions sits at
~1/√p (≈ 0.01 for the 9,067-parameter head): that is what "no signal" looks like.

Against a real MLLM there is no white-box gradient; the meter then says so once and logs nothing.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor, nn
from torch.nn import functional as F

from privacy_lit.callbacks.monitors import RunningVariance
from privacy_lit.models.anonymizer import to_float
from privacy_lit.zo.spsa import flat_gradient


def recognizer_gradient(
    recognizer: nn.Module,
    decode: Callable[[], Tensor],
    clip_shape: Sequence[int],
    actions: Tensor,
    params: Sequence[nn.Parameter],
) -> Tensor:
    """∇θ CE(recognizer(frames), actions), frames = ``decode()`` (``(B·T) × 3 × H × W`` float,
    differentiable in ``params``) viewed as ``B × 3 × T × H × W`` clips: the utility gradient the
    black box hides, flat over ``params``."""
    frames = decode()
    clips = frames.reshape(*clip_shape[:2], *frames.shape[1:]).transpose(1, 2)
    loss = F.cross_entropy(recognizer(clips), actions.to(frames.device))
    return flat_gradient(loss, params)


def finite_median(values: Iterable[float]) -> float:
    """The median of the values that are not NaN (a cosine of a missing estimate), else NaN."""
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else float("nan")


def _cosine(a: Tensor | None, b: Tensor) -> float:
    if a is None:
        return float("nan")
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double().to(a.device), 0))


class UtilitySignalMeter(L.Callback):
    """Cosine of the followed utility direction with the white-box gradient (module docstring).

    Args:
        every_n_steps: measure every N adversarial steps (each costs one backward pass of the
            recognizer, no black-box query).
        window: how many measured directions the logged variance is computed over.
    """

    def __init__(self, every_n_steps: int = 5, window: int = 10):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.variance = RunningVariance(window)
        self.cosines: list[float] = []
        self.raw_cosines: list[float] = []
        self._reference: Tensor | None = None
        self._warned = False

    def _recognizer(self, pl_module: L.LightningModule) -> nn.Module | None:
        recognizer = getattr(pl_module.mllm.innermost, "recognizer", None)
        if recognizer is None and not self._warned:
            rank_zero_info("signal meter: this black box has no white-box twin; nothing measured")
            self._warned = True
        return recognizer

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch,
                             batch_idx: int) -> None:  # fmt: skip
        self._reference = None
        due = pl_module.zo_step % self.every_n_steps == 0
        if pl_module.phase != "adversarial" or not due or "action" not in batch["utility"]:
            return
        recognizer = self._recognizer(pl_module)
        if recognizer is None:
            return
        anonymizer = pl_module.anonymizer
        clips = batch["utility"]["clip"]
        with torch.no_grad():
            frames = to_float(clips.flatten(0, 1))
            features = anonymizer.trunk(frames)
        self._reference = recognizer_gradient(
            recognizer, lambda: anonymizer.decode(frames, features), clips.shape,
            batch["utility"]["action"], anonymizer.trainable_parameters(),
        )  # fmt: skip

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:  # fmt: skip
        if self._reference is None:
            return
        followed = pl_module.last_gradient_estimate
        cosine = _cosine(followed, self._reference)
        raw = _cosine(pl_module.last_raw_gradient_estimate, self._reference)
        self.cosines.append(cosine)
        self.raw_cosines.append(raw)
        metrics = {"signal/cosine": cosine, "signal/raw_cosine": raw}
        if followed is not None:
            self.variance.update(followed)
            metrics["signal/variance"] = self.variance.value()
        pl_module.log_dict(metrics)
        self._reference = None

    def summary(self) -> dict[str, float]:
        """Medians over the run's measurements (NaN when nothing was measured)."""
        return {
            "median_cosine": finite_median(self.cosines),
            "median_raw_cosine": finite_median(self.raw_cosines),
            "measurements": float(len(self.cosines)),
        }

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.cosines:
            return
        s = self.summary()
        p = sum(t.numel() for t in pl_module.anonymizer.trainable_parameters())
        print(
            f"signal meter: median cosine of the followed utility direction with the white-box "
            f"gradient {s['median_cosine']:.3f} (raw estimate {s['median_raw_cosine']:.3f}) over "
            f"{int(s['measurements'])} measurements; random directions would give "
            f"~{1 / p**0.5:.3f}"
        )
        for logger in trainer.loggers:
            logger.log_metrics({f"signal/{k}": v for k, v in s.items()}, step=trainer.global_step)

    def state_dict(self) -> dict:
        return {"cosines": list(self.cosines), "raw_cosines": list(self.raw_cosines)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.cosines = list(state_dict.get("cosines", []))
        self.raw_cosines = list(state_dict.get("raw_cosines", []))
