"""Euclidean distances, exact or fast, and the nearest-core search used by stage 2.

Two numeric modes serve the two variants of :func:`bilaf_core.select`:

* ``exact=True`` uses :func:`scipy.spatial.distance.cdist` in float64, the same routine
  the authors' reference code calls, so the ``reference`` variant sees bit-identical
  distances and therefore identical orderings and ties.
* ``exact=False`` uses the Gram identity ``|a|^2 + |b|^2 - 2 a.b`` on BLAS in float32,
  an order of magnitude faster; used by the ``paper`` variant.

No function here ever builds an N x N matrix for the whole pool: the nearest-core
search works in row chunks and keeps only the few nearest cores of each sample.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist

__all__ = ["CHUNK_ELEMENTS", "rows_per_chunk", "distance_dtype", "pairwise_distances", "knn_distances", "nearest_rows", "NearestCores",
           "nearest_cores"]

#: Elements of one temporary block (distances, products) a chunked loop holds at a time:
#: 8 M, i.e. 32 MB in float32, 64 MB in float64. Every chunked loop derives its rows from it.
CHUNK_ELEMENTS = 8_000_000


def rows_per_chunk(n_cols: int) -> int:
    """Rows of a chunk whose (rows x n_cols) block holds :data:`CHUNK_ELEMENTS` elements."""
    return max(1, CHUNK_ELEMENTS // max(int(n_cols), 1))


def distance_dtype(exact: bool) -> np.dtype:
    """The dtype :func:`pairwise_distances` returns: float64 when ``exact``, else float32."""
    return np.dtype(np.float64 if exact else np.float32)


def pairwise_distances(a: np.ndarray, b: np.ndarray, *, exact: bool) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` (n, d) and ``b`` (m, d).

    Returns an (n, m) array of :func:`distance_dtype` (``exact``: scipy ``cdist``).
    """
    if exact:
        return cdist(a, b, "euclidean")
    sq = _squared_distances(a, b)
    np.maximum(sq, 0.0, out=sq)
    return np.sqrt(sq, out=sq)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) float32 ``|a|^2 + |b|^2 - 2 a.b``, slightly negative where a row meets itself."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    sq = a @ b.T  # in-place from here on: no N x M temporaries
    sq *= -2.0
    sq += np.einsum("ij,ij->i", a, a)[:, None]
    sq += np.einsum("ij,ij->i", b, b)[None, :]
    return sq


