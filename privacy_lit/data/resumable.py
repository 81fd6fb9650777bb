"""A shuffling training loader that a checkpoint can put back where it was.

Lightning saves the ``state_dict()`` of every training loader that has one in the checkpoints it
takes in the middle of an epoch, and loads it back on resume (``FitLoop``'s combined-loader
states). A plain :class:`~torch.utils.data.DataLoader` has none, so a resumed run starts the
epoch's data over in a new order, and its black-box queries are not the ones already paid for.

:class:`ResumableLoader` keeps, for the pass it is in, the seed of its order and how many batches
it has handed out; resumed, it finishes that pass in that order (skipping what was used at the
index level: nothing is read twice). Its order is torch's :class:`RandomSampler`'s, drawn from
torch's global generator at the same moments, so a run that is never resumed sees exactly the
batches it saw before this class existed; together with the global generators, which the
checkpoint holds too (:mod:`privacy_lit.system`), every later pass follows as it would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ResumableRandomSampler(Sampler[int]):
    """:class:`torch.utils.data.RandomSampler` (no replacement, one pass of the dataset) whose
    pass can be restarted at a given seed and position.

    A fresh pass draws its seed from torch's global generator when its first index is asked
    for, as ``RandomSampler`` does; :meth:`resume` makes the next pass use a saved seed instead
    and start after ``skip`` indices, drawing nothing.
    """

    def __init__(self, size: int):
        self.size = size
        self.seed: int | None = None
        """The seed of the current pass (None before the first one)."""
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.size

    def resume(self, seed: int, skip: int) -> None:
        self._resume = (seed, skip)

    def __iter__(self) -> Iterator[int]:
        if self._resume is not None:
            (seed, skip), self._resume = self._resume, None
        else:
            seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        self.seed = seed
        generator = torch.Generator()
        generator.manual_seed(seed)
        yield from torch.randperm(self.size, generator=generator).tolist()[skip:]


class ResumableLoader(DataLoader):
    """A shuffling :class:`DataLoader` with ``state_dict`` / ``load_state_dict`` (the seed of the
    current pass and the batches it has handed out), which Lightning saves with a mid-epoch
    checkpoint and loads on resume. Takes the DataLoader's arguments; it shuffles with a
    :class:`ResumableRandomSampler` unless given another ``sampler`` — as Lightning gives its
    ``DistributedSampler`` under DDP, whose order is fixed per epoch: there a run resumes exactly
    from an epoch-end checkpoint only."""

    def __init__(
        self, dataset: Dataset, batch_size: int = 1, sampler: Sampler | None = None, **kwargs: Any
    ):
        sampler = ResumableRandomSampler(len(dataset)) if sampler is None else sampler
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self.handed_out = 0
        """Batches handed out in the current pass."""
        self._pending: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        pending, self._pending = self._pending, None
        if pending is None or not isinstance(self.sampler, ResumableRandomSampler):
            iterator, self.handed_out = super().__iter__(), 0  # draws a worker seed, as ever
        else:
            seed, self.handed_out = pending
            self.sampler.resume(seed, self.handed_out * self.batch_size)
            # the pass drew its worker seed before the checkpoint: take one from the pass's own
            # seed instead of a second draw from the global generator
            self.generator = torch.Generator()
            self.generator.manual_seed(seed)
            try:
                iterator = super().__iter__()
            finally:
                self.generator = None
        return self._counted(iterator)

    def _counted(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for batch in iterator:
            self.handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        seed = self.sampler.seed if isinstance(self.sampler, ResumableRandomSampler) else None
        return {"seed": seed, "batches": self.handed_out}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed") is not None:
            self._pending = (int(state["seed"]), int(state["batches"]))
