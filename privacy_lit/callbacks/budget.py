"""Stop training when the black-box budget is spent: between steps, with a checkpoint; and keep
the evaluation (the end-of-fit report, ``validate``, ``test``) under the same budget.

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


class BudgetExceeded(RuntimeError):
    """A batch of queries refused because it would cross the budget."""


class QueryBudget(L.Callback):
    """End ``fit`` before a training step that would cross ``max_calls`` or ``max_usd``.

    What a step spends is taken as the most any step has spent so far (queries made between two
    ends of a training step, validation included), so the cap is not crossed as long as steps do
    not grow (the first step that queries at all, e.g. the first adversarial step after the
    pre-training phases, has no such estimate). With ``anticipate=False`` training stops only once
    the cap is reached or crossed. With several processes (DDP) each rank counts its own queries,
    so the limits apply per rank; all ranks stop when one reaches its limit.

    The evaluation is under the same budget: ``max_calls`` and ``max_usd`` cap every query of a
    run, whatever its stage. Training stops while ``evaluation_calls`` / ``evaluation_usd`` are
    still left, kept for the evaluation; a batch of evaluation queries (the end-of-fit report,
    ``validate``, ``test``, each batch before it is sent, cache hits free) that would cross the
    cap is refused with :class:`BudgetExceeded` — the report keeps the rows it finished — rather
    than paid. A ``test`` resumed from a checkpoint continues the run's count (from the query
    ledger, see :class:`~privacy_lit.mllm.cache.CachedMLLM`).

    Args:
        max_calls: most black-box queries (cache hits excluded), all stages together.
        max_usd: most dollars, as the backend's price table counts them (an evaluation batch is
            priced at the run's mean cost per query so far).
        anticipate: stop before a step that would cross the cap, rather than after it.
        filename: the checkpoint written when the budget stops training, in ``checkpoints/`` of
            the run's log directory.
        mllm_attribute: where the LightningModule keeps its :class:`BlackBoxMLLM`.
        evaluation_calls, evaluation_usd: the part of the budget training leaves for the
            evaluation (for the end-of-fit report: its test-set queries per evaluated method).
    """

    def __init__(
        self,
        max_calls: int | None = None,
        max_usd: float | None = None,
        anticipate: bool = True,
        filename: str = "budget.ckpt",
        mllm_attribute: str = "mllm",
        evaluation_calls: int = 0,
        evaluation_usd: float = 0.0,
    ):
        self.budget = Budget(max_calls, max_usd)
        if evaluation_calls < 0 or evaluation_usd < 0 or (
            max_calls is not None and evaluation_calls > max_calls
        ) or (max_usd is not None and evaluation_usd > max_usd):  # fmt: skip
            raise ValueError(
                f"evaluation_calls ({evaluation_calls}) and evaluation_usd ({evaluation_usd}) "
                f"must be >= 0 and within max_calls ({max_calls}) and max_usd ({max_usd})"
            )
        self.training_budget = Budget(
            None if max_calls is None else max_calls - evaluation_calls,
            None if max_usd is None else max_usd - evaluation_usd,
        )
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

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._mllm(pl_module).innermost.query_guard = self._guard_evaluation

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._mllm(pl_module).innermost.query_guard = None

    def _guard_evaluation(self, mllm: BlackBoxMLLM, queries: int) -> None:
        """Refuse a batch of evaluation queries that would cross the budget (training is
        stopped between its steps instead, by :meth:`on_train_batch_end`)."""
        if mllm.stage == "train":
            return
        stats = mllm.stats
        per_query = stats.cost_usd / stats.calls if stats.calls else 0.0
        reason = self.budget.reached(stats, queries, queries * per_query)
        if reason is not None:
            raise BudgetExceeded(
                f"{queries} {mllm.stage} queries refused, {reason}: the evaluation is under the "
                "budget too. Raise it and evaluate the checkpoint with `python -m privacy_lit "
                "test --ckpt_path ...`"
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stats = self._mllm(pl_module).stats
        self._last = (stats.calls, stats.cost_usd)
        reason = self.training_budget.reached(stats, *self._ahead())
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
        reason = self.training_budget.reached(stats, *self._ahead())
        # every rank queries its own share: stop all of them when any one is out of budget
        if not trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
            return
        self.stop_reason = reason or "budget spent on another rank"
        trainer.should_stop = True
        directory = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        self.checkpoint_path = directory / self.filename
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)  # collective: every rank
        pl_module.print(
            f"stopping after step {trainer.global_step}: {self.stop_reason}; "
            f"checkpoint {self.checkpoint_path}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"step_calls": self.step_calls, "step_usd": self.step_usd}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step_calls = state_dict["step_calls"]
        self.step_usd = state_dict["step_usd"]
