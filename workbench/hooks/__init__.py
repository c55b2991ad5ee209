"""The four hook families workbench is about. Attention maps first; codebooks, circuits and ICL
probes join in later issues."""

from workbench.hooks import attention

__all__ = ["attention"]
