"""The public selection API: :func:`select`, the :class:`Selection` result and the
scikit-learn style :class:`BiLAF` estimator (a thin wrapper over :func:`select`)."""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import _validation as v
from ._io import atomic_open, atomic_write_text
from .auto import AUTO, CoreSplit, auto_n_cores
from .baselines import probcover, typiclust
from .boundary import (CRITERIA, DENOISERS, PROCESSES, VARIANTS, ClusterGeometry, assign_clusters, cluster_geometry,
                       select_boundary)
from .core import CORE_METHODS, l2_normalize, select_cores

__all__ = ["METHODS", "ROLES", "Selection", "select", "stage2_geometry", "default_n_cores", "resolve_n_cores",
           "resolve_normalize", "BiLAF"]

METHODS = ("bilaf", "activeft", "kmeans", "fds", "random", "typiclust", "probcover")
#: Per-sample roles. Stage-1-only methods mark their picks "core"; TypiClust and
#: ProbCover, which have no pseudo-classes, mark theirs "selected".
ROLES = ("core", "boundary", "selected", "removed", "unselected")

Progress = Callable[[float, str], None]


def default_n_cores(n_samples: int, budget: int) -> int:
    """K = 0.5% of N, at least 1, at most B (ALGORITHM.md, generic default)."""
    return max(1, min(budget, math.floor(0.005 * n_samples)))


def resolve_n_cores(n_cores: int | str | None, n_samples: int, budget: int) -> CoreSplit:
    """BiLAF's K for ``select(..., n_cores=n_cores)`` and why: "auto" (the budget split of
    :func:`bilaf_core.auto.auto_n_cores`), None (the paper's generic 0.5 % of N) or an
    integer checked against the budget and the pool. Raises ValueError for a bad one."""
    if n_cores == AUTO:
        return auto_n_cores(n_samples, budget)
    if n_cores is None:
        return CoreSplit(default_n_cores(n_samples, budget), "0.5 % of the pool (the paper's generic default)")
    return CoreSplit(v.check_n_cores(n_cores, budget, n_samples), "set by hand")


@dataclass(frozen=True)
class Selection:
    """The result of :func:`select`.

    Attributes
    ----------
    indices : (B,) int64
        Selected pool indices in selection order (BiLAF: clusters in core order, each
        starting with its core).
    cores : (K,) int64
        Core indices, ascending (a core's position is its pseudo-class id).
    removed : (n_removed,) int64
        Indices that denoising removed (BiLAF only; empty otherwise), cluster by cluster,
        each least noisy first.
    cluster : (N,) int64
        Pseudo-class id of every pool sample (-1 where the method has none).
    role : (N,) str
        One of :data:`ROLES` per pool sample.
    boundary_score : (B,) float64
        Per selected sample, the score at the time of its pick; NaN for cores and for
        methods without one.
    opponent : (B,) int64
        Per selected sample, the opponent cluster that attained its score (-1: none).
    allocation : (K,) int64
        Per-cluster budgets (BiLAF); ones for stage-1-only methods; empty otherwise.
    params : dict
        Every parameter, resolved (n_cores, normalize, seed ...).
    timings : dict
        Seconds per stage: ``stage1``, ``stage2``, ``total``.
    """

    indices: np.ndarray
    cores: np.ndarray
    removed: np.ndarray
    cluster: np.ndarray
    role: np.ndarray
    boundary_score: np.ndarray
    opponent: np.ndarray
    allocation: np.ndarray
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    _ARRAYS = ("indices", "cores", "removed", "cluster", "role", "boundary_score", "opponent", "allocation")

    @property
    def budget(self) -> int:
        return int(self.indices.size)

    def role_counts(self) -> dict[str, int]:
        names, counts = np.unique(self.role, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}

    def members(self, rows: np.ndarray | None = None, *, roles=ROLES, cluster: int | None = None) -> np.ndarray:
        """Pool rows (of ``rows``, default every row) whose role is one of ``roles`` and,
        when given, whose pseudo-class is ``cluster``: the selected ones first, in selection
        order, then the others ascending. Returns (M,) int64."""
        n = self.role.size
        rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        mask = np.isin(self.role[rows], list(roles))
        if cluster is not None:
            mask &= self.cluster[rows] == cluster
        chosen = rows[mask]
        position = np.full(n, -1)
        position[self.indices] = np.arange(self.indices.size)
        return chosen[np.argsort(np.where(position[chosen] >= 0, position[chosen], n + chosen), kind="stable")]

    def cluster_view(self, cluster: int) -> tuple[np.ndarray, np.ndarray]:
        """One pseudo-class as the algorithm treated it: (its core and boundary picks, in
        the order they were picked; what denoising removed from it, least noisy first)."""
        return (self.indices[self.cluster[self.indices] == cluster],
                self.removed[self.cluster[self.removed] == cluster])

    def save(self, path: str | os.PathLike, *, sample_ids: np.ndarray | None = None,
             extra: dict | None = None) -> tuple[Path, Path]:
        """Write ``<stem>.json`` (indices, cores, removed, params, timings, readable by
        anyone) and ``<stem>.npz`` (every array), each atomically. ``sample_ids`` (the
        pool's stable ids of ``indices``, in order) and ``extra`` keys go into the JSON."""
        json_path = Path(path).with_suffix(".json")
        npz_path = json_path.with_suffix(".npz")
        with atomic_open(npz_path, "wb") as handle:
            np.savez_compressed(handle, **{name: getattr(self, name) for name in self._ARRAYS})
        document = {
            "indices": self.indices.tolist(),
            "cores": self.cores.tolist(),
            "removed": self.removed.tolist(),
            "params": self.params,
            "timings": self.timings,
            "arrays": npz_path.name,
            **({"ids": [str(i) for i in sample_ids]} if sample_ids is not None else {}),
            **(extra or {}),
        }
        atomic_write_text(json_path, json.dumps(document, indent=1))
        return json_path, npz_path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Selection":
        """Read a selection written by :meth:`save` (pickles are never loaded)."""
        json_path = Path(path).with_suffix(".json")
        try:
            document = json.loads(json_path.read_text(encoding="utf-8"))
            with np.load(json_path.with_suffix(".npz"), allow_pickle=False) as arrays:
                data = {name: arrays[name] for name in cls._ARRAYS}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read selection {json_path}: {exc}") from None
        return cls(**data, params=document.get("params", {}), timings=document.get("timings", {}))


