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
redoes only the ranking and picking. The speed machinery (distance tables, the
incremental updates of the IDC density distance and of the Eq. 7 terms, the thread pool
over clusters) is in the private module ``_boundary_kernel``; it changes no result.

Two variants share this code. ``paper`` follows the paper and fixes the reference
code's defects; ``reference`` reproduces the authors' ``density_cluster.py`` index for
index (raw features, exact float64 distances, its IDC indexing defect, a fixed
nearest opponent per sample). Each difference is one field of :class:`_Quirks` (section
"The two variants"), which every step looks up once. Where the reference code would
crash or pick a sample twice, the ``reference`` variant applies the ``paper`` variant's
rules instead:

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

import heapq
import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import _boundary_kernel as _kernel
from ._boundary_kernel import LocalDistances
from .distances import distance_dtype, nearest_cores, pairwise_distances

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

_EPS = 1e-9

#: How many (k, P_in) settings' IDC rankings a :class:`ClusterGeometry` remembers (each
#: is two int64 arrays the size of the pool).
IDC_RANKINGS_KEPT = 4


# ----------------------------------------------------------------------------------
# Step 1: assignment
# ----------------------------------------------------------------------------------
def assign_clusters(features: np.ndarray, cores: np.ndarray, *, exact: bool = False, n_neighbors: int = 1):
    """Assign every sample to its nearest core (paper Alg. 1 line 2).

    label(x) = argmin_i D(x, c_i).

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
        ``labels`` (N,) cluster id per sample (ties: lower core id);
        ``neighbors`` and ``distances`` (N, n_neighbors), nearest first. Each core is
        put in its own cluster even if a duplicate point makes another core equally near.
    """
    result = nearest_cores(features, features[cores], n_neighbors=n_neighbors, exact=exact)
    result.labels[cores] = np.arange(cores.size)
    return result


