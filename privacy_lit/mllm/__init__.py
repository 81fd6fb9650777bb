"""Black-box multimodal LLM backends behind one interface (:mod:`.base`)."""

from privacy_lit.mllm.base import Answer, BlackBoxMLLM, QueryStats, Request

__all__ = ["Answer", "BlackBoxMLLM", "QueryStats", "Request"]
