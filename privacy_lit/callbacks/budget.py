"""Stop training when the black-box budget is spent: between steps, with a checkpoint.

A paid API turns every query into money. :class:`QueryBudget` watches the backend's
:class:`~privacy_lit.mllm.base.QueryStats` after every training step and ends ``fit`` cleanly
once the next step would not fit the budget — never in the middle of a step, where the ZO update
would be half done — and saves a checkpoint first, so raising the budget and resuming from it
continues where training stopped. On resume the counts come from the query ledger where the
black box keeps one (:class:`~privacy_lit.mllm.cache.CachedMLLM`), not from the checkpoint: a
run killed after its last checkpoint still counts every query it paid for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from privacy_lit.mllm.base import BlackBoxMLLM, module_mllm
from privacy_lit.mllm.cost import Budget


class QueryBudget(L.Callback):
    """End ``fit`` before a training step that would cross ``max_calls`` or ``max_usd``.

    What a step spends is taken as the most any step has spent so far (queries made between two
    ends of a training step, validation included), so the cap is not crossed as long as steps do
    not grow (the first step that queries at all, e.g. the first adversarial step after the
    pre-training phases, has no such estimate). With ``anticipate=False`` training stops only once
    the cap is reached or crossed. Queries made after ``fit`` (the final evaluation) are not
    limited by this callback. With several processes (DDP) each rank counts its own queries, so
    the limits apply per rank; all ranks stop when one reaches its limit.

    Args:
        max_calls: most black-box queries (cache hits excluded), all stages together.
        max_usd: most dollars, as the backend's price table counts them.
        anticipate: stop before a step that would cross the cap, rather than after it.
        filename: the checkpoint written when the budget stops training, in ``checkpoints/`` of
            the run's log directory.
        mllm_attribute: where the LightningModule keeps its :class:`BlackBoxMLLM`.
    """

    def __init__(
        self,
        max_calls: int | None = None,
        max_usd: float | None = None,
        anticipate: bool = True,
        filename: str = "budget.ckpt",
        mllm_attribute: str = "mllm",
    ):
        self.budget = Budget(max_calls, max_usd)
        self.anticipate = anticipate
        self.filename = filename
        self.mllm_attribute = mllm_attribute
        self.step_calls, self.step_usd = 0, 0.0
        self._last: tuple[int, float] | None = None
        self.stop_reason: str | None = None
        self.checkpoint_path: Path | None = None

    def _mllm(self, pl_module: L.LightningModule) -> BlackBoxMLLM:
        return module_mllm(pl_module, self.mllm_attribute, "QueryBudget")

    def _ahead(self) -> tuple[int, float]:
        """What the next step is expected to spend (restored with the callback on resume)."""
        return (self.step_calls, self.step_usd) if self.anticipate else (0, 0.0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stats = self._mllm(pl_module).stats
        self._last = (stats.calls, stats.cost_usd)
        reason = self.budget.reached(stats, *self._ahead())
        if trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
            # e.g. resumed from the budget checkpoint without raising the budget
            self.stop_reason = reason or "budget spent on another rank"
            trainer.should_stop = True
            pl_module.print(f"budget already spent, not training: {self.stop_reason}")

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        stats = self._mllm(pl_module).stats
        if self._last is not None:
            self.step_calls = max(self.step_calls, stats.calls - self._last[0])
            self.step_usd = max(self.step_usd, stats.cost_usd - self._last[1])
        self._last = (stats.calls, stats.cost_usd)
        reason = self.budget.reached(stats, *self._ahead())
        # every rank queries its own share: stop all of them when any one is out of budget
        if not trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
            return
        self.stop_reason = reason or "budget spent on another rank"
        trainer.should_stop = True
        directory = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        self.checkpoint_path = directory / self.filename
        trainer.save_checkpoint(self.checkpoint_path)  # on every rank: it is a collective call
        pl_module.print(
            f"stopping after step {trainer.global_step}: {self.stop_reason}; "
            f"checkpoint {self.checkpoint_path}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"step_calls": self.step_calls, "step_usd": self.step_usd}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step_calls = state_dict["step_calls"]
        self.step_usd = state_dict["step_usd"]