def resolve_normalize(normalize: object, variant: str) -> bool:
    """``normalize`` checked, with None meaning the variant's default (paper: True,
    reference: False): whether :func:`select` works on L2-normalised features."""
    if normalize is not None and not isinstance(normalize, (bool, np.bool_)):
        raise ValueError(f"normalize must be True, False or None (the variant's default), got {normalize!r}")
    return variant == "paper" if normalize is None else bool(normalize)


def _validate(features, budget, *, method, n_cores, core_method, cores, variant, k_neighbors, include_ratio,
              removal_ratio, opponent_penalty, denoise, criterion, process, normalize, random_state):
    method = v.check_choice(method, "method", METHODS)
    variant = v.check_choice(variant, "variant", VARIANTS)
    v.check_choice(core_method, "core_method", CORE_METHODS)
    v.check_choice(denoise, "denoise", DENOISERS)
    v.check_choice(criterion, "criterion", CRITERIA)
    v.check_choice(process, "process", PROCESSES)
    features = v.check_features(features)
    n = features.shape[0]
    budget = v.check_budget(budget, n)
    v.check_positive_int(k_neighbors, "k_neighbors")
    v.check_ratio(include_ratio, "include_ratio", high_inclusive=True, low_exclusive=True)
    v.check_ratio(removal_ratio, "removal_ratio")
    v.check_penalty(opponent_penalty)
    seed = v.check_random_state(random_state)
    resolve_normalize(normalize, variant)
    if cores is not None:
        cores = v.check_core_indices(cores, n, budget)
        if n_cores is not None and n_cores != AUTO and int(n_cores) != cores.size:
            raise ValueError(f"n_cores ({n_cores}) disagrees with the {cores.size} core indices given; pass one of them")
        n_cores = cores.size
        rule = "given cores"
    elif method == "bilaf":
        split = resolve_n_cores(n_cores, n, budget)
        n_cores, rule = split.n_cores, split.reason
    else:
        rule = f"{method} selects the whole budget"
    return features, budget, method, variant, n_cores, rule, cores, seed


