"""privacy_lit: train a visual anonymizer in front of a black-box multimodal LLM.

Implements "When Visual Privacy Protection Meets Multimodal Large Language Models" (IJCV 2026):
a UNet anonymizer trained with a white-box privacy reviewer and a zeroth-order (SPSA +
critical-history) estimate of the black-box MLLM's utility gradient, combined by an augmented
Tchebycheff scalarization. Run ``python -m privacy_lit fit --config conf/demo.yaml``.
"""

__version__ = "0.1.0"
