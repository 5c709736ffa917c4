"""Is there a network to download weights or data from? Answered fast, never blocking.

Here a hub download attempt can take ~47 s to fail (name lookups retried). So: honour
``HF_HUB_OFFLINE`` / ``BILAF_OFFLINE``, and otherwise probe with a connection attempt in a
daemon thread that is given up on after a short timeout.
"""

from __future__ import annotations

import functools
import os
import socket
import threading

__all__ = ["network_available"]

_PROBE_HOST = ("huggingface.co", 443)


def _offline_by_env() -> bool:
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "BILAF_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def _probe(timeout: float) -> bool:
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection(_PROBE_HOST, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)  # a name lookup that hangs is abandoned, not waited for
    return bool(result and result[0])


def network_available(timeout: float = 2.0) -> bool:
    """True when a model/data hub looks reachable (probed once per process)."""
    return not _offline_by_env() and _probe(timeout)