def select(
    features: np.ndarray,
    budget: int,
    *,
    method: str = "bilaf",
    n_cores: int | str | None = AUTO,
    core_method: str = "activeft",
    cores: np.ndarray | None = None,
    variant: str = "paper",
    k_neighbors: int = 10,
    include_ratio: float = 0.1,
    removal_ratio: float = 0.1,
    opponent_penalty: float = 1.1,
    denoise: str = "idc",
    criterion: str = "boundary_score",
    process: str = "iterative",
    normalize: bool | None = None,
    random_state: int | None = None,
    progress: Progress | None = None,
    geometry: ClusterGeometry | None = None,
) -> Selection:
    """Select ``budget`` samples to label from a pool of features.

    Parameters
    ----------
    features : (N, d) array, float16/32/64
        The pool's features (e.g. DINO ViT-S/16 CLS tokens).
    budget : int
        B, the number of samples to select, cores included; 1 <= B <= N.
    method : {"bilaf", "activeft", "kmeans", "fds", "random", "typiclust", "probcover"}
        "bilaf" is the two-stage method; the stage-1 methods alone select B cores.
    n_cores : int, "auto" or None
        K for BiLAF. "auto" (default): the label-free budget split of
        :func:`bilaf_core.auto.auto_n_cores` (K = B for budgets of at most 2 % of N,
        else round(sqrt(B))); None: the paper's generic 0.5 % of N, at least 1, at most B.
        The chosen K and the reason are in ``params["n_cores"]`` and
        ``params["n_cores_rule"]``.
    core_method : {"activeft", "kmeans", "fds", "random"}
        BiLAF's stage 1.
    cores : (K,) int array, optional
        Give the core indices instead of running stage 1.
    variant : {"paper", "reference"}
        See ``docs/ALGORITHM.md``: the paper's method with the reference code's
        defects fixed, or the authors' code reproduced index for index.
    k_neighbors, include_ratio, removal_ratio : int, float, float
        IDC's k (>= 1), P_in in (0, 1] and P_rm in [0, 1).
    opponent_penalty : float
        delta >= 1 of paper Eq. 7; 1.0 switches the penalty off.
    denoise : {"idc", "density", "distance", "none"}
    criterion : {"boundary_score", "distance"}
    process : {"iterative", "one_shot"}
        Ablations of paper Table 2.
    normalize : bool, optional
        L2-normalise features for stage 2 and the baselines; None = the variant's
        default (True for "paper", False for "reference"). Stage 1 always works on
        normalised features, as ActiveFT does.
    random_state : int, optional
        Seed; the same seed and inputs give the same selection.
    progress : callable(fraction, message), optional
    geometry : ClusterGeometry, optional
        BiLAF with given ``cores`` only: stage 2's assignment and distance matrices from
        :func:`stage2_geometry` on the same features, cores, variant and normalisation,
        reused instead of recomputed (for trying stage-2 parameters interactively).

    Returns
    -------
    Selection

    Raises
    ------
    ValueError
        For any invalid input; the message names the parameter and its allowed range.
    """
    features, budget, method, variant, n_cores, n_cores_rule, cores, seed = _validate(
        features, budget, method=method, n_cores=n_cores, core_method=core_method, cores=cores, variant=variant,
        k_neighbors=k_neighbors, include_ratio=include_ratio, removal_ratio=removal_ratio,
        opponent_penalty=opponent_penalty, denoise=denoise, criterion=criterion, process=process,
        normalize=normalize, random_state=random_state,
    )
    if geometry is not None and (method != "bilaf" or cores is None):
        raise ValueError("geometry is reused only by method='bilaf' with the cores it was computed for; "
                         "pass cores=geometry.cores, or leave geometry out")
    if cores is not None and method != "bilaf":  # it was silently ignored, yet recorded as core_method="given"
        raise ValueError(f"cores are BiLAF's stage 1; method={method!r} selects the whole budget itself: "
                         "leave cores out, or use method='bilaf'")
    normalize = resolve_normalize(normalize, variant)
    n = features.shape[0]
    if geometry is not None:  # the pool as the geometry saw it: prepared once, not again per call
        geometry.check_matches(l2_normalize(features[cores]) if normalize else features[cores], cores, n_samples=n,
                               variant=variant)
        unit = space = geometry.features
    else:
        unit = l2_normalize(features)
        space = unit if normalize else features
    report = progress or (lambda fraction, message: None)
    params = {
        "method": method, "budget": budget, "n_cores": n_cores, "n_cores_rule": n_cores_rule, "core_method": core_method if cores is None else "given",
        "variant": variant, "k_neighbors": k_neighbors, "include_ratio": include_ratio, "removal_ratio": removal_ratio,
        "opponent_penalty": opponent_penalty, "denoise": denoise, "criterion": criterion, "process": process,
        "normalize": normalize, "random_state": seed, "n_samples": n, "n_dims": int(features.shape[1]),
    }
    start = time.perf_counter()
    role = np.full(n, "unselected", dtype="<U10")
    empty = np.empty(0, dtype=np.int64)

    if method in ("typiclust", "probcover"):
        picker = typiclust if method == "typiclust" else probcover
        indices = picker(space, budget, random_state=seed)
        role[indices] = "selected"
        elapsed = time.perf_counter() - start
        return Selection(indices, empty, empty, np.full(n, -1, dtype=np.int64), role,
                         np.full(budget, np.nan), np.full(budget, -1, dtype=np.int64), empty,
                         params, {"stage1": elapsed, "stage2": 0.0, "total": elapsed})

    stage1_method = core_method if method == "bilaf" else method
    stage1_k = n_cores if method == "bilaf" else budget
    if cores is None or method != "bilaf":
        report(0.0, f"stage 1: {stage1_method}")
        stage1_progress = lambda f, m: report(0.6 * f if method == "bilaf" else f, m)  # noqa: E731
        cores = select_cores(unit, stage1_k, method=stage1_method, random_state=seed, progress=stage1_progress)
    stage1_time = time.perf_counter() - start

    if method != "bilaf":
        labels = assign_clusters(space, cores, exact=False).labels
        role[cores] = "core"
        report(1.0, "done")
        return Selection(cores.copy(), cores, empty, labels, role, np.full(budget, np.nan),
                         np.full(budget, -1, dtype=np.int64), np.ones(budget, dtype=np.int64),
                         params, {"stage1": stage1_time, "stage2": 0.0, "total": time.perf_counter() - start})

    stage2_progress = lambda f, m: report(0.6 + 0.4 * f, m)  # noqa: E731
    result = select_boundary(
        space, cores, budget, variant=variant, k_neighbors=k_neighbors, include_ratio=include_ratio,
        removal_ratio=removal_ratio, opponent_penalty=opponent_penalty, denoise=denoise, criterion=criterion,
        process=process, progress=stage2_progress, geometry=geometry,
    )
    total = time.perf_counter() - start
    role[result.removed] = "removed"
    role[result.indices] = "boundary"
    role[cores] = "core"
    return Selection(result.indices, cores, result.removed, result.labels, role, result.scores, result.opponents,
                     result.allocation, params, {"stage1": stage1_time, "stage2": total - stage1_time, "total": total})


