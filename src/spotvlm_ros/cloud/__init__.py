"""The cloud side: an OpenAI-compatible LVLM client and the package's own LVLM server."""
