"""Stage 2 of BiLAF: boundary sample selection.

Implements Algorithm 1 of Lu, Xie, Yang and Yan, "Boundary Matters: A Bi-Level Active
Finetuning Framework" (NeurIPS 2024), as described in ``docs/ALGORITHM.md``.
Read top to bottom, the steps appear in the paper's order:

1. :func:`assign_clusters`   -- every sample joins its nearest core's pseudo-class.
2. :func:`idc_order` and :func:`denoise_cluster` -- iterative density-based clustering
   (IDC, paper Sec. 3.2) ranks each cluster from its dense centre to its periphery and
   drops the periphery as noise; ``density`` / ``distance`` / ``none`` are the
   ablation denoisers of paper Table 2.
3. :func:`allocate_budget`   -- the budget split by denoised cluster size.
4. :class:`BoundaryScorer` (paper Eq. 7 with the opponent penalty) and
   :class:`ClusterPicker` (iterative selection and removal, Alg. 1 lines 13-20).
5. :func:`select_boundary`   -- the whole stage, returning a :class:`BoundaryResult`.

Steps 1 and the per-cluster distance matrices depend only on the features and the
cores, not on stage 2's parameters: :func:`cluster_geometry` computes them once, and
``select_boundary(..., geometry=...)`` reuses them, so an app moving a stage-2 slider
redoes only the ranking and picking.

Two variants share this code. ``paper`` follows the paper and fixes the reference
code's defects; ``reference`` reproduces the authors' ``density_cluster.py`` index for
index (raw features, exact float64 distances, its IDC indexing defect, a fixed
nearest opponent per sample). Where the reference code would crash or pick a sample
twice, the ``reference`` variant applies the ``paper`` variant's rules instead:

* a cluster whose allocation would be 0 gets 1 (its core), taken from the largest
  allocation (ties: lower cluster id);
* a sample already selected is never picked again: the best-scoring candidate not yet
  selected is taken (it still counts for the removal radius, as in the reference);
* a cluster that runs out of candidates passes its unused budget on (see
  :func:`select_boundary`);
* a core that denoising did not keep (possible only with duplicate points) is put back
  at the front of its cluster.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from .distances import nearest_cores, pairwise_distances, rows_per_chunk

__all__ = [
    "VARIANTS",
    "DENOISERS",
    "CRITERIA",
    "PROCESSES",
    "NO_OPPONENT_DISTANCE",
    "assign_clusters",
    "LocalDistances",
    "idc_order",
    "denoise_cluster",
    "DenoisedCluster",
    "allocate_budget",
    "BoundaryScorer",
    "boundary_score_at",
    "ClusterPicker",
    "Pick",
    "BoundaryResult",
    "ClusterGeometry",
    "cluster_geometry",
    "select_boundary",
]

VARIANTS = ("paper", "reference")
DENOISERS = ("idc", "density", "distance", "none")
CRITERIA = ("boundary_score", "distance")
PROCESSES = ("iterative", "one_shot")

#: The reference code's distance to "the opponent" when a sample has none (K = 1):
#: large enough that the boundary score then ranks samples by their periphery.
NO_OPPONENT_DISTANCE = 1e9 + 7

# Clusters up to this size get their full (n x n) distance matrix in memory; larger
# ones (degenerate pools, e.g. many identical points) compute rows on demand.
_FULL_MATRIX_MAX = 6_000
# Threads only pay off when clusters are large enough for numpy's GIL-free kernels
# to outweigh the per-cluster Python work (measured: K=50 on 50k gains, K=250 loses).
_PARALLEL_MIN_CLUSTER_SIZE = 400
# How many nearest other cores each sample keeps for the exact pruned opponent search;
# up to _ALL_OPPONENTS_MAX cores every sample lists them all, so no search is needed
# (with 16 of 50 listed, a sixth of CIFAR-10's samples needed the full search).
_OPPONENT_CANDIDATES = 16
_ALL_OPPONENTS_MAX = 64
_EPS = 1e-9


# ----------------------------------------------------------------------------------
# Step 1: assignment
# ----------------------------------------------------------------------------------
def assign_clusters(features: np.ndarray, cores: np.ndarray, *, exact: bool = False, n_neighbors: int = 1):
    """Assign every sample to its nearest core (paper Alg. 1 line 2).

    Parameters
    ----------
    features : (N, d) float32
    cores : (K,) int64
        Pool indices of the cores; a core's position in this array is its cluster id.
    exact : bool
        float64 ``cdist`` distances (``reference`` variant) instead of the fast path.
    n_neighbors : int
        Also return this many nearest cores per sample (for opponent search).

    Returns
    -------
    NearestCores
        ``labels`` (N,) cluster id per sample (ties: lower core id). Each core is put in
        its own cluster even if a duplicate point makes another core equally near.
    """
    result = nearest_cores(features, features[cores], n_neighbors=n_neighbors, exact=exact)
    result.labels[cores] = np.arange(cores.size)
    return result


# ----------------------------------------------------------------------------------
# Step 2: denoising
# ----------------------------------------------------------------------------------
class LocalDistances:
    """Distances among one cluster's n samples (Euclidean; ``exact=False`` is the fast
    dot-product form): a cached (n, n) matrix up to a few thousand samples, else rows
    computed on demand. The input of :func:`idc_order`, :func:`denoise_cluster` and
    the pickers; built from the cluster's (n, d) features, in local index order."""

    def __init__(self, features: np.ndarray, *, exact: bool):
        self.exact = exact
        self.n = features.shape[0]
        self.matrix = pairwise_distances(features, features, exact=exact) if self.n <= _FULL_MATRIX_MAX else None
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
        chunks, step = _row_chunks(rows.size, cols.size)
        for start in chunks:
            out[start : start + step] = self.block(rows[start : start + step], cols).mean(axis=1)
        return out


