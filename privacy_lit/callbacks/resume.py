"""Checkpoints for an exact resume: every N training steps, and when the run is asked to stop.

A paid black box turns every step into money, and a run that dies loses what it paid since its
last checkpoint (epoch ends: 25 steps of the demo). :class:`ResumeCheckpoint` writes
``checkpoints/resume.ckpt`` in the run's log directory every ``every_n_steps`` steps, between two
steps, so that everything a step depends on is in it — θ and the reviewer, the estimator's state,
z*, the optimizers, the global random generators and the training loaders' places in their passes
(:mod:`privacy_lit.data.resumable`) — and a run resumed from it with ``--ckpt_path`` sends the
black box the same requests the killed one would have; those it had already paid for come from
the response cache. It is written to a temporary file and renamed, so a kill while writing
leaves the previous one whole. A run that ends normally removes it (its final state is in the
epoch-end checkpoint), as Lightning's ``OnExceptionCheckpoint`` does.

SIGTERM (a scheduler's notice; Lightning's signal connector records it) and SIGINT (Ctrl-C) stop
the run after the step in flight, with this checkpoint written first; a second Ctrl-C stops at
once. The process then exits with status 128 + the signal's number, through Lightning's
``SIGTERMException``.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException


class ResumeCheckpoint(Checkpoint):
    """Save ``checkpoints/resume.ckpt`` every ``every_n_steps`` training steps and on SIGTERM or
    SIGINT (then stop); removed when training ends normally. Off where the trainer's
    checkpointing is (``enable_checkpointing=False``).

    Args:
        every_n_steps: training steps between two checkpoints (every phase counts; in the
            adversarial phase a step is one ZO step).
        on_signal: checkpoint and stop after the current step on SIGTERM / SIGINT.
        filename: the checkpoint's name in ``checkpoints/`` of the run's log directory.
    """

    def __init__(self, every_n_steps: int = 10, on_signal: bool = True,
                 filename: str = "resume.ckpt"):  # fmt: skip
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.on_signal = on_signal
        self.filename = filename
        self.path: Path | None = None
        self.enabled = True
        self.saved_step: int | None = None
        self._signal: int | None = None
        self._previous_handler: Any = None

    # ------------------------------------------------------------------ saving
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # a trainer with checkpointing off (enable_checkpointing=False) has no other checkpoint
        # callback: then this one does nothing either
        self.enabled = any(isinstance(c, Checkpoint) and c is not self for c in trainer.callbacks)
        directory = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        self.path = Path(trainer.strategy.broadcast(str(directory / self.filename)))

    def save(self, trainer: L.Trainer) -> None:
        """Write the checkpoint atomically (every rank calls this: saving is collective)."""
        assert self.path is not None
        partial = self.path.with_name(f".{self.path.name}.partial")
        trainer.save_checkpoint(partial, weights_only=False)  # optimizer and loop states too
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        trainer.strategy.barrier("resume checkpoint")
        self.saved_step = trainer.global_step

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.sanity_checking or not self.enabled:
            return
        asked = self._signal or (signal.SIGTERM if trainer.received_sigterm else None)
        stop = self.on_signal and trainer.strategy.reduce_boolean_decision(
            asked is not None, all=False
        )
        if stop or trainer.global_step % self.every_n_steps == 0:
            if self.saved_step != trainer.global_step:
                self.save(trainer)
        if stop:
            number = int(asked or signal.SIGTERM)
            rank_zero_info(f"stopped by signal {number} after step {trainer.global_step}; "
                           f"resume with --ckpt_path {self.path}")  # fmt: skip
            raise SIGTERMException(128 + number)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_sigint()
        # called when a run ends normally (not after an exception, a signal or a kill)
        if stage == "fit" and self.path is not None and trainer.is_global_zero:
            self.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ signals
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._signal = None
        main_thread = threading.current_thread() is threading.main_thread()
        if self.enabled and self.on_signal and main_thread:
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is not None:  # a second Ctrl-C: stop now, without a checkpoint
            self._restore_sigint()
            raise KeyboardInterrupt
        self._signal = signum
        rank_zero_info("Ctrl-C: stopping after this step, with a checkpoint (again: at once)")

    def _restore_sigint(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_sigint()
