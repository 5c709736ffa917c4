"""Disk caches keyed by the content of a feature matrix.

The cores (:func:`bilaf_core.core.select_cores`), the coverage radius
(:func:`bilaf_core.metrics.default_coverage_radius`) and the 2-D maps
(:func:`bilaf_core.projection.project_2d`) are kept as ``<kind>_<digest>_<detail>``
files in one folder, so an app restarted on the same features finds them at once.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path

import numpy as np

from .distances import rows_per_chunk

__all__ = ["features_digest", "keyed_path"]

#: Digests of frozen arrays (owned and read-only), by id, while they live.
_FROZEN_DIGESTS: dict[int, tuple[weakref.ref, str]] = {}


def features_digest(features: np.ndarray) -> str:
    """A short content hash of a feature matrix (reads it once, block by block).

    An array that owns its data and is read-only (how the app shares its feature
    matrices) is hashed once per object: the disk caches of its cores, coverage radius
    and maps all key on it (0.2-0.4 s a hash at 50,000 x 1,280)."""
    frozen = isinstance(features, np.ndarray) and features.flags.owndata and not features.flags.writeable
    known = _FROZEN_DIGESTS.get(id(features)) if frozen else None
    if known is not None and known[0]() is features:
        return known[1]
    digest = hashlib.sha256(f"{features.shape}{features.dtype}".encode())
    step = rows_per_chunk(features.shape[1])
    for start in range(0, features.shape[0], step):
        digest.update(np.ascontiguousarray(features[start : start + step]).tobytes())
    value = digest.hexdigest()[:20]
    if frozen:
        key = id(features)
        _FROZEN_DIGESTS[key] = (weakref.ref(features, lambda _, key=key: _FROZEN_DIGESTS.pop(key, None)), value)
    return value


def keyed_path(folder: str | os.PathLike, kind: str, features: np.ndarray, detail: str) -> Path:
    """``folder / f"{kind}_{features_digest(features)}_{detail}"``: the one naming of
    these caches (``detail`` holds the arguments and the file's suffix)."""
    return Path(folder) / f"{kind}_{features_digest(features)}_{detail}"
