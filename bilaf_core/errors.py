"""The library's one exception for work stopped on request."""

from __future__ import annotations

__all__ = ["Cancelled"]


class Cancelled(RuntimeError):
    """Work stopped because someone asked (a cancel button, ``should_stop``); the run
    store records such runs as ``cancelled``, not ``failed``, and finetuning keeps its
    last epoch's checkpoint."""
