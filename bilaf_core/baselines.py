"""Cold-start baselines the BiLAF and ActiveFT papers do not compare against.

* :func:`typiclust` -- Hacohen, Dekel and Weinshall, "Active Learning on a Budget:
  Opposite Strategies Suit High and Low Budgets" (ICML 2022), TPC-RP without labels.
* :func:`probcover` -- Yehuda, Dekel, Hacohen and Weinshall, "Active Learning Through a
  Covering Lens" (NeurIPS 2022), greedy max coverage of delta-balls.

Both are label-free and one-shot, take (N, d) float32 features (L2-normalised by the
caller by default) and return exactly ``budget`` distinct pool indices in selection
order.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .core import faiss_kmeans
from .distances import knn_distances, pairwise_distances, rows_per_chunk

__all__ = ["typiclust", "probcover", "estimate_probcover_delta", "probcover_n_classes"]

# TypiClust's published constants.
TYPICLUST_MAX_CLUSTERS = 500
TYPICLUST_MIN_CLUSTER_SIZE = 5
TYPICLUST_K_NN = 20
# ProbCover refuses graphs with more edges than this (the ball radius is far too large).
PROBCOVER_MAX_EDGES = 60_000_000


def _kmeans_labels(features: np.ndarray, n_clusters: int, random_state: int | None) -> np.ndarray:
    data = np.ascontiguousarray(features, dtype=np.float32)
    kmeans = faiss_kmeans(data, n_clusters, seed=1234 if random_state is None else int(random_state))
    _, labels = kmeans.index.search(data, 1)
    return labels[:, 0].astype(np.int64)


def _typicality(features: np.ndarray, k: int) -> np.ndarray:
    """1 / mean distance to the k nearest other samples (TypiClust Eq. 3)."""
    if features.shape[0] == 1:
        return np.ones(1)
    return 1.0 / np.maximum(knn_distances(features, features, k).mean(axis=1), 1e-12)


def typiclust(features: np.ndarray, budget: int, *, random_state: int | None = None) -> np.ndarray:
    """TypiClust (TPC-RP) for a cold start.

    Cluster the pool into min(B, 500) K-Means clusters; then, B times, take the cluster
    with the fewest selected samples (ties: the larger cluster), skipping clusters of at
    most 5 samples while others remain, and select its most typical unselected sample,
    typicality being the inverse mean distance to the 20 nearest neighbours inside the
    cluster.

    Returns
    -------
    (B,) int64 distinct pool indices, in selection order.
    """
    n_clusters = min(budget, TYPICLUST_MAX_CLUSTERS, features.shape[0])
    labels = _kmeans_labels(features, n_clusters, random_state)
    members = [np.flatnonzero(labels == c) for c in range(n_clusters)]
    sizes = np.array([m.size for m in members])
    typicality: dict[int, np.ndarray] = {}
    taken = np.zeros(n_clusters, dtype=np.int64)
    selected: list[int] = []
    chosen = np.zeros(features.shape[0], dtype=bool)
    for _ in range(budget):
        open_clusters = taken < sizes
        big = open_clusters & (sizes > TYPICLUST_MIN_CLUSTER_SIZE)
        pool = big if big.any() else open_clusters
        candidates = np.flatnonzero(pool)
        # fewest selected first, then largest; lexsort's last key is the primary one
        c = int(candidates[np.lexsort((candidates, -sizes[candidates], taken[candidates]))[0]])
        if c not in typicality:
            typicality[c] = _typicality(features[members[c]], TYPICLUST_K_NN)
        scores = np.where(chosen[members[c]], -np.inf, typicality[c])
        sample = int(members[c][int(np.argmax(scores))])
        chosen[sample] = True
        taken[c] += 1
        selected.append(sample)
    return np.asarray(selected, dtype=np.int64)


def estimate_probcover_delta(
    features: np.ndarray, *, n_classes: int, purity: float = 0.95, max_queries: int = 5_000, random_state: int | None = None
) -> float:
    """ProbCover's ball radius: the largest delta whose balls are ``purity`` pure with
    respect to K-Means pseudo-labels (Yehuda et al. 2022, Sec. 4.1).

    A ball around x is pure while delta is below the distance from x to the nearest
    sample of another pseudo-class, so the answer is a quantile of that distance,
    estimated on at most ``max_queries`` random samples.
    """
    n = features.shape[0]
    if n < 2:
        return 0.0
    labels = _kmeans_labels(features, max(2, min(n_classes, n)), random_state)
    rng = np.random.default_rng(random_state)
    queries = rng.choice(n, size=min(n, max_queries), replace=False)
    nearest_other = np.full(queries.size, np.inf)
    step = rows_per_chunk(queries.size)
    for start in range(0, n, step):
        block = pairwise_distances(features[queries], features[start : start + step], exact=False)
        block[labels[queries][:, None] == labels[start : start + step][None, :]] = np.inf
        np.minimum(nearest_other, block.min(axis=1), out=nearest_other)
    finite = nearest_other[np.isfinite(nearest_other)]
    if finite.size == 0:
        return 0.0
    return float(np.quantile(finite, 1.0 - purity))


def probcover_n_classes(n_samples: int) -> int:
    """ProbCover's default number of pseudo-classes for the delta estimate: max(2, round(N / 200))."""
    return max(2, round(n_samples / 200))