def stage2_geometry(features: np.ndarray, cores: np.ndarray, *, variant: str = "paper",
                    normalize: bool | None = None) -> ClusterGeometry:
    """Stage 2's parameter-independent part for ``select(features, ..., cores=cores,
    variant=variant, normalize=normalize, geometry=...)``: the features prepared as
    :func:`select` prepares them, then :func:`bilaf_core.boundary.cluster_geometry`.

    Parameters
    ----------
    features : (N, d) array, as given to :func:`select`.
    cores : (K,) int array of distinct pool indices.
    variant, normalize : as in :func:`select`.
    """
    variant = v.check_choice(variant, "variant", VARIANTS)
    features = v.check_features(features)
    cores = v.check_core_indices(cores, features.shape[0], features.shape[0])
    space = l2_normalize(features) if resolve_normalize(normalize, variant) else features
    return cluster_geometry(space, cores, variant=variant)


class BiLAF:
    """scikit-learn style estimator over :func:`select` (same parameters, same code).

    Parameters are stored by ``__init__``; :meth:`fit` does the work and sets
    ``selection_``, ``indices_``, ``cores_``, ``removed_``, ``labels_`` (pseudo-class per
    sample) and ``role_``.

    Examples
    --------
    >>> model = BiLAF(budget=500, random_state=0).fit(features)  # doctest: +SKIP
    >>> model.indices_[:5]  # doctest: +SKIP
    """

    def __init__(self, budget: int, *, method: str = "bilaf", n_cores: int | str | None = AUTO,
                 core_method: str = "activeft",
                 variant: str = "paper", k_neighbors: int = 10, include_ratio: float = 0.1, removal_ratio: float = 0.1,
                 opponent_penalty: float = 1.1, denoise: str = "idc", criterion: str = "boundary_score",
                 process: str = "iterative", normalize: bool | None = None, random_state: int | None = None):
        self.budget = budget
        self.method = method
        self.n_cores = n_cores
        self.core_method = core_method
        self.variant = variant
        self.k_neighbors = k_neighbors
        self.include_ratio = include_ratio
        self.removal_ratio = removal_ratio
        self.opponent_penalty = opponent_penalty
        self.denoise = denoise
        self.criterion = criterion
        self.process = process
        self.normalize = normalize
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in (
            "budget", "method", "n_cores", "core_method", "variant", "k_neighbors", "include_ratio", "removal_ratio",
            "opponent_penalty", "denoise", "criterion", "process", "normalize", "random_state")}

    def set_params(self, **params) -> "BiLAF":
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(f"unknown parameter {name!r} for BiLAF")
            setattr(self, name, value)
        return self

    def fit(self, X, y=None, *, cores: np.ndarray | None = None) -> "BiLAF":
        """Select from the pool ``X`` (N, d); ``y`` is ignored (label-free)."""
        params = self.get_params()
        budget = params.pop("budget")
        self.selection_ = select(X, budget, cores=cores, **params)
        self.indices_ = self.selection_.indices
        self.cores_ = self.selection_.cores
        self.removed_ = self.selection_.removed
        self.labels_ = self.selection_.cluster
        self.role_ = self.selection_.role
        return self
