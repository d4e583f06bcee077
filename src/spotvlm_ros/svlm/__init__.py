"""The on-board model (SVLM): Qwen2.5-VL through transformers, with visual focus (GGVR, GTVR).

Import the submodules explicitly; they need torch and transformers.
"""