def knn_distances(queries: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
    """(M, k) distances, ascending, from each query to its k nearest pool rows other than
    itself; the queries are pool rows, so the smallest distance (to itself, 0) is dropped.
    Fast float32 distances, the pool read in chunks; k is capped at N - 1.

    Parameters
    ----------
    queries : (M, d) rows of ``pool``.
    pool : (N, d), N >= 2.
    """
    k = min(int(k), pool.shape[0] - 1)
    # ranked on squared float32 distances, the k + 1 smallest kept per chunk; the square
    # root is monotone, so the values are those of ranking the distances themselves
    best = np.full((queries.shape[0], k + 1), np.inf, dtype=np.float32)
    step = rows_per_chunk(queries.shape[0])
    for start in range(0, pool.shape[0], step):
        block = _squared_distances(queries, pool[start : start + step])
        best = np.partition(np.concatenate((best, block), axis=1), k, axis=1)[:, : k + 1]
    best = np.sort(best, axis=1)[:, 1:]
    return np.sqrt(np.maximum(best, 0.0, out=best), out=best).astype(np.float64)


def nearest_rows(features: np.ndarray, row: int, k: int) -> np.ndarray:
    """(min(k, N - 1),) the rows of ``features`` nearest to row ``row`` (itself excluded),
    nearest first."""
    distances = pairwise_distances(features[row : row + 1], features, exact=False)[0]
    distances[row] = np.inf
    k = min(int(k), features.shape[0] - 1)
    nearest = np.argpartition(distances, k - 1)[:k] if k > 0 else np.empty(0, dtype=np.int64)
    return nearest[np.argsort(distances[nearest], kind="stable")].astype(np.int64)


@dataclass(frozen=True)
class NearestCores:
    """Each sample's nearest core and its next-nearest cores.

    Attributes
    ----------
    labels : (N,) int64
        Position (pseudo-class id) of the nearest core; ties go to the lower id.
    neighbors : (N, M) int64
        Ids of the M nearest cores, nearest first.
    distances : (N, M) float64
        Their Euclidean distances.
    """

    labels: np.ndarray
    neighbors: np.ndarray
    distances: np.ndarray


def nearest_cores(features: np.ndarray, core_features: np.ndarray, *, n_neighbors: int, exact: bool) -> NearestCores:
    """Find every sample's ``n_neighbors`` nearest cores, chunk by chunk.

    Parameters
    ----------
    features : (N, d) float32
    core_features : (K, d) float32
    n_neighbors : int
        M, clipped to K.
    exact : bool
        See the module docstring.
    """
    n_samples = features.shape[0]
    n_cores = core_features.shape[0]
    m = min(n_neighbors, n_cores)
    labels = np.empty(n_samples, dtype=np.int64)
    neighbors = np.empty((n_samples, m), dtype=np.int64)
    distances = np.empty((n_samples, m), dtype=np.float64)
    chunk = rows_per_chunk(n_cores)
    if not exact:
        _nearest_cores_torch(features, core_features, chunk, labels, neighbors, distances)
        return NearestCores(labels=labels, neighbors=neighbors, distances=distances)
    for start in range(0, n_samples, chunk):
        stop = min(start + chunk, n_samples)
        block = pairwise_distances(features[start:stop], core_features, exact=True)
        # argmin returns the first minimum, so ties go to the lower core id.
        labels[start:stop] = np.argmin(block, axis=1)
        if m < n_cores:
            part = np.argpartition(block, m - 1, axis=1)[:, :m]
        else:
            part = np.broadcast_to(np.arange(n_cores), block.shape)
        part_d = np.take_along_axis(block, part, axis=1)
        order = np.lexsort((part, part_d), axis=1)  # exact: ties to the lower core id
        neighbors[start:stop] = np.take_along_axis(part, order, axis=1)
        distances[start:stop] = np.take_along_axis(part_d, order, axis=1)
    return NearestCores(labels=labels, neighbors=neighbors, distances=distances)


def float32_tensor(array: np.ndarray):
    """A CPU torch tensor sharing the memory of ``array`` as contiguous float32 (copied
    only where it is not). Read-only arrays (memory-mapped files, the app's shared
    matrices) are shared too, without torch's warning that it cannot mark a tensor
    read-only: the callers here only read them."""
    import torch

    array = np.ascontiguousarray(array, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(array)


def _nearest_cores_torch(features, core_features, chunk, labels, neighbors, distances) -> None:
    """The fast path of :func:`nearest_cores`: torch's multi-threaded elementwise ops
    and ``topk`` (much faster than numpy's single-threaded ones and ``argpartition``)."""
    import torch

    cores = float32_tensor(core_features)
    core_sq = (cores * cores).sum(dim=1)
    m = neighbors.shape[1]
    for start in range(0, features.shape[0], chunk):
        block = float32_tensor(features[start : start + chunk])
        # |x - c|^2 = |x|^2 + (|c|^2 - 2 x.c): a row's own |x|^2 does not change its ranking,
        # so rank on the bracket and add |x|^2 back to the m kept values only.
        partial = torch.addmm(core_sq[None, :], block, cores.T, alpha=-2.0)
        top = torch.topk(partial, m, dim=1, largest=False, sorted=True)
        nearest = top.indices[:, 0].clone()
        if m > 1:  # topk orders exact ties arbitrarily: give tied rows the lower core id
            tied = torch.nonzero(top.values[:, 0] == top.values[:, 1]).flatten()
            if tied.numel():
                nearest[tied] = torch.argmin(partial[tied], dim=1)
        labels[start : start + chunk] = nearest.numpy()
        neighbors[start : start + chunk] = top.indices.numpy()
        row_sq = (block * block).sum(dim=1, keepdim=True)
        distances[start : start + chunk] = (top.values + row_sq).clamp_(min=0.0).sqrt_().numpy()
