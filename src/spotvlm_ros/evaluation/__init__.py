"""Offline evaluation in virtual time (spotvlm-eval)."""
