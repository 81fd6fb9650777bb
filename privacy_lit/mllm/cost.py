"""What queries cost, and when to stop paying: a per-model price table and a query budget.

Prices are USD per one million tokens, as providers publish them. They change, so the table a run
uses comes from its config (``prices:``); :data:`DEFAULT_PRICES` only covers the default model so
that a run against the real API never records a cost of zero by accident.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from privacy_lit.mllm.base import QueryStats


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M prompt (input) tokens and per 1M completion (output) tokens."""

    prompt: float
    completion: float

    def __post_init__(self) -> None:
        if self.prompt < 0 or self.completion < 0:
            raise ValueError(f"prices must be >= 0, got {self}")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1e6


DEFAULT_PRICES: dict[str, ModelPrice] = {
    # OpenAI's list prices (standard tier) when this was written; set ``prices:`` to override.
    "gpt-4o": ModelPrice(prompt=2.50, completion=10.00),
    "gpt-4o-mini": ModelPrice(prompt=0.15, completion=0.60),
}

PriceSpec = ModelPrice | Mapping[str, float]
"""A price as a :class:`ModelPrice` or, from YAML, a mapping ``{prompt: 2.5, completion: 10}``."""


class PriceTable:
    """Model name → price. A name missing from the table takes the price of its longest listed
    prefix, so a dated snapshot (``gpt-4o-2024-08-06``) is priced like its family (``gpt-4o``)
    and ``gpt-4o-mini`` is not mistaken for ``gpt-4o``."""

    def __init__(self, prices: Mapping[str, PriceSpec] | None = None):
        source = DEFAULT_PRICES if prices is None else prices
        self.prices = {name: _as_price(name, spec) for name, spec in source.items()}

    def price(self, model: str) -> ModelPrice | None:
        if model in self.prices:
            return self.prices[model]
        prefixes = [name for name in self.prices if model.startswith(name)]
        return self.prices[max(prefixes, key=len)] if prefixes else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD of one query; 0 for a model without a price (a local server costs nothing)."""
        price = self.price(model)
        return 0.0 if price is None else price.cost(prompt_tokens, completion_tokens)


def _as_price(name: str, spec: PriceSpec) -> ModelPrice:
    if isinstance(spec, ModelPrice):
        return spec
    unknown = set(spec) - {"prompt", "completion"}
    if unknown or len(spec) != 2:
        raise ValueError(
            f"price of {name!r} must be {{prompt: USD per 1M tokens, completion: USD per 1M "
            f"tokens}}, got {dict(spec)}"
        )
    return ModelPrice(float(spec["prompt"]), float(spec["completion"]))


@dataclass(frozen=True)
class Budget:
    """A cap on queries (``max_calls``, cache hits excluded) and/or dollars (``max_usd``).

    :meth:`reached` takes a *headroom*: what the next step is expected to spend. Training stops
    before a step that would cross the cap, not after it, since a step cannot be cut in half.
    """

    max_calls: int | None = None
    max_usd: float | None = None

    def __post_init__(self) -> None:
        if self.max_calls is None and self.max_usd is None:
            raise ValueError("a budget needs max_calls and/or max_usd")
        if (self.max_calls is not None and self.max_calls < 0) or (
            self.max_usd is not None and self.max_usd < 0
        ):
            raise ValueError(f"budget limits must be >= 0, got {self}")

    def reached(self, stats: QueryStats, next_calls: int = 0, next_usd: float = 0.0) -> str | None:
        """Why no further step fits the budget (it is spent, or the next step would overspend
        it), or None while one does."""
        calls, usd = stats.calls, stats.cost_usd
        if self.max_calls is not None and (
            calls >= self.max_calls or calls + next_calls > self.max_calls
        ):
            return (
                f"query budget: {stats.calls} calls made, the next step needs ~{next_calls}, "
                f"max_calls={self.max_calls}"
            )
        if self.max_usd is not None and (usd >= self.max_usd or usd + next_usd > self.max_usd):
            return (
                f"cost budget: ${stats.cost_usd:.4f} spent, the next step needs ~${next_usd:.4f}, "
                f"max_usd={self.max_usd}"
            )
        return None
