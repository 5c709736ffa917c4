"""Label-free diagnostics of a selection, and label-aware ones when labels exist.

* :func:`emd_proxy` -- ActiveFT (Xie et al., CVPR 2023) Eq. 16: the mean distance of
  each pool sample to its nearest selected sample (lower = the selection represents
  the pool's distribution better).
* :func:`ball_coverage` -- ProbCover's measure: the fraction of the pool within
  ``radius`` of a selected sample.
* :func:`default_coverage_radius` -- a radius that depends on the feature set only, so
  coverages of different selections on the same pool are comparable.
* :func:`diagnostics` -- all of them, plus per-cluster and per-class counts.
"""

from __future__ import annotations

import numpy as np

from .distances import pairwise_distances

__all__ = ["nearest_selected_distance", "emd_proxy", "ball_coverage", "default_coverage_radius", "diagnostics"]


def nearest_selected_distance(features: np.ndarray, indices: np.ndarray, *,
                              selected_from: np.ndarray | None = None) -> np.ndarray:
    """(N,) distance from every row of ``features`` to its nearest selected sample;
    ``indices`` index ``selected_from`` (default: ``features`` itself)."""
    chosen = (features if selected_from is None else selected_from)[np.asarray(indices, dtype=np.int64)]
    out = np.empty(features.shape[0], dtype=np.float64)
    step = max(1, 16_000_000 // max(chosen.shape[0], 1))
    for start in range(0, features.shape[0], step):
        out[start : start + step] = pairwise_distances(features[start : start + step], chosen, exact=False).min(axis=1)
    return out


def emd_proxy(features: np.ndarray, indices: np.ndarray) -> float:
    """ActiveFT Eq. 16: mean over the pool of the distance to the nearest selected sample."""
    return float(nearest_selected_distance(features, indices).mean())


def ball_coverage(features: np.ndarray, indices: np.ndarray, radius: float) -> float:
    """Fraction of the pool within ``radius`` of some selected sample (ProbCover)."""
    return float((nearest_selected_distance(features, indices) <= radius).mean())


def default_coverage_radius(features: np.ndarray, *, k: int = 20, max_queries: int = 2_000, random_state: int = 0) -> float:
    """Median distance from a sample to its k-th nearest neighbour in the pool, from at
    most ``max_queries`` random samples: a property of the feature set alone."""
    n = features.shape[0]
    if n < 2:
        return 0.0
    k = min(k, n - 1)
    queries = np.random.default_rng(random_state).choice(n, size=min(n, max_queries), replace=False)
    kth = np.full((queries.size, k + 1), np.inf)
    step = max(1, 8_000_000 // max(queries.size, 1))
    for start in range(0, n, step):
        block = pairwise_distances(features[queries], features[start : start + step], exact=False)
        merged = np.concatenate((kth, block), axis=1)
        kth = np.partition(merged, k, axis=1)[:, : k + 1]
    # column k of the k+1 smallest is the k-th neighbour (the sample itself is at 0)
    return float(np.median(np.sort(kth, axis=1)[:, k]))


def diagnostics(
    features: np.ndarray,
    indices: np.ndarray,
    *,
    cluster: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    radius: float | None = None,
    max_pool_samples: int | None = None,
    random_state: int = 0,
) -> dict:
    """Everything the app and the benchmark print about one selection.

    Parameters
    ----------
    features : (N, d) float32, the space the selection was made in.
    indices : (B,) int64 selected pool indices.
    cluster : (N,) int64 pseudo-class ids (-1 = none), optional.
    labels : (N,) true labels, optional.
    radius : coverage radius; None uses :func:`default_coverage_radius`.
    max_pool_samples : estimate the EMD proxy and the coverage on a seeded random subset
        of this many pool samples when the pool is larger (the app's interactive mode).

    Returns
    -------
    dict with ``emd_proxy``, ``coverage``, ``coverage_radius``, ``n_selected``,
    ``estimated_on`` (pool samples the two averages are taken over), and when
    given ``per_cluster`` (cluster id -> selected count), ``classes_covered``,
    ``n_classes`` and ``per_class`` (label -> selected count).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if radius is None:
        radius = default_coverage_radius(features)
    pool = features
    if max_pool_samples is not None and features.shape[0] > max_pool_samples:
        rows = np.sort(np.random.default_rng(random_state).choice(features.shape[0], max_pool_samples, replace=False))
        pool = features[rows]
    nearest = nearest_selected_distance(pool, indices, selected_from=features)
    out: dict = {
        "n_selected": int(indices.size),
        "emd_proxy": float(nearest.mean()),
        "coverage": float((nearest <= radius).mean()),
        "coverage_radius": float(radius),
        "estimated_on": int(pool.shape[0]),
    }
    if cluster is not None and (cluster[indices] >= 0).any():
        ids, counts = np.unique(cluster[indices], return_counts=True)
        out["per_cluster"] = {int(i): int(c) for i, c in zip(ids, counts) if i >= 0}
    if labels is not None:
        labels = np.asarray(labels)
        classes = np.unique(labels)
        counts = np.array([np.count_nonzero(labels[indices] == c) for c in classes]) if indices.size else \
            np.zeros(classes.size, dtype=int)
        out["per_class"] = {str(c): int(k) for c, k in zip(classes, counts)}  # every class, zeros too
        out["classes_covered"] = int(np.count_nonzero(counts))
        out["n_classes"] = int(classes.size)
    return out
