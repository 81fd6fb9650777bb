"""Scalar series for the experiment logs: gradient-estimate variance (Fig. A1) and black-box usage.

Both callbacks log through ``pl_module.log``, so every attached Lightning logger — the demo's CSV
and W&B alike — receives the same numbers in the same rows as the system's own ``train/`` and
``zo/`` metrics, at the trainer's ``log_every_n_steps`` (set it to 1 for a value at every step;
the statistics themselves are updated at every step whatever the logging interval).

- :class:`GradientVarianceMonitor` reads the utility-gradient estimates the latest ZO step exposes
  (``PrivacySystem.last_gradient_estimate`` / ``last_raw_gradient_estimate``) and logs their
  per-coordinate variance across steps, as Fig. A1 of the supplement plots it.
- :class:`MLLMUsageMonitor` reads the backend's :class:`~privacy_lit.mllm.base.QueryStats` around
  every training step and logs what the step spent (calls, cache hits, tokens, dollars) in total
  and per training sample: the cost side of Tab. 6.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from privacy_lit.mllm.base import BlackBoxMLLM, QueryStats, module_mllm


class RunningVariance:
    """Per-coordinate variance of a stream of vectors (Welford, float64), averaged over coordinates.

    Welford's update keeps the mean and the sum of squared deviations, so the variance over
    thousands of steps costs O(p) memory and stays exact where a sum of squares would cancel.
    With ``window`` set, only the latest ``window`` vectors count (kept as they are: O(window·p)).
    The unbiased estimator (n − 1) matches ``torch.stack(estimates).var(0).mean()``, the figure
    ``bench zo`` reports.
    """

    def __init__(self, window: int | None = None):
        if window is not None and window < 2:
            raise ValueError(f"a variance window needs at least 2 estimates, got {window}")
        self.window = window
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None
        self.recent: deque[Tensor] = deque(maxlen=window)

    def update(self, vector: Tensor) -> None:
        x = vector.detach().flatten().to("cpu", torch.float64)
        previous = self.recent[-1] if self.recent else self.mean
        if previous is not None and x.shape != previous.shape:
            raise ValueError(
                f"gradient estimates changed size from {previous.numel()} to {x.numel()}"
            )
        if self.window is not None:
            self.recent.append(x)
            return
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = x.clone(), torch.zeros_like(x)
            return
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    @property
    def size(self) -> int:
        """How many estimates the current value is computed from."""
        return len(self.recent) if self.window is not None else self.count

    def value(self) -> float:
        """Mean over coordinates of the per-coordinate variance; NaN before two estimates."""
        if self.size < 2:
            return float("nan")
        if self.window is not None:
            return float(torch.stack(list(self.recent)).var(dim=0).mean())
        assert self.m2 is not None
        return float((self.m2 / (self.count - 1)).mean())

    def state_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "mean": self.mean,
            "m2": self.m2,
            "recent": list(self.recent),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["count"]
        self.mean, self.m2 = state["mean"], state["m2"]
        self.recent = deque(state["recent"], maxlen=self.window)


class GradientVarianceMonitor(L.Callback):
    """Logs the variance of the utility-gradient estimates across ZO steps (Fig. A1).

    Two estimates per step are tracked, both read from the LightningModule after its step:

    - the *followed* estimate (``zo/grad_variance``): the direction the step took — g̃_k with
      critical history, ĝ_k for plain SPSA — which is what Fig. A1 compares between the two;
    - the *raw* SPSA estimate ĝ_k (``zo/raw_grad_variance``): the same run's variance without the
      history, so one run shows what the history removes.

    Each is logged over all ZO steps so far, and over the latest ``window`` steps
    (``..._window``), which follows the variance along training instead of averaging it from the
    start. Steps that are not ZO steps (the pre-training phases) are skipped: the module's
    ``zo_step`` counter tells them apart.

    Args:
        window: length of the sliding window (None: log only the all-steps variance).
        log_raw: also track the raw ĝ_k.
        prefix: metric-name prefix.
        estimate_attribute, raw_attribute, step_attribute: where the module exposes the followed
            estimate, the raw one and its ZO step counter.
    """

    def __init__(
        self,
        window: int | None = 10,
        log_raw: bool = True,
        prefix: str = "zo/",
        estimate_attribute: str = "last_gradient_estimate",
        raw_attribute: str = "last_raw_gradient_estimate",
        step_attribute: str = "zo_step",
    ):
        self.window = window
        self.log_raw = log_raw
        self.prefix = prefix
        self.estimate_attribute = estimate_attribute
        self.raw_attribute = raw_attribute
        self.step_attribute = step_attribute
        self.stats = self._fresh_stats()
        self._last_step: int | None = None

    def _fresh_stats(self) -> dict[str, RunningVariance]:
        names = ["grad_variance"] + (["raw_grad_variance"] if self.log_raw else [])
        stats = {name: RunningVariance() for name in names}
        if self.window is not None:
            stats |= {f"{name}_window": RunningVariance(self.window) for name in names}
        return stats

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, self.estimate_attribute):
            raise AttributeError(
                f"GradientVarianceMonitor reads `{self.estimate_attribute}` from the module, but "
                f"{type(pl_module).__name__} has no such attribute (PrivacySystem sets it after "
                "every ZO step)"
            )

    @rank_zero_only
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.sanity_checking:
            return
        step = getattr(pl_module, self.step_attribute, None)
        followed = getattr(pl_module, self.estimate_attribute, None)
        if followed is None or step is None or step == self._last_step:
            return  # no ZO step in this batch (a pre-training phase)
        self._last_step = step
        estimates = {"grad_variance": followed}
        if self.log_raw:
            raw = getattr(pl_module, self.raw_attribute, None)
            estimates["raw_grad_variance"] = followed if raw is None else raw
        metrics = {}
        for name, stat in self.stats.items():
            stat.update(estimates[name.removesuffix("_window")])
            if stat.size >= 2:  # a NaN would only blank the first points of the curve
                metrics[f"{self.prefix}{name}"] = stat.value()
        if metrics:
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self._last_step,
            "stats": {name: stat.state_dict() for name, stat in self.stats.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = state_dict["last_step"]
        for name, state in state_dict["stats"].items():
            if name in self.stats:
                self.stats[name].load_state_dict(state)


def _snapshot(stats: QueryStats) -> dict[str, float]:
    return {
        "calls": float(stats.calls),
        "cache_hits": float(stats.cache_hits),
        "prompt_tokens": float(stats.prompt_tokens),
        "completion_tokens": float(stats.completion_tokens),
        "usd": float(stats.cost_usd),
    }


def utility_batch_size(batch: Any) -> int | None:
    """Number of clips in a training batch of the joint datamodule (``batch["utility"]["clip"]``),
    or of a plain ``{"clip": ...}`` batch; None when the batch has neither."""
    if isinstance(batch, dict):
        if isinstance(batch.get("utility"), dict) and "clip" in batch["utility"]:
            return int(batch["utility"]["clip"].shape[0])
        if isinstance(batch.get("clip"), Tensor):
            return int(batch["clip"].shape[0])
    return None


class MLLMUsageMonitor(L.Callback):
    """Logs what each training step spent on the black box, per step and per sample.

    The backend's :class:`QueryStats` is read before and after every training step, so a step's
    numbers hold only its own queries (not a validation loop run in between). Logged:

    - ``mllm/step_calls``, ``step_cache_hits``, ``step_prompt_tokens``, ``step_completion_tokens``,
      ``step_tokens``, ``step_usd``: what this step spent;
    - ``mllm/step_calls_per_sample``, ``step_usd_per_sample``: the same per clip of the batch
      (2q calls per clip for a ZO step with q perturbations);
    - ``mllm/total_calls``, ``total_cache_hits``, ``total_tokens``, ``total_usd`` and
      ``mllm/cache_hit_rate`` (hits / (hits + calls)) since the backend was created, all stages;
    - ``mllm/calls_per_sample``: training-stage calls per training clip of the dataset — the
      figure ``results.json`` reports as ``mllm_calls_per_sample`` (Tab. 6) — when the datamodule
      has ``utility_dataset("train")``;
    - ``mllm/calls_<stage>``: the backend's per-stage totals (train, val, test);
    - ``mllm/endpoint/<host:port>/calls``, ``errors``, ``latency_ms`` for a backend that spreads
      queries over several servers (a fleet): answered queries (they add up to ``total_calls``),
      failed attempts and the mean time of an answer, since the backend was created.

    Args:
        mllm_attribute: where the LightningModule keeps its :class:`BlackBoxMLLM`.
        prefix: metric-name prefix.
    """

    def __init__(self, mllm_attribute: str = "mllm", prefix: str = "mllm/"):
        self.mllm_attribute = mllm_attribute
        self.prefix = prefix
        self._before: dict[str, float] | None = None
        self._train_samples: int | None = None

    def _mllm(self, pl_module: L.LightningModule) -> BlackBoxMLLM:
        return module_mllm(pl_module, self.mllm_attribute, "MLLMUsageMonitor")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mllm(pl_module)  # fail at the start, not after the first step
        datamodule = getattr(trainer, "datamodule", None)
        dataset_of = getattr(datamodule, "utility_dataset", None)
        self._train_samples = None
        if callable(dataset_of):
            try:
                self._train_samples = len(dataset_of("train")) or None
            except (TypeError, NotImplementedError, KeyError, ValueError):
                self._train_samples = None  # a datamodule without a sized training set

    @rank_zero_only
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._before = _snapshot(self._mllm(pl_module).stats)

    @rank_zero_only
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.sanity_checking or self._before is None:
            return
        stats = self._mllm(pl_module).stats
        now = _snapshot(stats)
        step = {name: now[name] - self._before[name] for name in now}
        step["tokens"] = step["prompt_tokens"] + step["completion_tokens"]
        p = self.prefix
        metrics = {f"{p}step_{name}": value for name, value in step.items()}
        samples = utility_batch_size(batch)
        if samples:
            metrics[f"{p}step_calls_per_sample"] = step["calls"] / samples
            metrics[f"{p}step_usd_per_sample"] = step["usd"] / samples
        lookups = now["calls"] + now["cache_hits"]
        metrics |= {
            f"{p}total_calls": now["calls"],
            f"{p}total_cache_hits": now["cache_hits"],
            f"{p}total_tokens": now["prompt_tokens"] + now["completion_tokens"],
            f"{p}total_usd": now["usd"],
            f"{p}cache_hit_rate": now["cache_hits"] / lookups if lookups else 0.0,
        }
        metrics |= {f"{p}calls_{stage}": float(n) for stage, n in stats.by_stage.items()}
        for name, figures in stats.by_endpoint.items():
            calls = figures["calls"]
            metrics[f"{p}endpoint/{name}/calls"] = float(calls)
            metrics[f"{p}endpoint/{name}/errors"] = float(figures["errors"])
            if calls:
                metrics[f"{p}endpoint/{name}/latency_ms"] = 1000 * figures["latency_s"] / calls
        if self._train_samples:
            train_calls = stats.by_stage.get("train", 0)
            metrics[f"{p}calls_per_sample"] = train_calls / self._train_samples
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)
        self._before = None
