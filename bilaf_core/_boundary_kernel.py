"""Speed machinery of stage 2; :mod:`bilaf_core.boundary` holds the algorithm itself.

Nothing here changes what stage 2 selects: the tables and the incremental updates give
the same numbers as computing each definition of ``docs/ALGORITHM.md`` directly, and the
thread pool returns the clusters' results in cluster order. What is here:

* :class:`LocalDistances` / :class:`SubsetDistances` -- a cluster's pairwise distances,
  cached as a matrix up to a few thousand members, in row chunks beyond;
* :class:`NearestIncluded` -- the ``paper`` IDC density distance kept up to date round by
  round instead of recomputed against the whole included set;
* :class:`RunningMinimum` -- the terms of paper Eq. 7 kept up to date pick by pick, with
  the exact pruned search over opponent cores;
* :func:`cores_to_list`, :func:`group` -- what :func:`bilaf_core.boundary.cluster_geometry`
  precomputes;
* :func:`cluster_map` -- the thread pool over clusters.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from .distances import pairwise_distances, rows_per_chunk

# Clusters up to this size get their full (n x n) distance matrix in memory; larger
# ones (degenerate pools, e.g. many identical points) compute rows on demand.
FULL_MATRIX_MAX = 6_000
# At most this many bytes of those matrices per geometry; beyond it the largest clusters
# compute rows on demand too (slower, same distances). Without it a 1,281,167-sample pool
# in 253 clusters of about 5,000 asked for 25 GB; CIFAR-10 in 50 clusters takes 0.3 GB.
GEOMETRY_MATRIX_BYTES = 4 * 2**30
# Threads only pay off when clusters are large enough for numpy's GIL-free kernels
# to outweigh the per-cluster Python work (measured: K=50 on 50k gains, K=250 loses).
PARALLEL_MIN_CLUSTER_SIZE = 400
# How many nearest other cores each sample keeps for the exact pruned opponent search;
# up to ALL_OPPONENTS_MAX cores every sample lists them all, so no search is needed
# (with 16 of 50 listed, a sixth of CIFAR-10's samples needed the full search).
OPPONENT_CANDIDATES = 16
ALL_OPPONENTS_MAX = 64


# ----------------------------------------------------------------------------------
# Distance tables
# ----------------------------------------------------------------------------------
class LocalDistances:
    """Distances among one cluster's n samples (Euclidean; ``exact=False`` is the fast
    dot-product form): a cached (n, n) matrix up to a few thousand samples, else rows
    computed on demand. The input of :func:`bilaf_core.boundary.idc_order`,
    :func:`bilaf_core.boundary.denoise_cluster` and the pickers; built from the
    cluster's (n, d) features, in local index order."""

    def __init__(self, features: np.ndarray, *, exact: bool, keep_matrix: bool = True):
        self.exact = exact
        self.n = features.shape[0]
        keep = keep_matrix and self.n <= FULL_MATRIX_MAX
        self.matrix = pairwise_distances(features, features, exact=exact) if keep else None
        if self.matrix is not None and not exact:
            np.fill_diagonal(self.matrix, 0.0)
        # The features are only needed to compute rows on demand; every cluster's object
        # lives until picking ends, so keeping a copy would double the pool in memory.
        self.features = features if self.matrix is None else None

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self.matrix is not None:
            # Gathering whole rows is much faster than gathering columns, and distances
            # are symmetric: gather the smaller index set as rows first.
            if cols.size < rows.size:
                return self.matrix.take(cols, axis=0).take(rows, axis=1).T
            return self.matrix.take(rows, axis=0).take(cols, axis=1)
        return pairwise_distances(self.features[rows], self.features[cols], exact=self.exact)

    def row(self, row: int, cols: np.ndarray) -> np.ndarray:
        if self.matrix is not None:
            return self.matrix[row, cols]
        return pairwise_distances(self.features[row : row + 1], self.features[cols], exact=self.exact)[0]

    def row_means(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Mean distance of each of ``rows`` to all of ``cols``, in row chunks."""
        if self.matrix is not None and rows.size == cols.size == self.n:  # everyone to everyone
            return self.matrix.mean(axis=1, dtype=np.float64)
        out = np.empty(rows.size, dtype=np.float64)
        chunks, step = row_chunks(rows.size, cols.size)
        for start in chunks:
            out[start : start + step] = self.block(rows[start : start + step], cols).mean(axis=1)
        return out


class SubsetDistances(LocalDistances):
    """A cluster's distances restricted to, and re-indexed by, a subset (no copy)."""

    def __init__(self, parent: LocalDistances, subset: np.ndarray):
        self.parent = parent
        self.subset = subset
        self.n = subset.size
        self.exact = parent.exact
        self.matrix = None  # never materialised; see block()

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.parent.block(self.subset[rows], self.subset[cols])

    def row(self, row: int, cols: np.ndarray) -> np.ndarray:
        return self.parent.row(int(self.subset[row]), self.subset[cols])

    def row_means(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        matrix = self.parent.matrix
        if matrix is not None and not self.exact and rows.size == cols.size == self.n:
            # one matrix-vector product over the parent instead of copying the subset;
            # the exact (reference) path keeps the reference's summation order instead
            weights = np.zeros(self.parent.n, dtype=matrix.dtype)
            weights[self.subset] = 1.0 / self.n
            return (matrix @ weights)[self.subset].astype(np.float64)
        return super().row_means(rows, cols)


def smallest_first(keys: np.ndarray, ids: np.ndarray, m: int) -> np.ndarray:
    """Positions of the ``m`` smallest (key, id) pairs, in that order (``ids`` distinct).

    The same as ``np.lexsort((ids, keys))[:m]``, but a linear-time partition finds them
    and only they (plus any tied with the m-th key) are sorted: stage 2 takes a few from
    long candidate lists at every pick and IDC round.
    """
    if m <= 0:
        return np.empty(0, dtype=np.int64)
    if m < keys.size:
        chosen = np.flatnonzero(keys <= np.partition(keys, m - 1)[m - 1])
        return chosen[np.lexsort((ids[chosen], keys[chosen]))[:m]]
    return np.lexsort((ids, keys))


def row_chunks(n_rows: int, n_cols: int) -> tuple[range, int]:
    """Chunk starts and the chunk length for an (n_rows, n_cols) computation row by row."""
    step = rows_per_chunk(n_cols)
    return range(0, n_rows, step), step


# ----------------------------------------------------------------------------------
# IDC: the paper's density distance, round by round
# ----------------------------------------------------------------------------------
class NearestIncluded:
    """Each IDC candidate's k smallest distances to the included set U.

    Built from the first round and merged with every later round's new members, instead
    of recomputed against all of U; the density distance is their mean (all of U while
    |U| < k). Rows follow the candidate list: :meth:`include` drops the rows the round
    took.
    """

    def __init__(self, dist: LocalDistances, candidates: np.ndarray, first: np.ndarray, k: int):
        self.dist = dist
        self.k = k
        self.nearest = self._merge(np.empty((candidates.size, 0)), candidates, first)

    def density(self, candidates: np.ndarray) -> np.ndarray:
        return self.nearest.sum(axis=1) / self.nearest.shape[1]

    def include(self, new: np.ndarray, keep: np.ndarray, candidates: np.ndarray) -> None:
        """U gained ``new``; ``candidates`` are those left, ``keep`` their rows before."""
        self.nearest = self._merge(self.nearest[keep], candidates, new)

    def _merge(self, current: np.ndarray, rows: np.ndarray, new_cols: np.ndarray) -> np.ndarray:
        """Each row's k smallest among its ``current`` distances and those to ``new_cols``."""
        width = min(self.k, current.shape[1] + new_cols.size)
        out = np.empty((rows.size, width), dtype=np.float64)
        chunks, step = row_chunks(rows.size, current.shape[1] + new_cols.size)
        for start in chunks:
            block = self.dist.block(rows[start : start + step], new_cols)
            merged = np.concatenate((current[start : start + step], block), axis=1)
            if merged.shape[1] > width:
                merged = np.partition(merged, width - 1, axis=1)[:, :width]
            out[start : start + step] = merged
        return out


# ----------------------------------------------------------------------------------
# Eq. 7: the minimum over opponents, pick by pick
# ----------------------------------------------------------------------------------
class RunningMinimum:
    """The penalised Eq. 7 terms of a cluster's members and each member's minimum.

    A term is ``factor[l] * ratio - offset`` for a listed opponent l (see
    :class:`bilaf_core.boundary.BoundaryScorer`). A pick changes one core's factor, so
    only the entries listing that core change (grouped here by core id), and only rows
    whose best entry rose need a new minimum: same arithmetic as recomputing every term,
    so identical scores. Entries are flat indices into the (n, M) arrays (1-D gathers are
    the fastest).

    When a member's M listed cores are not all the other cores, any unlisted core is at
    least as far as the last listed one, so its term is at least the unpenalised term
    there; a member whose best listed term is below that bound is exact. The others get
    their terms against every core from ``against_every_core``, once each (their
    distances never change between picks, only the penalty factors do), and from then on
    those full rows are kept up to date pick by pick like the listed entries, their
    minimum being the first in core order. Factors only grow (delta >= 1), so a member
    once above its bound stays above it.

    Parameters
    ----------
    factor : (K + 1,) float64
        delta^{t_l} per core, shared with the scorer, which updates it in place; the last
        slot (for "no opponent") stays 1.
    factor_index : (n, M) int64
        The factor slot of each listed opponent.
    ratio, offset : (n, M) float64
    opponents : (n, M) int64, C-contiguous
    n_cores : int
    against_every_core : callable, optional
        ``f(member_positions) -> (ratio, offset)``, each (len, K), own core infinite.
    """

    def __init__(self, factor, factor_index, ratio, offset, opponents, *, n_cores: int,
                 against_every_core: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None):
        self.factor = factor
        self.factor_index = factor_index
        self.ratio = ratio
        self.offset = offset
        self.opponents = opponents
        complete = opponents.shape[1] >= n_cores - 1  # every other core is listed
        self.bound = None if complete or against_every_core is None else ratio[:, -1] - offset[:, -1]
        self.against_every_core = against_every_core
        self._full = _FullRows(ratio.shape[0], n_cores)
        flat = factor_index.ravel()
        self._entries = np.argsort(flat, kind="stable")
        self._entry_rows = self._entries // opponents.shape[1]
        self._entry_bounds = np.searchsorted(flat[self._entries], np.arange(n_cores + 2))
        self.refresh()

    def refresh(self) -> None:
        """Recompute every term from the factors."""
        self.terms = self.factor[self.factor_index] * self.ratio - self.offset
        # flat index of each row's first minimum (the nearest such core)
        self.best_entry = np.argmin(self.terms, axis=1) + np.arange(self.terms.shape[0]) * self.terms.shape[1]
        self._full.refresh(self.factor)

    def penalised(self, opponent: int) -> None:
        """Update the terms after ``factor[opponent]`` changed."""
        start, stop = self._entry_bounds[opponent], self._entry_bounds[opponent + 1]
        entries, rows = self._entries[start:stop], self._entry_rows[start:stop]
        self.terms.ravel()[entries] = self.factor[opponent] * self.ratio.ravel()[entries] - self.offset.ravel()[entries]
        # A risen entry that was not a row's minimum cannot become it.
        risen = rows[self.best_entry[rows] == entries]
        if risen.size:
            width = self.terms.shape[1]
            self.best_entry[risen] = np.argmin(self.terms[risen], axis=1) + risen * width
        self._full.penalised(self.factor, opponent)

    def scores(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Minimum term and the opponent attaining it, for the members at ``positions``."""
        best = self.best_entry[positions]
        score = self.terms.ravel()[best]
        opponent = self.opponents.ravel()[best]
        if self.bound is not None:
            unsure = np.flatnonzero(score > self.bound[positions])
            if unsure.size:
                members = positions[unsure]
                new = members[~self._full.has(members)]
                if new.size:
                    self._full.add(new, *self.against_every_core(new), self.factor)
                score[unsure], opponent[unsure] = self._full.minimum(members)
        return score, opponent


class _FullRows:
    """Eq. 7 terms of some members against every core, with each row's first minimum,
    kept up to date as factors change; rows are added on demand (capacity doubles)."""

    def __init__(self, n_members: int, n_cores: int):
        self.slot = np.full(n_members, -1, dtype=np.int64)
        self.size = 0
        self.ratio = self.offset = self.terms = np.empty((0, n_cores))
        self.best = np.empty(0, dtype=np.int64)

    def has(self, members: np.ndarray) -> np.ndarray:
        return self.slot[members] >= 0

    def add(self, members: np.ndarray, ratio: np.ndarray, offset: np.ndarray, factor: np.ndarray) -> None:
        """Add distinct new ``members`` with their (len, K) ratio and offset."""
        stop = self.size + members.size
        if stop > self.ratio.shape[0]:
            capacity = max(stop, 2 * self.ratio.shape[0], 64)
            self.ratio, self.offset, self.terms = (
                np.concatenate((a[: self.size], np.empty((capacity - self.size, a.shape[1]))))
                for a in (self.ratio, self.offset, self.terms))
            self.best = np.concatenate((self.best[: self.size], np.empty(capacity - self.size, dtype=np.int64)))
        rows = slice(self.size, stop)
        self.ratio[rows], self.offset[rows] = ratio, offset
        self.terms[rows] = factor[None, :-1] * ratio - offset
        self.best[rows] = np.argmin(self.terms[rows], axis=1)
        self.slot[members] = np.arange(self.size, stop)
        self.size = stop

    def minimum(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Minimum term and attaining core of each of ``members`` (all added)."""
        rows = self.slot[members]
        best = self.best[rows]
        return self.terms[rows, best], best

    def refresh(self, factor: np.ndarray) -> None:
        rows = slice(0, self.size)
        self.terms[rows] = factor[None, :-1] * self.ratio[rows] - self.offset[rows]
        self.best[rows] = np.argmin(self.terms[rows], axis=1)

    def penalised(self, factor: np.ndarray, core: int) -> None:
        if not self.size:
            return
        rows = slice(0, self.size)
        self.terms[rows, core] = factor[core] * self.ratio[rows, core] - self.offset[rows, core]
        risen = np.flatnonzero(self.best[rows] == core)  # only those rows' minimum can move
        if risen.size:
            self.best[risen] = np.argmin(self.terms[risen], axis=1)


# ----------------------------------------------------------------------------------
# What the cluster geometry precomputes, and the thread pool
# ----------------------------------------------------------------------------------
def cores_to_list(n_cores: int) -> int:
    """How many nearest cores (the own core included) to keep per sample."""
    return n_cores if n_cores <= ALL_OPPONENTS_MAX else OPPONENT_CANDIDATES + 1


def group(labels: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Members of each cluster, ascending pool index."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_groups + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_groups)]


def matrices_to_keep(sizes: np.ndarray, itemsize: int, budget: int | None = None) -> np.ndarray:
    """(K,) bool: which clusters of these sizes keep their full distance matrix. Those up
    to :data:`FULL_MATRIX_MAX` members, smallest first, while their matrices together
    (``itemsize`` bytes a distance) fit in ``budget`` (:data:`GEOMETRY_MATRIX_BYTES`)."""
    budget = GEOMETRY_MATRIX_BYTES if budget is None else budget
    sizes = np.asarray(sizes, dtype=np.int64)
    order = np.argsort(sizes, kind="stable")
    eligible = sizes[order] <= FULL_MATRIX_MAX
    used = np.cumsum(np.where(eligible, sizes[order] ** 2 * itemsize, 0))
    keep = np.zeros(sizes.size, dtype=bool)
    keep[order] = eligible & (used <= budget)
    return keep


@contextlib.contextmanager
def cluster_map(n_samples: int, n_clusters: int, *, cpus: int | None):
    """A ``map`` over cluster ids: a small thread pool when clusters are big enough.

    Clusters are independent, and numpy releases the GIL in its heavy kernels, so their
    work is spread over up to 4 of the ``cpus`` threads; results come back in cluster
    order, hence identical to a sequential run. BLAS is held to one thread meanwhile (no
    oversubscription); the pool and that limit end with the block, errors included.
    """
    n_workers = min(4, cpus or 1) if n_samples >= PARALLEL_MIN_CLUSTER_SIZE * n_clusters else 1
    if n_workers == 1:
        yield map
        return
    with ThreadPoolExecutor(max_workers=n_workers) as pool, threadpool_limits(limits=1, user_api="blas"):
        yield pool.map
