"""Image pools. Each source returns a :class:`Pool`: images, optional labels, stable ids.

Only the built-in offline default (scikit-learn's digits) is here so far; the
registry is where CIFAR, Fashion-MNIST, image folders and feature files plug in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Pool", "load_pool", "DATASETS", "pixel_features"]


@dataclass(frozen=True)
class Pool:
    """An image pool.

    Attributes
    ----------
    name : str
    images : (N, H, W) or (N, H, W, 3) uint8
    labels : (N,) int64 or None
    ids : (N,) str, stable sample ids used by exports
    class_names : tuple of str
    """

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    ids: np.ndarray
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _digits() -> Pool:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    ids = np.array([f"digits/{i:04d}" for i in range(images.shape[0])])
    return Pool("digits", images, digits.target.astype(np.int64), ids, tuple(str(c) for c in range(10)))


DATASETS: dict[str, Callable[[], Pool]] = {"digits": _digits}


def load_pool(name: str) -> Pool:
    """Load a registered pool by name."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}, got {name!r}")
    return DATASETS[name]()


def pixel_features(images: np.ndarray) -> np.ndarray:
    """The ``pixels`` backbone: flattened pixels standardised per position, (N, H*W*C) float32."""
    flat = images.reshape(images.shape[0], -1).astype(np.float32)
    std = flat.std(axis=0)
    return (flat - flat.mean(axis=0)) / np.where(std > 0, std, 1.0)