def _ball_graph(features: np.ndarray, delta: float) -> sparse.csr_matrix:
    """Adjacency (i covers j when D(i, j) <= delta), self loops included."""
    n = features.shape[0]
    rows, cols, n_edges = [], [], 0
    step = rows_per_chunk(n)
    for start in range(0, n, step):
        block = pairwise_distances(features[start : start + step], features, exact=False)
        r, c = np.nonzero(block <= delta)
        n_edges += r.size
        if n_edges > PROBCOVER_MAX_EDGES:
            raise ValueError(
                f"probcover delta={delta:.4g} links more than {PROBCOVER_MAX_EDGES:,} pairs; choose a smaller delta"
            )
        rows.append(r + start)
        cols.append(c)
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    return sparse.csr_matrix((np.ones(r.size, dtype=np.int32), (r, c)), shape=(n, n))


def probcover(
    features: np.ndarray,
    budget: int,
    *,
    delta: float | None = None,
    n_classes: int | None = None,
    random_state: int | None = None,
) -> np.ndarray:
    """ProbCover: greedily select the sample whose delta-ball covers the most samples
    not yet covered (Yehuda et al. 2022, Alg. 1).

    Parameters
    ----------
    delta : ball radius; None estimates it with :func:`estimate_probcover_delta`
        (purity 0.95, ``n_classes`` pseudo-classes, default max(2, round(N / 200))).

    Returns
    -------
    (B,) int64 distinct pool indices, in selection order. Once every sample is covered,
    the remaining picks go to the unselected samples with the largest balls.
    """
    n = features.shape[0]
    if delta is None:
        delta = estimate_probcover_delta(
            features, n_classes=n_classes or probcover_n_classes(n), random_state=random_state
        )
    graph = _ball_graph(features, delta)
    covers = np.asarray(graph.sum(axis=1)).ravel().astype(np.int64)  # uncovered samples in each ball
    degree = covers.copy()
    graph_csc = graph.tocsc()
    covered = np.zeros(n, dtype=bool)
    chosen = np.zeros(n, dtype=bool)
    selected: list[int] = []
    for _ in range(budget):
        if covered.all():
            scores = np.where(chosen, -1, degree)
        else:
            scores = np.where(chosen, -1, covers)
        sample = int(np.argmax(scores))
        chosen[sample] = True
        selected.append(sample)
        newly = graph.indices[graph.indptr[sample] : graph.indptr[sample + 1]]
        newly = newly[~covered[newly]]
        if newly.size:
            covered[newly] = True
            # every ball that contained a newly covered sample now covers one fewer
            covers -= np.asarray(graph_csc[:, newly].sum(axis=1)).ravel().astype(np.int64)
    return np.asarray(selected, dtype=np.int64)