def _row_chunks(n_rows: int, n_cols: int) -> range:
    step = rows_per_chunk(n_cols)
    return range(0, n_rows, step), step


def _first_round(dist: LocalDistances, core: int, m: int, *, core_first: bool) -> np.ndarray:
    """The m samples nearest the core, ties by local index (Alg. 1 line 5)."""
    positions = np.arange(dist.n)
    order = np.lexsort((positions, dist.row(core, positions)))
    if core_first:
        order = np.concatenate(([core], order[order != core]))
    return order[:m]


def idc_order(
    dist: LocalDistances, core: int, *, k_neighbors: int, include_ratio: float, reference: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Iterative density-based clustering of one cluster (paper Sec. 3.2, Alg. 1 l. 4-9).

    Parameters
    ----------
    dist : distances among the cluster's n samples (local index = rank of the pool
        index in the cluster's ascending member list).
    core : local index of the core.
    k_neighbors, include_ratio : k and P_in of the paper.
    reference : reproduce the reference code (leftover samples dropped, indexing
        defect in the density distance) instead of the paper's definition.

    Returns
    -------
    order : (n_included,) int64
        Local indices in inclusion order, dense centre first. ``paper``: all n.
        ``reference``: m * floor(n / m) of them.
    rounds : (n_included,) int64
        The IDC round (1-based) in which each entry of ``order`` was included.
    """
    n = dist.n
    m = int(n * include_ratio) if reference else math.floor(n * include_ratio + _EPS)
    m = max(1, m)
    first = _first_round(dist, core, m, core_first=not reference)
    included = np.zeros(n, dtype=bool)
    included[first] = True
    order = [first]
    rounds = [np.ones(first.size, dtype=np.int64)]
    last_round = n // m if reference else n  # the reference stops after floor(n/m) rounds
    members = first
    # paper: each candidate keeps its k smallest distances to the included set U, updated
    # incrementally with every round's new members instead of recomputed against all of U.
    candidates = np.flatnonzero(~included)
    nearest = _merge_smallest(np.empty((candidates.size, 0)), dist, candidates, first, k_neighbors) if not reference else None
    round_no = 1
    while candidates.size and round_no < last_round:
        round_no += 1
        if reference:
            density = _reference_density_distance(dist, candidates, members, k_neighbors)
        else:
            density = nearest.sum(axis=1) / nearest.shape[1]
        take = np.lexsort((candidates, density))[:m]
        new = candidates[take]
        keep = np.ones(candidates.size, dtype=bool)
        keep[take] = False
        candidates = candidates[keep]
        if reference:  # only the reference's density distance looks at all of U
            members = np.concatenate((members, new))
        order.append(new)
        rounds.append(np.full(new.size, round_no, dtype=np.int64))
        if not reference and candidates.size:
            nearest = _merge_smallest(nearest[keep], dist, candidates, new, k_neighbors)
    return np.concatenate(order), np.concatenate(rounds)


def _merge_smallest(current: np.ndarray, dist: LocalDistances, rows: np.ndarray, new_cols: np.ndarray, k: int) -> np.ndarray:
    """Each row's k smallest among its ``current`` distances and those to ``new_cols``."""
    width = min(k, current.shape[1] + new_cols.size)
    out = np.empty((rows.size, width), dtype=np.float64)
    chunks, step = _row_chunks(rows.size, current.shape[1] + new_cols.size)
    for start in chunks:
        merged = np.concatenate((current[start : start + step], dist.block(rows[start : start + step], new_cols)), axis=1)
        if merged.shape[1] > width:
            merged = np.partition(merged, width - 1, axis=1)[:, :width]
        out[start : start + step] = merged
    return out


def _reference_density_distance(dist: LocalDistances, candidates: np.ndarray, members: np.ndarray, k: int) -> np.ndarray:
    """The reference code's density distance, defect included.

    It finds the *positions* (within the included list) of a candidate's k nearest
    members, then averages the candidate's distances to the samples whose *local
    index* equals those positions.
    """
    out = np.empty(candidates.size, dtype=np.float64)
    chunks, step = _row_chunks(candidates.size, members.size)
    for start in chunks:
        rows = candidates[start : start + step]
        positions = np.argsort(dist.block(rows, members), axis=1)[:, :k]
        out[start : start + step] = np.mean(dist.block(rows, np.arange(dist.n))[np.arange(rows.size)[:, None], positions], axis=1)
    return out


@dataclass(frozen=True)
class DenoisedCluster:
    """One cluster after denoising; all arrays hold *local* indices.

    Attributes
    ----------
    order : (n_ranked,) int64
        Samples ranked from the dense centre to the periphery (IDC inclusion order,
        or the denoiser's own ranking); the core comes first.
    rounds : (n_ranked,) int64
        IDC round per entry of ``order`` (1 for every sample with other denoisers).
    n_kept : int
        ``order[:n_kept]`` is the denoised set U; ``order[n_kept:]`` was removed.
    dropped : (n_dropped,) int64
        Samples never ranked (``reference`` IDC's leftovers); they count as removed.
    """

    order: np.ndarray
    rounds: np.ndarray
    n_kept: int
    dropped: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        return self.order[: self.n_kept]

    @property
    def removed(self) -> np.ndarray:
        return np.concatenate((self.order[self.n_kept :], self.dropped))


def denoise_cluster(
    dist: LocalDistances,
    core: int,
    *,
    method: str,
    k_neighbors: int,
    include_ratio: float,
    removal_ratio: float,
    reference: bool,
) -> DenoisedCluster:
    """Rank one cluster and remove its periphery (paper Sec. 3.2; Table 2 ablations).

    ``idc``: keep the first floor(n * (1 - P_rm)) samples in IDC inclusion order.
    ``density``: remove the floor(n * P_rm) samples with the largest mean distance to
    their k nearest neighbours inside the cluster. ``distance``: remove the
    floor(n * P_rm) samples farthest from the core. ``none``: remove nothing.
    The core is never removed. With ``reference``, IDC reproduces the reference code,
    which leaves clusters of fewer than 10 samples untouched in ascending index order.
    """
    n = dist.n
    everyone = np.arange(n)
    nothing = np.empty(0, dtype=np.int64)
    if method == "idc" and reference and n < 10:
        return DenoisedCluster(everyone, np.ones(n, dtype=np.int64), n, nothing)
    if method == "idc":
        order, rounds = idc_order(dist, core, k_neighbors=k_neighbors, include_ratio=include_ratio, reference=reference)
        n_ranked = order.size
        n_kept = int(n_ranked * (1 - removal_ratio)) if reference else math.floor(n * (1 - removal_ratio) + _EPS)
        dropped = np.setdiff1d(everyone, order) if reference else nothing
        if core not in order[:n_kept]:  # only with a duplicate of the core: put it back in front
            at = np.flatnonzero(order == core)
            rounds = np.concatenate(([1], np.delete(rounds, at)))
            order = _core_first(order, core)
            dropped = dropped[dropped != core]
        return DenoisedCluster(order, rounds, max(1, n_kept), dropped)
    if method == "none":
        return DenoisedCluster(_core_first(everyone, core), np.ones(n, dtype=np.int64), n, nothing)
    if method == "density":
        keys = _knn_density_distance(dist, k_neighbors)
    elif method == "distance":
        keys = dist.row(core, everyone).astype(np.float64)
    else:
        raise ValueError(f"denoise must be one of {DENOISERS}, got {method!r}")
    order = _core_first(np.lexsort((everyone, keys)), core)
    n_removed = math.floor(n * removal_ratio + _EPS)
    return DenoisedCluster(order, np.ones(n, dtype=np.int64), max(1, n - n_removed), nothing)


def _core_first(order: np.ndarray, core: int) -> np.ndarray:
    return np.concatenate(([core], order[order != core])).astype(np.int64)


def _knn_density_distance(dist: LocalDistances, k: int) -> np.ndarray:
    """Mean distance of each sample to its k nearest other samples in the cluster."""
    n = dist.n
    if n == 1:
        return np.zeros(1)
    k = min(k, n - 1)
    out = np.empty(n, dtype=np.float64)
    everyone = np.arange(n)
    chunks, step = _row_chunks(n, n)
    for start in chunks:
        rows = everyone[start : start + step]
        block = dist.block(rows, everyone).astype(np.float64)
        block[np.arange(rows.size), rows] = np.inf  # exclude the sample itself
        out[start : start + step] = np.partition(block, k - 1, axis=1)[:, :k].mean(axis=1)
    return out


# ----------------------------------------------------------------------------------
# Step 3: budget allocation
# ----------------------------------------------------------------------------------
def allocate_budget(budget: int, sizes: np.ndarray, *, reference: bool = False) -> np.ndarray:
    """Split ``budget`` over clusters in proportion to their denoised sizes (Alg. 1 l. 10).

    Each cluster first gets floor(B * p_i); leftover units go one at a time to the
    cluster whose current allocation is smallest (ties: larger proportion, then lower
    id). Then every cluster with 0 gets 1 (its core), taken from the largest allocation
    (ties: lower id). ``reference`` computes the floors in floating point, as the
    reference code does; otherwise in exact integer arithmetic.

    Parameters
    ----------
    budget : int, at least the number of clusters K.
    sizes : (K,) int, positive.

    Returns
    -------
    (K,) int64 allocations summing to ``budget``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if reference:
        proportions = sizes / total
        allocation = np.floor(proportions * budget).astype(np.int64)
        priority = -proportions
    else:
        allocation = (sizes * budget) // total
        priority = -sizes  # same order as the proportions, without rounding
    heap = [(int(a), float(p), i) for i, (a, p) in enumerate(zip(allocation, priority))]
    heapq.heapify(heap)
    for _ in range(budget - int(allocation.sum())):
        units, prio, i = heapq.heappop(heap)
        allocation[i] += 1
        heapq.heappush(heap, (units + 1, prio, i))
    for i in np.flatnonzero(allocation == 0):
        donor = int(np.argmax(allocation))  # first maximum: the lower id
        allocation[donor] -= 1
        allocation[i] += 1
    return allocation


# ----------------------------------------------------------------------------------
# Step 4: boundary scores and the iterative picker
# ----------------------------------------------------------------------------------
class BoundaryScorer:
    """Boundary score of the members of one denoised cluster (paper Eq. 7).

    BS(x) = min over other cores l of (delta^{t_l} D(x, c_l) - d_intra(x)) / max(D(x, c_l), d_intra(x)),
    where d_intra(x) is the mean distance from x to the denoised set (x included) and
    t_l counts earlier picks whose score the opponent l attained. Lower means nearer a
    boundary. The penalty factor delta^{t_l} is kept as a running product, as in the
    reference code, so both variants round identically.

    Parameters
    ----------
    d_intra : (n,) float64
    opponents : (n, M) int64
        Nearest other cores of each member, nearest first (M >= 1; -1 = none).
    opponent_distances : (n, M) float64
    n_cores : int
    penalty : float
        delta >= 1; 1 switches the penalty off.
    dynamic : bool
        ``paper``: the opponent is whichever l minimises the penalised term, searched
        exactly with pruning (the term grows with D(x, c_l), so once the unpenalised
        term of the next-nearest core reaches the best penalised one, no farther core
        can win). ``reference``: each member's opponent is fixed as its nearest other
        core, and the term is evaluated with the reference code's exact arithmetic.
    all_opponent_distances : callable, optional
        ``f(member_positions) -> (len, K)`` distances to every core (own core = inf),
        used when the pruning cannot certify a member's minimum among its M candidates.
    """

    def __init__(
        self,
        d_intra: np.ndarray,
        opponents: np.ndarray,
        opponent_distances: np.ndarray,
        *,
        n_cores: int,
        penalty: float,
        dynamic: bool,
        all_opponent_distances: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.d_intra = d_intra
        self.opponents = np.ascontiguousarray(opponents if dynamic else opponents[:, :1])  # flat views below
        self.opponent_distances = opponent_distances if dynamic else opponent_distances[:, :1]
        self.penalty = penalty
        self.dynamic = dynamic
        self.all_opponent_distances = all_opponent_distances
        # One factor per core, plus a last slot that stays 1.0 for "no opponent" (-1).
        self.factor = np.ones(n_cores + 1, dtype=np.float64)
        self.factor_index = np.where(self.opponents >= 0, self.opponents, n_cores)
        if dynamic:
            # term = factor * ratio - offset; ratio and offset do not change between picks.
            self.ratio, self.offset = self._ratio_offset(self.opponent_distances, d_intra[:, None])
            complete = self.opponents.shape[1] >= n_cores - 1  # every other core is listed
            # Any unlisted core is at least as far as the last listed one, so its term is
            # at least the unpenalised term there; a member whose best listed term is
            # below that bound is exact.
            self.bound = None if complete or all_opponent_distances is None else (
                self.ratio[:, -1] - self.offset[:, -1])
            # Members the bound could not certify get their terms against every core, once
            # each: their distances never change between picks, only the penalty factors do.
            self._full_row = np.full(d_intra.size, -1, dtype=np.int64)
            self._full_ratio = self._full_offset = np.empty((0, n_cores))
            # The listed terms and each member's best column are kept up to date pick by
            # pick: a pick changes one core's factor, so only the entries listing that core
            # change (grouped here by core id), and only rows whose best entry rose need a
            # new minimum. Same arithmetic as recomputing every term, so identical scores.
            # Entries are flat indices into the (n, M) arrays (1-D gathers are the fastest).
            flat = self.factor_index.ravel()
            self._entries = np.argsort(flat, kind="stable")
            self._entry_rows = self._entries // self.opponents.shape[1]
            self._entry_bounds = np.searchsorted(flat[self._entries], np.arange(n_cores + 2))
            self._refresh_terms()

    @staticmethod
    def _ratio_offset(distance: np.ndarray, d_intra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """D / max(D, a) and a / max(D, a); both 0 when D = a = 0 (x on its own core and
        on the opponent: as ambiguous as it gets); an infinite D (a sample's own core in
        the full search) gives an infinite term."""
        denominator = np.maximum(distance, d_intra)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(denominator > 0, distance / denominator, 0.0)
            offset = np.where(denominator > 0, d_intra / denominator, 0.0)
        infinite = ~np.isfinite(distance)
        return np.where(infinite, np.inf, ratio), np.where(infinite, 0.0, offset)

    def scores(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and attaining opponents of the members at ``positions``."""
        if not self.dynamic:  # the reference's own expression, for bit-identical scores
            factor = self.factor[self.factor_index[positions, 0]]
            distance = self.opponent_distances[positions, 0]
            d_intra = self.d_intra[positions]
            with np.errstate(invalid="ignore", divide="ignore"):
                score = (distance * factor - d_intra) / np.maximum(distance, d_intra)
            return np.where(np.isnan(score), 0.0, score), self.opponents[positions, 0]
        best = self.best_entry[positions]
        score = self.terms.ravel()[best]
        opponent = self.opponents.ravel()[best]
        if self.bound is not None:
            unsure = np.flatnonzero(score > self.bound[positions])
            if unsure.size:
                ratio, offset = self._against_every_core(positions[unsure])
                full_terms = self.factor[None, :-1] * ratio - offset
                full_best = np.argmin(full_terms, axis=1)
                score[unsure] = full_terms[np.arange(unsure.size), full_best]
                opponent[unsure] = full_best
        return score, opponent

    def _against_every_core(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ratio and offset of ``members`` (distinct positions) against all K cores."""
        new = members[self._full_row[members] < 0]
        if new.size:
            ratio, offset = self._ratio_offset(self.all_opponent_distances(new), self.d_intra[new][:, None])
            self._full_row[new] = np.arange(new.size) + self._full_ratio.shape[0]
            self._full_ratio = np.concatenate((self._full_ratio, ratio))
            self._full_offset = np.concatenate((self._full_offset, offset))
        rows = self._full_row[members]
        return self._full_ratio[rows], self._full_offset[rows]

    def _refresh_terms(self) -> None:
        self.terms = self.factor[self.factor_index] * self.ratio - self.offset
        # flat index of each row's first minimum (the nearest such core)
        self.best_entry = np.argmin(self.terms, axis=1) + np.arange(self.terms.shape[0]) * self.terms.shape[1]

    def set_penalty_counts(self, counts: np.ndarray) -> None:
        """Set every factor to delta^{t_l} for the (K,) counts t_l (the state after those picks)."""
        self.factor[:-1] = self.penalty ** np.asarray(counts, dtype=np.float64)
        if self.dynamic:
            self._refresh_terms()

    def record_pick(self, opponent: int) -> None:
        """Apply the opponent penalty after a pick whose score ``opponent`` attained."""
        if opponent < 0 or self.penalty == 1.0:
            return
        self.factor[opponent] *= self.penalty
        if not self.dynamic:
            return
        start, stop = self._entry_bounds[opponent], self._entry_bounds[opponent + 1]
        entries, rows = self._entries[start:stop], self._entry_rows[start:stop]
        self.terms.ravel()[entries] = self.factor[opponent] * self.ratio.ravel()[entries] - self.offset.ravel()[entries]
        # A risen entry that was not a row's minimum cannot become it.
        risen = rows[self.best_entry[rows] == entries]
        if risen.size:
            width = self.terms.shape[1]
            self.best_entry[risen] = np.argmin(self.terms[risen], axis=1) + risen * width


class DistanceScorer:
    """Ablation criterion BD: prefer members far from their own core (score = -D(x, c_i))."""

    def __init__(self, core_distance: np.ndarray, nearest_opponent: np.ndarray):
        self.core_distance = core_distance
        self.nearest_opponent = nearest_opponent

    def scores(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return -self.core_distance[positions], self.nearest_opponent[positions]

    def record_pick(self, opponent: int) -> None:
        """BD has no opponent penalty."""


@dataclass(frozen=True)
class Pick:
    """One pick of the iterative selection, for traces and the app's teaching page.

    ``position`` is the member's position in the denoised set; ``dropped`` the
    positions the removal radius of the *previous* pick took out of the candidates
    just before this pick was made.
    """

    position: int
    score: float
    opponent: int
    dropped: np.ndarray


class ClusterPicker:
    """Iterative selection and removal inside one denoised cluster (Alg. 1 l. 13-20).

    selected = [core]; candidates = U; r = floor(|U| / B_i). Each step drops from the
    candidates the r nearest to the last pick (the pick itself, at distance 0, among
    them), then picks the candidate with the lowest score (ties: nearest to the last
    pick, then lower position). A sample already selected is never picked again.
    ``one_shot`` (ablation OS) skips the removal and the penalty, so the picks are
    simply the lowest scores.

    Parameters
    ----------
    dist : distances among the members of U, in U's order.
    scorer : BoundaryScorer or DistanceScorer
    core : int
        Position of the core in U (first, except in clusters the reference code leaves
        in index order).
    budget : int
        B_i, which sets the removal radius r.
    iterative : bool
    keep_trace : bool
        Record a :class:`Pick` per step in ``trace``.
    """

    def __init__(self, dist: LocalDistances, scorer, *, core: int, budget: int, iterative: bool, keep_trace: bool = False):
        self.dist = dist
        self.scorer = scorer
        self.core = core
        self.radius = dist.n // budget if iterative else 0
        self.iterative = iterative
        self.candidates = np.arange(dist.n)
        self.selected = np.zeros(dist.n, dtype=bool)
        self.selected[core] = True
        self.penalty_pending = False  # the last pick's opponent penalty is not applied yet
        self.picks: list[int] = [core]
        self.scores: list[float] = [np.nan]
        self.opponents: list[int] = [-1]
        self.trace: list[Pick] | None = [] if keep_trace else None

    @property
    def n_open(self) -> int:
        """Candidates that could still be picked (before the next removal)."""
        return int((~self.selected[self.candidates]).sum())

    def step(self) -> bool:
        """Make one pick; return False (and pick nothing) when no candidate is left."""
        last = self.picks[-1]
        dropped = np.empty(0, dtype=np.int64)
        if self.iterative:
            order = np.lexsort((self.candidates, self.dist.row(last, self.candidates)))
            ranked = self.candidates[order]
            dropped, self.candidates = ranked[: self.radius], ranked[self.radius :]
            if self.penalty_pending:
                self.scorer.record_pick(self.opponents[-1])
                self.penalty_pending = False
        open_positions = np.flatnonzero(~self.selected[self.candidates])
        if open_positions.size == 0:
            return False
        scores, opponents = self.scorer.scores(self.candidates[open_positions])
        best = int(np.argmin(scores))  # first minimum: nearest to the last pick
        position = int(self.candidates[open_positions[best]])
        self.selected[position] = True
        self.picks.append(position)
        self.scores.append(float(scores[best]))
        self.opponents.append(int(opponents[best]))
        self.penalty_pending = True
        if self.trace is not None:
            self.trace.append(Pick(position, float(scores[best]), int(opponents[best]), dropped))
        return True

    def run_to(self, n_picks: int) -> None:
        """Step until ``n_picks`` are selected (core included) or candidates run out."""
        while len(self.picks) < n_picks and self.step():
            pass

    def reopen(self) -> None:
        """Make every member not yet selected a candidate again (budget fallback); from
        now on no removal radius applies, or it could drop them all before a pick."""
        self.candidates = np.flatnonzero(~self.selected)
        self.radius = 0


# ----------------------------------------------------------------------------------
# What stage 2 reuses across its parameters
# ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _cluster_map(n_samples: int, n_clusters: int):
    """A ``map`` over cluster ids: a small thread pool when clusters are big enough.

    Clusters are independent, and numpy releases the GIL in its heavy kernels, so their
    work is spread over threads; results come back in cluster order, hence identical to
    a sequential run. BLAS is held to one thread meanwhile (no oversubscription); the
    pool and that limit end with the block, errors included.
    """
    n_workers = min(4, os.cpu_count() or 1) if n_samples >= _PARALLEL_MIN_CLUSTER_SIZE * n_clusters else 1
    if n_workers == 1:
        yield map
        return
    with ThreadPoolExecutor(max_workers=n_workers) as pool, threadpool_limits(limits=1, user_api="blas"):
        yield pool.map


@dataclass(frozen=True)
class ClusterGeometry:
    """The part of stage 2 that depends only on the features and the cores.

    Made by :func:`cluster_geometry`; pass it to :func:`select_boundary` (or
    :func:`bilaf_core.select`) to try many stage-2 parameter settings on the same cores
    without recomputing the assignment and each cluster's distance matrix, which are
    most of stage 2's time on a large pool. Read-only, so safe to share across threads.

    Attributes
    ----------
    cores : (K,) int64
    labels : (N,) int64
        Pseudo-class of every sample (Alg. 1 line 2).
    members_of : list of K (n_i,) int64
        Pool indices of each cluster's members, ascending.
    other_cores : tuple of (N, M) int64 and (N, M) float64
        Each sample's nearest cores other than its own and their distances.
    local_distances : list of K distance tables among each cluster's members
    variant : {"paper", "reference"}
        Which distances (``reference``: exact float64).
    core_features : (K, d)
        The cores' features as stage 2 saw them, to recognise the same inputs.
    features : (N, d)
        The features it was computed on (shared, not copied), so a caller reusing the
        geometry need not prepare (normalise) the pool again.
    n_samples : int
    nbytes : int
        Memory held by the distance matrices.
    """

    cores: np.ndarray
    labels: np.ndarray
    members_of: list
    other_cores: tuple
    local_distances: list
    variant: str
    core_features: np.ndarray
    features: np.ndarray
    n_samples: int
    nbytes: int

    def check_matches(self, core_features: np.ndarray, cores: np.ndarray, *, n_samples: int, variant: str) -> None:
        """Raise ValueError unless this geometry was made for these cores and variant on a
        pool of ``n_samples`` whose core rows, prepared as stage 2 sees them, are
        ``core_features`` (a cheap check that catches another feature set or another
        normalisation)."""
        cores = np.asarray(cores)
        if (self.variant != variant or self.n_samples != n_samples or not np.array_equal(self.cores, cores)
                or not np.array_equal(self.core_features, core_features)):
            raise ValueError(
                f"the cluster geometry was computed for other inputs ({self.n_samples} samples, {self.cores.size} "
                f"cores, the {self.variant!r} variant) than these ({n_samples} samples, {cores.size} cores, "
                f"{variant!r}, or other features or normalisation); compute it again on the same inputs")


def cluster_geometry(features: np.ndarray, cores: np.ndarray, *, variant: str = "paper") -> ClusterGeometry:
    """Assign samples to cores and compute each cluster's pairwise distances, once.

    Parameters
    ----------
    features : (N, d) float32, as stage 2 sees them (normalised beforehand if wanted).
    cores : (K,) int64, distinct pool indices; position = cluster id.
    variant : {"paper", "reference"}

    Returns
    -------
    ClusterGeometry
        Memory: sum over clusters of n_i^2 distances (float32 for ``paper``, float64 for
        ``reference``) for clusters up to 6,000 members; larger ones compute rows on demand.
    """
    reference = variant == "reference"
    n_cores = cores.size
    listed = n_cores if n_cores <= _ALL_OPPONENTS_MAX else _OPPONENT_CANDIDATES + 1  # the own core included
    nearest = assign_clusters(features, cores, exact=reference, n_neighbors=listed)
    members_of = _group(nearest.labels, n_cores)
    with _cluster_map(features.shape[0], n_cores) as run:
        local = list(run(lambda members: LocalDistances(features[members], exact=reference), members_of))
    return ClusterGeometry(
        cores=np.array(cores, dtype=np.int64), labels=nearest.labels, members_of=members_of,
        other_cores=_other_cores(nearest, nearest.labels, n_cores), local_distances=local, variant=variant,
        core_features=np.array(features[cores]), features=features, n_samples=features.shape[0],
        nbytes=sum(d.matrix.nbytes for d in local if d.matrix is not None))


# ----------------------------------------------------------------------------------
# The whole stage
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterTrace:
    """What stage 2 did inside one cluster, in pool indices (see :class:`Pick`)."""

    core: int
    members: np.ndarray  # all samples assigned to the cluster, ascending
    inclusion_order: np.ndarray  # ranked by the denoiser, dense centre first
    inclusion_round: np.ndarray
    kept: np.ndarray
    removed: np.ndarray
    budget: int
    radius: int
    picks: list[Pick] = field(default_factory=list)  # positions index ``kept``


@dataclass(frozen=True)
class BoundaryResult:
    """Output of :func:`select_boundary`.

    Attributes
    ----------
    indices : (B,) int64
        Selected pool indices: clusters in core order, each starting with its core.
    cluster_of_selected : (B,) int64
    scores : (B,) float64
        Boundary score at the time of the pick (NaN for cores and fallback picks).
    opponents : (B,) int64
        Cluster id of the opponent that attained the score (-1 for cores / none).
    labels : (N,) int64
        Cluster id of every pool sample.
    removed : (n_removed,) int64
        Pool indices removed by denoising and not selected, cluster by cluster, each
        least noisy first (the denoiser's order).
    allocation : (K,) int64
        Planned per-cluster budgets.
    traces : list of ClusterTrace or None
    """

    indices: np.ndarray
    cluster_of_selected: np.ndarray
    scores: np.ndarray
    opponents: np.ndarray
    labels: np.ndarray
    removed: np.ndarray
    allocation: np.ndarray
    traces: list[ClusterTrace] | None = None


def select_boundary(
    features: np.ndarray,
    cores: np.ndarray,
    budget: int,
    *,
    variant: str = "paper",
    k_neighbors: int = 10,
    include_ratio: float = 0.1,
    removal_ratio: float = 0.1,
    opponent_penalty: float = 1.1,
    denoise: str = "idc",
    criterion: str = "boundary_score",
    process: str = "iterative",
    keep_trace: bool = False,
    progress: Callable[[float, str], None] | None = None,
    geometry: ClusterGeometry | None = None,
) -> BoundaryResult:
    """Stage 2 of BiLAF on given cores (paper Alg. 1). Inputs are trusted (validated by
    :func:`bilaf_core.select`); features are used as given (normalise beforehand).

    Parameters
    ----------
    features : (N, d) float32
    cores : (K,) int64, distinct pool indices; position = cluster id.
    budget : int, K <= B <= N.
    geometry : ClusterGeometry, optional
        From :func:`cluster_geometry` on the same features, cores and variant; computed
        here when not given.

    Budget fallback, so that exactly B distinct samples come back: a cluster that runs
    out of candidates passes its remaining units, one at a time, to the cluster with
    the most open candidates (ties: lower id); when no cluster has any, every cluster
    reopens all its unselected denoised members as candidates; when those are used up
    too, removed samples are taken, cluster by cluster, least noisy first.
    """
    reference = variant == "reference"
    n_cores = cores.size
    if geometry is None:
        geometry = cluster_geometry(features, cores, variant=variant)
    else:
        geometry.check_matches(features[cores], cores, n_samples=features.shape[0], variant=variant)
    labels, members_of, others = geometry.labels, geometry.members_of, geometry.other_cores
    local_distances = geometry.local_distances
    core_features = features[cores]

    with _cluster_map(features.shape[0], n_cores) as run:
        # Step 2: denoise each cluster.
        def denoise_one(cluster_id: int) -> DenoisedCluster:
            core_local = int(np.searchsorted(members_of[cluster_id], cores[cluster_id]))
            return denoise_cluster(local_distances[cluster_id], core_local, method=denoise, k_neighbors=k_neighbors,
                                   include_ratio=include_ratio, removal_ratio=removal_ratio, reference=reference)

        denoised = []
        for cluster_id, den in enumerate(run(denoise_one, range(n_cores))):
            denoised.append(den)
            if progress is not None and cluster_id % 64 == 0:
                progress(0.5 * cluster_id / n_cores, "denoising clusters")

        # Step 3: allocate.
        allocation = allocate_budget(budget, np.array([d.n_kept for d in denoised]), reference=reference)

        # Step 4: one picker per cluster, each run to its own budget.
        def pick_one(cluster_id: int) -> ClusterPicker:
            kept = denoised[cluster_id].kept
            kept_dist = _SubsetDistances(local_distances[cluster_id], kept)
            kept_pool = members_of[cluster_id][kept]
            core_position = int(np.flatnonzero(kept_pool == cores[cluster_id])[0])
            scorer = _make_scorer(
                criterion, kept_dist, kept_pool, core_position, others, features, core_features, cluster_id,
                penalty=opponent_penalty if process == "iterative" else 1.0, dynamic=not reference,
            )
            picker = ClusterPicker(kept_dist, scorer, core=core_position, budget=int(allocation[cluster_id]),
                                   iterative=process == "iterative", keep_trace=keep_trace)
            picker.run_to(int(allocation[cluster_id]))
            return picker

        pickers = []
        for cluster_id, picker in enumerate(run(pick_one, range(n_cores))):
            pickers.append(picker)
            if progress is not None and cluster_id % 64 == 0:
                progress(0.5 + 0.5 * cluster_id / n_cores, "selecting boundary samples")

    extra_picks = _run_pickers(pickers, allocation, denoised, members_of)

    # Assemble in core order.
    indices, cluster_ids, scores, opponents = [], [], [], []
    selected_removed = set()
    for cluster_id, (picker, members, den) in enumerate(zip(pickers, members_of, denoised)):
        pool = members[den.kept][picker.picks]
        fallback = extra_picks[cluster_id]
        selected_removed.update(fallback)
        indices.append(np.concatenate((pool, np.asarray(fallback, dtype=np.int64))))
        cluster_ids.append(np.full(pool.size + len(fallback), cluster_id, dtype=np.int64))
        scores.append(np.concatenate((picker.scores, np.full(len(fallback), np.nan))))
        opponents.append(np.concatenate((picker.opponents, np.full(len(fallback), -1))).astype(np.int64))
    # In the algorithm's order: cluster by cluster, least noisy first.
    removed = np.concatenate([members[d.removed] for members, d in zip(members_of, denoised)])
    removed = removed[~np.isin(removed, list(selected_removed))]

    traces = None
    if keep_trace:
        traces = [
            ClusterTrace(
                core=int(cores[c]), members=members, inclusion_order=members[den.order],
                inclusion_round=den.rounds, kept=members[den.kept], removed=members[den.removed],
                budget=int(allocation[c]), radius=picker.radius, picks=picker.trace,
            )
            for c, (members, den, picker) in enumerate(zip(members_of, denoised, pickers))
        ]
    if progress is not None:
        progress(1.0, "stage 2 done")
    return BoundaryResult(
        indices=np.concatenate(indices).astype(np.int64),
        cluster_of_selected=np.concatenate(cluster_ids),
        scores=np.concatenate(scores).astype(np.float64),
        opponents=np.concatenate(opponents),
        labels=labels,
        removed=removed.astype(np.int64),
        allocation=allocation,
        traces=traces,
    )


def boundary_score_at(
    points: np.ndarray,
    denoised_members: np.ndarray,
    core_features: np.ndarray,
    cluster_id: int,
    *,
    opponent_penalty: float = 1.1,
    penalty_counts: np.ndarray | None = None,
) -> dict:
    """Paper Eq. 7 at arbitrary points, as cluster ``cluster_id`` scores its members.

    The same :class:`BoundaryScorer` that stage 2 uses (``paper`` variant, exact
    distances): d_intra(x) is the mean distance from x to the denoised members U_i, and
    the opponent l minimises (delta^{t_l} D(x, c_l) - d_intra(x)) / max(D(x, c_l), d_intra(x)).
    For a member of U_i this equals its score in stage 2 at the moment the opponent
    counts are ``penalty_counts``. Used to draw the score as a field over the plane.

    Parameters
    ----------
    points : (n, d) where to evaluate.
    denoised_members : (m, d) features of U_i (the core among them).
    core_features : (K, d) every core, row = cluster id.
    cluster_id : int, the cluster whose score this is (its own core is never an opponent).
    opponent_penalty : delta >= 1.
    penalty_counts : (K,) int, t_l so far (default zeros).

    Returns
    -------
    dict of (n,) arrays: ``score``, ``opponent`` (cluster id, -1 when K = 1),
    ``d_intra`` and ``opponent_distance`` D(x, c_opponent).
    """
    points = np.asarray(points, dtype=np.float64)
    n_cores = core_features.shape[0]
    d_intra = pairwise_distances(points, denoised_members, exact=True).astype(np.float64).mean(axis=1)
    if n_cores == 1:
        opponents = np.full((points.shape[0], 1), -1, dtype=np.int64)
        distances = np.full((points.shape[0], 1), NO_OPPONENT_DISTANCE)
    else:
        full = pairwise_distances(points, core_features, exact=True).astype(np.float64)
        full[:, cluster_id] = np.inf
        opponents = np.argsort(full, axis=1, kind="stable")[:, : n_cores - 1]
        distances = np.take_along_axis(full, opponents, axis=1)
    scorer = BoundaryScorer(d_intra, opponents, distances, n_cores=n_cores, penalty=opponent_penalty, dynamic=True)
    if penalty_counts is not None:
        scorer.set_penalty_counts(penalty_counts)
    score, opponent = scorer.scores(np.arange(points.shape[0]))
    rows = np.arange(points.shape[0])
    at = np.argmax(opponents == opponent[:, None], axis=1)
    return {"score": score, "opponent": opponent, "d_intra": d_intra, "opponent_distance": distances[rows, at]}


def _group(labels: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Members of each cluster, ascending pool index."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_groups + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_groups)]


class _SubsetDistances(LocalDistances):
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


def _other_cores(nearest, labels: np.ndarray, n_cores: int) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's nearest cores other than its own, nearest first, (N, M-1) ids and
    distances; one column of -1 / :data:`NO_OPPONENT_DISTANCE` when K = 1."""
    n = labels.size
    if n_cores == 1:
        return np.full((n, 1), -1, dtype=np.int64), np.full((n, 1), NO_OPPONENT_DISTANCE)
    is_own = nearest.neighbors == labels[:, None]
    # Drop the own core from each row (the last column if the row lacks it: ties).
    width = nearest.neighbors.shape[1] - 1
    order = np.argsort(is_own, axis=1, kind="stable")[:, :width]
    return np.take_along_axis(nearest.neighbors, order, axis=1), np.take_along_axis(nearest.distances, order, axis=1)


def _make_scorer(criterion, kept_dist, kept_pool, core_position, others, features, core_features, cluster_id, *, penalty, dynamic):
    n_cores = core_features.shape[0]
    opponents, opponent_d = others[0][kept_pool], others[1][kept_pool]
    everyone = np.arange(kept_dist.n)
    if criterion == "distance":
        return DistanceScorer(kept_dist.row(core_position, everyone).astype(np.float64), opponents[:, 0])
    # d_intra: mean distance to all of U, x itself included (divide by |U|).
    d_intra = kept_dist.row_means(everyone, everyone)

    def all_opponent_distances(positions: np.ndarray) -> np.ndarray:
        full = pairwise_distances(features[kept_pool[positions]], core_features, exact=kept_dist.exact).astype(np.float64)
        full[:, cluster_id] = np.inf
        return full

    return BoundaryScorer(d_intra, opponents, opponent_d, n_cores=n_cores, penalty=penalty,
                          dynamic=dynamic, all_opponent_distances=all_opponent_distances)


def _run_pickers(pickers, allocation, denoised, members_of) -> list[list[int]]:
    """The budget fallback of :func:`select_boundary`, after every picker ran to its budget.

    Returns, per cluster, the removed samples taken in the last fallback phase.
    """
    deficit = sum(max(0, int(units) - len(picker.picks)) for picker, units in zip(pickers, allocation))
    for reopened in (False, True):
        if reopened and deficit:
            for picker in pickers:
                picker.reopen()
        open_counts = np.array([p.n_open for p in pickers])
        while deficit and open_counts.max(initial=0) > 0:
            c = int(np.argmax(open_counts))
            if pickers[c].step():
                deficit -= 1
            open_counts[c] = pickers[c].n_open
    extra: list[list[int]] = [[] for _ in pickers]
    for cluster_id, (members, den) in enumerate(zip(members_of, denoised)):
        for sample in members[den.removed]:
            if deficit == 0:
                break
            extra[cluster_id].append(int(sample))
            deficit -= 1
    return extra
