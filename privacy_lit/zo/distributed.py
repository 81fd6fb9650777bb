"""A zeroth-order step over data-parallel ranks: every rank builds the same estimate.

Under DDP each rank holds a shard of the batch. A gradient estimator must nevertheless follow one
trajectory on all ranks, or θ, the critical history and z* drift apart. Three facts make that so:

- the perturbations are regenerated from a seed shared by all ranks (:func:`~privacy_lit.zo.spsa.
  perturbation_seed`), so every rank queries the same points θ ± c_kΔ_k;
- every value that depends on the batch — the black-box loss of each queried point, the privacy
  gradient h_k and its loss, a proxy's prior — is replaced by its mean over the *global* batch,
  the shard means weighted by shard size (:func:`shard_mean`), before anything reads it;
- the reduced values are bitwise identical on every rank (an all-reduce hands every rank the same
  bytes), so every estimator's state, updated from them, stays identical too.

:func:`sharded` wraps a batched objective this way, so any
:class:`~privacy_lit.zo.estimators.GradientEstimator` runs unchanged: it sees one objective whose
losses are the global batch's. Each rank sends only its own shard's queries to the black box,
so N ranks put N times the requests in flight. In one process (no process group, or a world of
one) both functions return their input itself, so a single-process step is unchanged bit for bit.

Plain ``torch.distributed``: Lightning's DDP strategy (or torchrun) sets the process group up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor

Objective = Callable[[list[Tensor]], list[float]]


def world_size() -> int:
    """Ranks in the default process group (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def shard_mean(values: Tensor, weight: float) -> Tensor:
    """Σ_r w_r·v_r / Σ_r w_r over the ranks: the global batch's mean from each rank's shard mean
    ``values`` and shard size ``weight``. One all-reduce (in float64, so the result does not
    depend on the rank order more than float64 rounding does); returned in ``values``' dtype and
    identical on every rank. With one rank, ``values`` itself is returned untouched."""
    if world_size() == 1:
        return values
    if weight < 0:
        raise ValueError(f"a shard's weight is its sample count, got {weight}")
    flat = values.detach().reshape(-1).to(torch.float64)
    packed = torch.cat([flat * weight, flat.new_tensor([float(weight)])])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    total = float(packed[-1])
    if total <= 0:
        raise ValueError("every rank's shard is empty: no mean over the global batch")
    return (packed[:-1] / total).to(values.dtype).reshape(values.shape)


def sharded(evaluate: Objective, weight: float, device: torch.device | str = "cpu") -> Objective:
    """``evaluate`` on this rank's shard, its losses replaced by the global batch's (one
    all-reduce per call; the estimator's calls are the same on every rank, so the collectives
    match). ``device``: where the process group's backend reduces (CPU for gloo, the rank's GPU
    for NCCL). One process: ``evaluate`` itself."""
    if world_size() == 1:
        return evaluate

    def reduced(points: list[Tensor]) -> list[float]:
        losses = torch.tensor(evaluate(points), dtype=torch.float64, device=device)
        return shard_mean(losses, weight).tolist()

    return reduced
