"""Black-box multimodal LLM backends behind one interface (:mod:`.base`).

Backends that pull in heavy optional machinery (``openai_backend.OpenAIChatMLLM``,
``transformers_backend.TransformersMLLM``, ``standin.EmbeddedActionMLLM``) are reached by their
module path (configs use ``class_path``), so importing this package stays light.
"""

from privacy_lit.mllm.base import Answer, BatchError, BlackBoxMLLM, QueryStats, Request
from privacy_lit.mllm.cache import CachedMLLM, ResponseCache
from privacy_lit.mllm.cost import Budget, PriceTable

__all__ = [
    "Answer",
    "BatchError",
    "BlackBoxMLLM",
    "Budget",
    "CachedMLLM",
    "PriceTable",
    "QueryStats",
    "Request",
    "ResponseCache",
]