# ----------------------------------------------------------------------------------
# Step 2: denoising
# ----------------------------------------------------------------------------------
def idc_order(
    dist: LocalDistances, core: int, *, k_neighbors: int, include_ratio: float, reference: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Iterative density-based clustering of one cluster (paper Sec. 3.2, Alg. 1 l. 4-9).

    Round 1 includes the m = max(1, floor(n P_in)) samples nearest the core. Each later
    round includes the m samples outside the included set U with the smallest density
    distance (ties: lower local index)::

        delta_den(x) = 1 / min(k, |U|) * sum over the min(k, |U|) nearest x_j in U of D(x, x_j)

    until every sample is included.

    Parameters
    ----------
    dist : LocalDistances
        Distances among the cluster's n samples (local index = rank of the pool index
        in the cluster's ascending member list).
    core : int
        Local index of the core.
    k_neighbors, include_ratio : int, float
        k and P_in of the paper.
    reference : bool
        Reproduce the reference code (its rounding of m, its first round, only
        floor(n / m) rounds, the indexing defect in the density distance) instead of
        the paper's definition.

    Returns
    -------
    order : (n_included,) int64
        Local indices in inclusion order, dense centre first. ``paper``: all n.
        ``reference``: m * floor(n / m) of them.
    rounds : (n_included,) int64
        The IDC round (1-based) in which each entry of ``order`` was included.
    """
    quirks = _quirks(reference)
    n = dist.n
    m = quirks.round_size(n, include_ratio)
    first = quirks.first_round(dist, core, m)
    order, rounds = [first], [np.ones(first.size, dtype=np.int64)]
    candidates = _others(first, n)
    tracker = quirks.density_tracker(dist, candidates, first, k_neighbors)
    for round_no in range(2, quirks.n_rounds(n, m) + 1):
        if not candidates.size:
            break
        take = _kernel.smallest_first(tracker.density(candidates), candidates, m)
        keep = np.ones(candidates.size, dtype=bool)
        keep[take] = False
        new, candidates = candidates[take], candidates[keep]
        order.append(new)
        rounds.append(np.full(new.size, round_no, dtype=np.int64))
        if candidates.size:
            tracker.include(new, keep, candidates)
    return np.concatenate(order), np.concatenate(rounds)


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

    ``idc``: keep the first floor(n * (1 - P_rm)) samples in IDC inclusion order
    (:func:`idc_order`). ``density``: remove the floor(n * P_rm) samples with the largest
    mean distance to their k nearest neighbours inside the cluster. ``distance``: remove
    the floor(n * P_rm) samples farthest from the core. ``none``: remove nothing.
    The core is never removed. With ``reference``, IDC reproduces the reference code,
    which leaves clusters of fewer than 10 samples untouched in ascending index order
    and keeps floor(n_ranked * (1 - P_rm)) of the n_ranked samples it ranked.

    Parameters
    ----------
    dist : LocalDistances
        Distances among the cluster's n samples.
    core : int
        Local index of the core.
    method : {"idc", "density", "distance", "none"}
    k_neighbors, include_ratio, removal_ratio : int, float, float
        k, P_in and P_rm of the paper.
    reference : bool
        The ``reference`` variant's IDC (see :func:`idc_order`).

    Returns
    -------
    DenoisedCluster
    """
    if method == "idc":
        return _denoise_idc(dist, core, k_neighbors=k_neighbors, include_ratio=include_ratio,
                            removal_ratio=removal_ratio, reference=reference)
    n = dist.n
    everyone = np.arange(n)
    if method == "none":
        return DenoisedCluster(_core_first(everyone, core), np.ones(n, dtype=np.int64), n, np.empty(0, dtype=np.int64))
    if method == "density":
        keys = _knn_density_distance(dist, k_neighbors)
    elif method == "distance":
        keys = dist.row(core, everyone).astype(np.float64)
    else:
        raise ValueError(f"denoise must be one of {DENOISERS}, got {method!r}")
    order = _core_first(np.lexsort((everyone, keys)), core)
    n_removed = math.floor(n * removal_ratio + _EPS)
    return DenoisedCluster(order, np.ones(n, dtype=np.int64), max(1, n - n_removed), np.empty(0, dtype=np.int64))


def _denoise_idc(dist: LocalDistances, core: int, *, k_neighbors: int, include_ratio: float, removal_ratio: float,
                 reference: bool) -> DenoisedCluster:
    """IDC's ranking, cut after the kept count; samples IDC never ranked are dropped."""
    ranking = _idc_ranking(dist, core, k_neighbors=k_neighbors, include_ratio=include_ratio, reference=reference)
    return _cut_idc(ranking, dist.n, core, removal_ratio=removal_ratio, reference=reference)


def _idc_ranking(dist: LocalDistances, core: int, *, k_neighbors: int, include_ratio: float,
                 reference: bool) -> tuple[np.ndarray, np.ndarray]:
    """IDC's (order, rounds) of one cluster; clusters too small for IDC stay in index order.
    Independent of P_rm, so one ranking serves every removal ratio."""
    n = dist.n
    if _too_small_for_idc(n, reference):
        return np.arange(n), np.ones(n, dtype=np.int64)
    return idc_order(dist, core, k_neighbors=k_neighbors, include_ratio=include_ratio, reference=reference)


def _cut_idc(ranking: tuple[np.ndarray, np.ndarray], n: int, core: int, *, removal_ratio: float,
             reference: bool) -> DenoisedCluster:
    """Keep the head of an IDC ranking of a cluster of ``n`` (:func:`_idc_ranking`)."""
    order, rounds = ranking
    quirks = _quirks(reference)
    n_kept = n if _too_small_for_idc(n, reference) else quirks.idc_kept(n, order.size, removal_ratio)
    dropped = _others(order, n)
    if core not in order[:n_kept]:  # only with a duplicate of the core: put it back in front
        rounds = np.concatenate(([1], np.delete(rounds, np.flatnonzero(order == core))))
        order = _core_first(order, core)
        dropped = dropped[dropped != core]
    return DenoisedCluster(order, rounds, max(1, n_kept), dropped)


def _too_small_for_idc(n: int, reference: bool) -> bool:
    """A cluster this small is neither ranked nor cut by IDC: all of it is kept."""
    return n < _quirks(reference).idc_min_size


def _core_first(order: np.ndarray, core: int) -> np.ndarray:
    return np.concatenate(([core], order[order != core])).astype(np.int64)


def _others(indices: np.ndarray, n: int) -> np.ndarray:
    """The local indices in range(n) not among ``indices``, ascending."""
    outside = np.ones(n, dtype=bool)
    outside[indices] = False
    return np.flatnonzero(outside)


def _knn_density_distance(dist: LocalDistances, k: int) -> np.ndarray:
    """Mean distance of each sample to its k nearest other samples in the cluster."""
    n = dist.n
    if n == 1:
        return np.zeros(1)
    k = min(k, n - 1)
    out = np.empty(n, dtype=np.float64)
    everyone = np.arange(n)
    chunks, step = _kernel.row_chunks(n, n)
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

    Each cluster first gets floor(B * p_i), p_i = n_i / sum_l n_l; leftover units go one
    at a time to the cluster whose current allocation is smallest (ties: larger
    proportion, then lower id). Then every cluster with 0 gets 1 (its core), taken from
    the largest allocation (ties: lower id). ``reference`` computes the floors in
    floating point, as the reference code does; otherwise in exact integer arithmetic.

    Parameters
    ----------
    budget : int
        B, at least the number of clusters K.
    sizes : (K,) int
        |U_i|, positive.
    reference : bool

    Returns
    -------
    (K,) int64 allocations summing to ``budget``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    allocation, priority = _quirks(reference).budget_floors(sizes, budget)
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

    Attributes
    ----------
    factor : (K + 1,) float64
        delta^{t_l} per core; the last slot, for "no opponent", stays 1.
    factor_index : (n, M) int64
        The slot of ``factor`` for each listed opponent.
    ratio, offset : (n, M) float64
        ``dynamic`` only: each term is ``factor * ratio - offset`` (see :func:`_eq7_parts`).
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
        if not dynamic:  # the reference code: the nearest other core, once and for all
            opponents, opponent_distances = opponents[:, :1], opponent_distances[:, :1]
        self.d_intra = d_intra
        self.opponents = np.ascontiguousarray(opponents)  # flat views in the kernel
        self.opponent_distances = opponent_distances
        self.penalty = penalty
        self.factor = np.ones(n_cores + 1, dtype=np.float64)
        self.factor_index = np.where(self.opponents >= 0, self.opponents, n_cores)
        if dynamic:
            # ratio and offset do not change between picks; the kernel keeps the terms and
            # each member's minimum up to date as the factors change.
            self.ratio, self.offset = _eq7_parts(self.opponent_distances, d_intra[:, None])
            against_every_core = None if all_opponent_distances is None else (
                lambda members: _eq7_parts(all_opponent_distances(members), d_intra[members][:, None]))
            self._minimum = _kernel.RunningMinimum(self.factor, self.factor_index, self.ratio, self.offset,
                                                   self.opponents, n_cores=n_cores,
                                                   against_every_core=against_every_core)
        else:
            self._minimum = _FixedOpponent(self.factor, self.factor_index, self.opponent_distances, d_intra,
                                           self.opponents)

    def scores(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (len,) float64 and attaining opponents (len,) int64 of the members at ``positions``."""
        return self._minimum.scores(positions)

    def set_penalty_counts(self, counts: np.ndarray) -> None:
        """Set every factor to delta^{t_l} for the (K,) counts t_l (the state after those picks)."""
        self.factor[:-1] = self.penalty ** np.asarray(counts, dtype=np.float64)
        self._minimum.refresh()

    def record_pick(self, opponent: int) -> None:
        """Apply the opponent penalty after a pick whose score ``opponent`` attained."""
        if opponent < 0 or self.penalty == 1.0:
            return
        self.factor[opponent] *= self.penalty
        self._minimum.penalised(opponent)


def _eq7_parts(distance: np.ndarray, d_intra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 7's term as ``factor * ratio - offset``: ratio = D / max(D, a), offset =
    a / max(D, a), with a = d_intra; both 0 when D = a = 0 (x on its own core and on the
    opponent: as ambiguous as it gets); an infinite D (a sample's own core in the full
    search) gives an infinite term."""
    denominator = np.maximum(distance, d_intra)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(denominator > 0, distance / denominator, 0.0)
        offset = np.where(denominator > 0, d_intra / denominator, 0.0)
    infinite = ~np.isfinite(distance)
    return np.where(infinite, np.inf, ratio), np.where(infinite, 0.0, offset)


class _FixedOpponent:
    """The reference code's Eq. 7: each member against its nearest other core only, in
    the reference's own expression (bit-identical scores); nothing to keep up to date."""

    def __init__(self, factor, factor_index, opponent_distances, d_intra, opponents):
        self.factor = factor
        self.factor_index = factor_index
        self.opponent_distances = opponent_distances
        self.d_intra = d_intra
        self.opponents = opponents

    def scores(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        factor = self.factor[self.factor_index[positions, 0]]
        distance = self.opponent_distances[positions, 0]
        d_intra = self.d_intra[positions]
        with np.errstate(invalid="ignore", divide="ignore"):
            score = (distance * factor - d_intra) / np.maximum(distance, d_intra)
        return np.where(np.isnan(score), 0.0, score), self.opponents[positions, 0]

    def refresh(self) -> None:
        """Scores are computed from the factors on demand."""

    def penalised(self, opponent: int) -> None:
        """Scores are computed from the factors on demand."""


class DistanceScorer:
    """Ablation criterion BD: prefer members far from their own core (score = -D(x, c_i)).

    Parameters
    ----------
    core_distance : (n,) float64
    nearest_opponent : (n,) int64, reported as each pick's opponent.
    """

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
    dist : LocalDistances
        Distances among the members of U, in U's order.
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
            to_last = self.dist.row(last, self.candidates)
            drop = _kernel.smallest_first(to_last, self.candidates, self.radius)
            dropped = self.candidates[drop]
            keep = np.ones(self.candidates.size, dtype=bool)
            keep[drop] = False
            self.candidates, to_last = self.candidates[keep], to_last[keep]
            if self.penalty_pending:
                self.scorer.record_pick(self.opponents[-1])
                self.penalty_pending = False
        open_positions = np.flatnonzero(~self.selected[self.candidates])
        if open_positions.size == 0:
            return False
        open_members = self.candidates[open_positions]
        scores, opponents = self.scorer.scores(open_members)
        best = int(np.argmin(scores))  # the first minimum, in position order
        if self.iterative:  # ties: nearest to the last pick, then lower position (scores are never NaN)
            tied = np.flatnonzero(scores == scores[best])
            if tied.size > 1:
                best = int(tied[_kernel.smallest_first(to_last[open_positions[tied]], open_members[tied], 1)[0]])
        position = int(open_members[best])
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
# The two variants
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Quirks:
    """How one variant resolves each point where the reference code departs from the
    paper (docs/ALGORITHM.md, "Where the reference code differs from the papers").

    Attributes
    ----------
    exact_distances : bool
        float64 ``cdist`` distances instead of the fast float32 form (stage-2 feature
        space; the caller picks raw or normalised features).
    round_size : callable (n, P_in) -> m
        IDC's per-round inclusion count.
    first_round : callable (dist, core, m) -> (m,) int64
        IDC's first round.
    n_rounds : callable (n, m) -> int
        How many IDC rounds run at most.
    density_tracker : callable (dist, candidates, first, k) -> tracker
        IDC's density distance: ``tracker.density(candidates)`` per round, then
        ``tracker.include(new, keep, candidates)``.
    idc_min_size : int
        Clusters smaller than this are not denoised (kept whole, in index order).
    idc_kept : callable (n, n_ranked, P_rm) -> int
        How many of IDC's ranked samples are kept.
    budget_floors : callable (sizes, B) -> (floors, tie priority)
    fixed_opponent : bool
        Eq. 7 against each sample's nearest other core only, instead of the minimum
        over all other cores.
    """

    exact_distances: bool
    round_size: Callable[[int, float], int]
    first_round: Callable[[LocalDistances, int, int], np.ndarray]
    n_rounds: Callable[[int, int], int]
    density_tracker: Callable
    idc_min_size: int
    idc_kept: Callable[[int, int, float], int]
    budget_floors: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
    fixed_opponent: bool


def _by_core_distance(dist: LocalDistances, core: int) -> np.ndarray:
    """Local indices by distance to the core, ties by local index."""
    positions = np.arange(dist.n)
    return np.lexsort((positions, dist.row(core, positions)))


class _ReferenceDensity:
    """The reference code's IDC density distance, indexing defect included.

    It finds the *positions* (within the included list) of a candidate's k nearest
    members, then averages the candidate's distances to the samples whose *local
    index* equals those positions.
    """

    def __init__(self, dist: LocalDistances, candidates: np.ndarray, first: np.ndarray, k: int):
        self.dist = dist
        self.members = first
        self.k = k

    def density(self, candidates: np.ndarray) -> np.ndarray:
        everyone = np.arange(self.dist.n)
        out = np.empty(candidates.size, dtype=np.float64)
        chunks, step = _kernel.row_chunks(candidates.size, self.members.size)
        for start in chunks:
            rows = candidates[start : start + step]
            positions = np.argsort(self.dist.block(rows, self.members), axis=1)[:, : self.k]
            distances = self.dist.block(rows, everyone)
            out[start : start + step] = np.mean(distances[np.arange(rows.size)[:, None], positions], axis=1)
        return out

    def include(self, new: np.ndarray, keep: np.ndarray, candidates: np.ndarray) -> None:
        self.members = np.concatenate((self.members, new))


def _exact_floors(sizes: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """floor(B n_i / sum n) in integer arithmetic; ties ranked by size (the proportions' order)."""
    return (sizes * budget) // int(sizes.sum()), -sizes


def _float_floors(sizes: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """floor(B p_i) in floating point, as the reference code computes it."""
    proportions = sizes / int(sizes.sum())
    return np.floor(proportions * budget).astype(np.int64), -proportions


_PAPER = _Quirks(
    exact_distances=False,
    round_size=lambda n, include_ratio: max(1, math.floor(n * include_ratio + _EPS)),
    first_round=lambda dist, core, m: _core_first(_by_core_distance(dist, core), core)[:m],
    n_rounds=lambda n, m: n,  # until every sample is included
    density_tracker=_kernel.NearestIncluded,  # mean distance to the k nearest members of U
    idc_min_size=0,
    idc_kept=lambda n, n_ranked, removal_ratio: math.floor(n * (1 - removal_ratio) + _EPS),
    budget_floors=_exact_floors,
    fixed_opponent=False,
)
_REFERENCE = _Quirks(
    exact_distances=True,
    round_size=lambda n, include_ratio: max(1, int(n * include_ratio)),
    first_round=lambda dist, core, m: _by_core_distance(dist, core)[:m],  # the core first only by distance
    n_rounds=lambda n, m: n // m,  # the last n mod m samples are never ranked
    density_tracker=_ReferenceDensity,
    idc_min_size=10,
    idc_kept=lambda n, n_ranked, removal_ratio: int(n_ranked * (1 - removal_ratio)),
    budget_floors=_float_floors,
    fixed_opponent=True,
)


def _quirks(reference: bool) -> _Quirks:
    return _REFERENCE if reference else _PAPER


# ----------------------------------------------------------------------------------
# What stage 2 reuses across its parameters
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterGeometry:
    """The part of stage 2 that depends only on the features and the cores.

    Made by :func:`cluster_geometry`; pass it to :func:`select_boundary` (or
    :func:`bilaf_core.select`) to try many stage-2 parameter settings on the same cores
    without recomputing the assignment and each cluster's distance matrix, which are
    most of stage 2's time on a large pool. It also remembers each cluster's IDC ranking
    per (k, P_in) (:meth:`idc_rankings`), which P_rm and the later steps only cut, so
    moving those skips IDC too. Its arrays are never modified, so it is safe to share
    across threads (two threads ranking the same setting at once both store the same).

    Attributes
    ----------
    cores : (K,) int64
    labels : (N,) int64
        Pseudo-class of every sample (Alg. 1 line 2).
    members_of : list of K (n_i,) int64
        Pool indices of each cluster's members, ascending.
    other_cores : tuple of (N, M) int64 and (N, M) float64
        Each sample's nearest cores other than its own and their distances.
    local_distances : list of K LocalDistances
        Distances among each cluster's members.
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
    _idc_rankings: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def idc_rankings(self, k_neighbors: int, include_ratio: float) -> list | None:
        """Each cluster's IDC (order, rounds) for this k and P_in, if computed on this
        geometry before (they do not depend on P_rm or any later step)."""
        return self._idc_rankings.get((int(k_neighbors), float(include_ratio)))

    def keep_idc_rankings(self, k_neighbors: int, include_ratio: float, rankings: list) -> None:
        """Remember ``rankings`` for :meth:`idc_rankings`; the newest
        :data:`IDC_RANKINGS_KEPT` settings are kept."""
        key = (int(k_neighbors), float(include_ratio))
        self._idc_rankings.pop(key, None)
        self._idc_rankings[key] = rankings
        while len(self._idc_rankings) > IDC_RANKINGS_KEPT:
            self._idc_rankings.pop(next(iter(self._idc_rankings)))

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
        ``reference``) for clusters up to 6,000 members, smallest first, up to 4 GiB in
        all (:func:`bilaf_core._boundary_kernel.matrices_to_keep`); the other clusters
        compute rows on demand.
    """
    exact = _quirks(variant == "reference").exact_distances
    n_cores = cores.size
    nearest = assign_clusters(features, cores, exact=exact, n_neighbors=_kernel.cores_to_list(n_cores))
    members_of = _kernel.group(nearest.labels, n_cores)
    keep = _kernel.matrices_to_keep(np.array([m.size for m in members_of]), distance_dtype(exact).itemsize)
    with _kernel.cluster_map(features.shape[0], n_cores, cpus=os.cpu_count()) as run:
        local = list(run(lambda i: LocalDistances(features[members_of[i]], exact=exact, keep_matrix=bool(keep[i])),
                         range(n_cores)))
    return ClusterGeometry(
        cores=np.array(cores, dtype=np.int64), labels=nearest.labels, members_of=members_of,
        other_cores=_other_cores(nearest, nearest.labels, n_cores), local_distances=local, variant=variant,
        core_features=np.array(features[cores]), features=features, n_samples=features.shape[0],
        nbytes=sum(d.matrix.nbytes for d in local if d.matrix is not None))


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

    1. assign every sample to its nearest core (:func:`cluster_geometry`, or the
       ``geometry`` given);
    2. denoise each cluster (:func:`denoise_cluster`);
    3. split the budget by denoised size (:func:`allocate_budget`);
    4. in each cluster, pick boundary samples by Eq. 7 with iterative removal
       (:class:`BoundaryScorer`, :class:`ClusterPicker`);
    5. pass budget that a cluster could not use on (the fallback below).

    Parameters
    ----------
    features : (N, d) float32
    cores : (K,) int64, distinct pool indices; position = cluster id.
    budget : int, K <= B <= N.
    variant, k_neighbors, include_ratio, removal_ratio, opponent_penalty, denoise,
    criterion, process : see ``docs/ALGORITHM.md``.
    keep_trace : bool
        Record each cluster's ranking and picks in ``traces``.
    progress : callable (fraction, message), optional
    geometry : ClusterGeometry, optional
        From :func:`cluster_geometry` on the same features, cores and variant; computed
        here when not given.

    Returns
    -------
    BoundaryResult

    Budget fallback, so that exactly B distinct samples come back: a cluster that runs
    out of candidates passes its remaining units, one at a time, to the cluster with
    the most open candidates (ties: lower id); when no cluster has any, every cluster
    reopens all its unselected denoised members as candidates; when those are used up
    too, removed samples are taken, cluster by cluster, least noisy first.
    """
    reference = variant == "reference"
    geometry = _geometry_for(features, cores, variant, geometry)
    with _kernel.cluster_map(features.shape[0], cores.size, cpus=os.cpu_count()) as run:
        denoised = _denoise_clusters(run, geometry, progress, method=denoise, k_neighbors=k_neighbors,
                                     include_ratio=include_ratio, removal_ratio=removal_ratio, reference=reference)
        allocation = allocate_budget(budget, np.array([d.n_kept for d in denoised]), reference=reference)
        pickers = _pick_in_clusters(run, geometry, denoised, allocation, features, progress, criterion=criterion,
                                    iterative=process == "iterative", opponent_penalty=opponent_penalty,
                                    reference=reference, keep_trace=keep_trace)
    fallback = _pass_on_unused_budget(pickers, allocation, denoised, geometry.members_of)
    if progress is not None:
        progress(1.0, "stage 2 done")
    return _result(geometry, denoised, allocation, pickers, fallback, keep_trace=keep_trace)


def _geometry_for(features, cores, variant, geometry: ClusterGeometry | None) -> ClusterGeometry:
    """Step 1: the given geometry, checked against the inputs, or a new one."""
    if geometry is None:
        return cluster_geometry(features, cores, variant=variant)
    geometry.check_matches(features[cores], cores, n_samples=features.shape[0], variant=variant)
    return geometry


def _denoise_clusters(run, geometry: ClusterGeometry, progress, *, method: str, k_neighbors: int,
                      include_ratio: float, removal_ratio: float, reference: bool) -> list[DenoisedCluster]:
    """Step 2 in every cluster. IDC's rankings are kept on the geometry, so trying
    another P_rm (or any later-step parameter) on it skips IDC."""
    n_clusters = geometry.cores.size
    core_local = [int(np.searchsorted(members, core)) for members, core in zip(geometry.members_of, geometry.cores)]
    if method == "idc":
        rankings = geometry.idc_rankings(k_neighbors, include_ratio)
        if rankings is None:
            def rank_one(cluster_id: int) -> tuple[np.ndarray, np.ndarray]:
                return _idc_ranking(geometry.local_distances[cluster_id], core_local[cluster_id],
                                    k_neighbors=k_neighbors, include_ratio=include_ratio, reference=reference)

            rankings = _collect(run(rank_one, range(n_clusters)), n_clusters, progress, 0.0, "denoising clusters")
            geometry.keep_idc_rankings(k_neighbors, include_ratio, rankings)
        return [_cut_idc(rankings[c], members.size, core_local[c], removal_ratio=removal_ratio, reference=reference)
                for c, members in enumerate(geometry.members_of)]

    def denoise_one(cluster_id: int) -> DenoisedCluster:
        return denoise_cluster(geometry.local_distances[cluster_id], core_local[cluster_id], method=method,
                               k_neighbors=k_neighbors, include_ratio=include_ratio, removal_ratio=removal_ratio,
                               reference=reference)

    return _collect(run(denoise_one, range(n_clusters)), n_clusters, progress, 0.0, "denoising clusters")


def _pick_in_clusters(run, geometry: ClusterGeometry, denoised, allocation, features, progress, *,
                      criterion, iterative, opponent_penalty, reference, keep_trace) -> list[ClusterPicker]:
    """Step 4 in every cluster, each picker run to its own budget."""
    dynamic = not _quirks(reference).fixed_opponent

    def pick_one(cluster_id: int) -> ClusterPicker:
        kept = denoised[cluster_id].kept
        kept_dist = _kernel.SubsetDistances(geometry.local_distances[cluster_id], kept)
        kept_pool = geometry.members_of[cluster_id][kept]
        core_position = int(np.flatnonzero(kept_pool == geometry.cores[cluster_id])[0])
        scorer = _cluster_scorer(criterion, kept_dist, kept_pool, core_position, geometry, features, cluster_id,
                                 penalty=opponent_penalty if iterative else 1.0, dynamic=dynamic)
        units = int(allocation[cluster_id])
        picker = ClusterPicker(kept_dist, scorer, core=core_position, budget=units, iterative=iterative,
                               keep_trace=keep_trace)
        picker.run_to(units)
        return picker

    n_clusters = len(denoised)
    return _collect(run(pick_one, range(n_clusters)), n_clusters, progress, 0.5, "selecting boundary samples")


def _collect(results, n_clusters: int, progress, start: float, message: str) -> list:
    """The per-cluster results in cluster order, reporting each half of the progress."""
    out = []
    for cluster_id, result in enumerate(results):
        out.append(result)
        if progress is not None and cluster_id % 64 == 0:
            progress(start + 0.5 * cluster_id / n_clusters, message)
    return out


def _cluster_scorer(criterion: str, kept_dist: LocalDistances, kept_pool: np.ndarray, core_position: int,
                    geometry: ClusterGeometry, features: np.ndarray, cluster_id: int, *, penalty: float, dynamic: bool):
    """The scorer of one denoised cluster U: Eq. 7 with d_intra(x) = mean distance from x
    to all of U (x itself included), or BD."""
    opponents, opponent_d = geometry.other_cores[0][kept_pool], geometry.other_cores[1][kept_pool]
    everyone = np.arange(kept_dist.n)
    if criterion == "distance":
        return DistanceScorer(kept_dist.row(core_position, everyone).astype(np.float64), opponents[:, 0])
    d_intra = kept_dist.row_means(everyone, everyone)
    core_features = geometry.core_features

    def all_opponent_distances(positions: np.ndarray) -> np.ndarray:
        full = pairwise_distances(features[kept_pool[positions]], core_features, exact=kept_dist.exact)
        full = full.astype(np.float64)
        full[:, cluster_id] = np.inf
        return full

    return BoundaryScorer(d_intra, opponents, opponent_d, n_cores=core_features.shape[0], penalty=penalty,
                          dynamic=dynamic, all_opponent_distances=all_opponent_distances)


def _pass_on_unused_budget(pickers, allocation, denoised, members_of) -> list[list[int]]:
    """Step 5, the budget fallback of :func:`select_boundary`, after every picker ran to
    its budget. Returns, per cluster, the removed samples taken in its last phase."""
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


def _result(geometry: ClusterGeometry, denoised, allocation, pickers, fallback, *, keep_trace: bool) -> BoundaryResult:
    """Assemble the selection in core order, each cluster's picks then its fallback picks."""
    members_of = geometry.members_of
    indices, cluster_ids, scores, opponents = [], [], [], []
    selected_removed = set()
    for cluster_id, (picker, members, den) in enumerate(zip(pickers, members_of, denoised)):
        pool = members[den.kept][picker.picks]
        extra = fallback[cluster_id]
        selected_removed.update(extra)
        indices.append(np.concatenate((pool, np.asarray(extra, dtype=np.int64))))
        cluster_ids.append(np.full(pool.size + len(extra), cluster_id, dtype=np.int64))
        scores.append(np.concatenate((picker.scores, np.full(len(extra), np.nan))))
        opponents.append(np.concatenate((picker.opponents, np.full(len(extra), -1))).astype(np.int64))
    # In the algorithm's order: cluster by cluster, least noisy first.
    removed = np.concatenate([members[d.removed] for members, d in zip(members_of, denoised)])
    removed = removed[~np.isin(removed, list(selected_removed))]

    traces = None
    if keep_trace:
        traces = [
            ClusterTrace(
                core=int(geometry.cores[c]), members=members, inclusion_order=members[den.order],
                inclusion_round=den.rounds, kept=members[den.kept], removed=members[den.removed],
                budget=int(allocation[c]), radius=picker.radius, picks=picker.trace,
            )
            for c, (members, den, picker) in enumerate(zip(members_of, denoised, pickers))
        ]
    return BoundaryResult(
        indices=np.concatenate(indices).astype(np.int64),
        cluster_of_selected=np.concatenate(cluster_ids),
        scores=np.concatenate(scores).astype(np.float64),
        opponents=np.concatenate(opponents),
        labels=geometry.labels,
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
