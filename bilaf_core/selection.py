"""The public selection API: :func:`select`, the :class:`Selection` result and the
scikit-learn style :class:`BiLAF` estimator (a thin wrapper over :func:`select`)."""

from __future__ import annotations

import inspect
import json
import math
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.base import BaseEstimator

from . import _validation as v
from ._io import atomic_open, atomic_write_text
from .auto import AUTO, CoreSplit, auto_n_cores
from .baselines import probcover, typiclust
from .boundary import ClusterGeometry, assign_clusters, cluster_geometry, select_boundary
from .core import l2_normalize, select_cores
from .params import METHODS, SelectionParams, keyword_parameters

__all__ = ["METHODS", "ROLES", "Selection", "select", "stage2_geometry", "default_n_cores", "resolve_n_cores",
           "runs_stage2", "resolve_normalize", "BiLAF"]
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
        split = auto_n_cores(n_samples, budget)
    elif n_cores is None:
        split = CoreSplit(default_n_cores(n_samples, budget), "0.5 % of the pool (the paper's generic default)")
    else:
        split = CoreSplit(v.check_n_cores(n_cores, budget, n_samples), "set by hand")
    if budget == 1:  # the only K there is: neither a rule nor the user chose it
        return CoreSplit(1, "the pool has a single sample" if n_samples == 1 else "a budget of one sample has one core")
    return split


def runs_stage2(method: str, n_cores: int, budget: int) -> bool:
    """Whether a selection runs BiLAF's stage 2 (denoising, boundary picks): BiLAF with
    K < B. At K = B every label is a core and stage 2 has none to spend; a whole-budget
    method has no stage 2. Known before selecting (the Compare page's table) and after
    (:attr:`Selection.has_stage2`)."""
    return method == "bilaf" and n_cores < budget


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

    @property
    def has_stage2(self) -> bool:
        """Whether BiLAF's stage 2 (denoising, boundary picks) took part: BiLAF with K < B.
        At K = B every label is a core and stage 2 has none to spend, so it does not run
        (no sample is removed as noise); a whole-budget method has no stage 2 (:func:`runs_stage2`)."""
        return runs_stage2(self.params.get("method"), self.cores.size, self.budget)

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
    """``normalize`` with None meaning the variant's default (paper: True, reference:
    False): whether :func:`select` works on L2-normalised features."""
    return SelectionParams(variant=variant, normalize=normalize).normalizes  # validates both


def _validate(features, budget, params: SelectionParams, cores):
    """The checks that need the pool: features, budget, K against B and N, given cores."""
    features = v.check_features(features)
    n = features.shape[0]
    budget = v.check_budget(budget, n)
    n_cores = params.n_cores
    if cores is not None:
        cores = v.check_core_indices(cores, n, budget)
        if n_cores is not None and n_cores != AUTO and int(n_cores) != cores.size:
            raise ValueError(f"n_cores ({n_cores}) disagrees with the {cores.size} core indices given; pass one of them")
        n_cores = cores.size
        rule = "given cores"
    elif params.method == "bilaf":
        split = resolve_n_cores(n_cores, n, budget)
        n_cores, rule = split.n_cores, split.reason
    else:
        rule = f"{params.method} selects the whole budget"
    return features, budget, n_cores, rule, cores


def select(
    features: np.ndarray,
    budget: int,
    *,
    cores: np.ndarray | None = None,
    progress: Progress | None = None,
    geometry: ClusterGeometry | None = None,
    **options,
) -> Selection:
    """Select ``budget`` samples to label from a pool of features.

    Parameters
    ----------
    features : (N, d) array, float16/32/64
        The pool's features (e.g. DINO ViT-S/16 CLS tokens).
    budget : int
        B, the number of samples to select, cores included; 1 <= B <= N.
    cores : (K,) int array, optional
        Give the core indices instead of running stage 1 (BiLAF only).
    progress : callable(fraction, message), optional
    geometry : ClusterGeometry, optional
        BiLAF with given ``cores`` only: stage 2's assignment and distance matrices from
        :func:`stage2_geometry` on the same features, cores, variant and normalisation,
        reused instead of recomputed (for trying stage-2 parameters interactively).
    **options
        The fields of :class:`bilaf_core.params.SelectionParams`, where each one's
        default, range and meaning are defined: ``method`` ("bilaf", the two-stage
        method, or a baseline that selects the whole budget), ``n_cores`` (K: "auto" by
        default, see :func:`bilaf_core.auto.auto_n_cores`; the chosen K and why are in
        ``params["n_cores"]`` and ``params["n_cores_rule"]``), ``core_method``,
        ``variant`` ("paper" or "reference", see ``docs/ALGORITHM.md``), ``k_neighbors``,
        ``include_ratio`` (P_in), ``removal_ratio`` (P_rm), ``opponent_penalty`` (delta of
        paper Eq. 7), ``denoise`` / ``criterion`` / ``process`` (the ablations of paper
        Table 2), ``normalize`` and ``random_state``.

    Returns
    -------
    Selection

    Raises
    ------
    ValueError
        For any invalid input; the message names the parameter and its allowed range.
    """
    p = SelectionParams.from_options(options)
    features, budget, n_cores, n_cores_rule, cores = _validate(features, budget, p, cores)
    method, variant, seed = p.method, p.variant, p.random_state
    if geometry is not None and (method != "bilaf" or cores is None):
        raise ValueError("geometry is reused only by method='bilaf' with the cores it was computed for; "
                         "pass cores=geometry.cores, or leave geometry out")
    if cores is not None and method != "bilaf":  # it was silently ignored, yet recorded as core_method="given"
        raise ValueError(f"cores are BiLAF's stage 1; method={method!r} selects the whole budget itself: "
                         "leave cores out, or use method='bilaf'")
    normalize = p.normalizes  # validated once, with the other options
    n = features.shape[0]
    if geometry is not None:  # the pool as the geometry saw it: prepared once, not again per call
        geometry.check_matches(l2_normalize(features[cores]) if normalize else features[cores], cores, n_samples=n,
                               variant=variant)
        unit = space = geometry.features
    else:
        unit = l2_normalize(features)
        space = unit if normalize else features
    report = progress or (lambda fraction, message: None)
    params = {**p.as_dict(), "budget": budget, "n_cores": n_cores, "n_cores_rule": n_cores_rule,
              "core_method": p.core_method if cores is None else "given", "normalize": normalize,
              "n_samples": n, "n_dims": int(features.shape[1])}
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

    stage1_method = p.core_method if method == "bilaf" else method
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
    # K = B: every label is a core and no boundary pick is left to make; denoising would
    # only mark "removed" samples that play no part in the selection, so it is skipped
    # (the clusters and the cores' order are the same either way). Selection.has_stage2.
    denoise = p.denoise if runs_stage2(method, n_cores, budget) else "none"
    result = select_boundary(
        space, cores, budget, variant=variant, k_neighbors=p.k_neighbors, include_ratio=p.include_ratio,
        removal_ratio=p.removal_ratio, opponent_penalty=p.opponent_penalty, denoise=denoise, criterion=p.criterion,
        process=p.process, progress=stage2_progress, geometry=geometry,
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
    normalized = resolve_normalize(normalize, variant)  # checks both
    features = v.check_features(features)
    cores = v.check_core_indices(cores, features.shape[0], features.shape[0])
    space = l2_normalize(features) if normalized else features
    return cluster_geometry(space, cores, variant=variant)


class BiLAF(BaseEstimator):
    """scikit-learn estimator over :func:`select` (same parameters, same code).

    Parameters are ``budget`` and the fields of :class:`bilaf_core.params.SelectionParams`
    (keyword-only), stored by ``__init__`` unchecked, as scikit-learn asks; :meth:`fit`
    validates them, does the work and sets ``selection_``, ``indices_``, ``cores_``,
    ``removed_``, ``labels_`` (pseudo-class per sample) and ``role_``. ``get_params``,
    ``set_params``, ``clone`` and the repr come from :class:`sklearn.base.BaseEstimator`.

    Examples
    --------
    >>> model = BiLAF(budget=500, random_state=0).fit(features)  # doctest: +SKIP
    >>> model.indices_[:5]  # doctest: +SKIP
    """

    def __init__(self, budget: int, **params):
        unknown = set(params) - set(SelectionParams.__dataclass_fields__)
        if unknown:
            raise TypeError(f"BiLAF got unknown parameter(s) {', '.join(sorted(unknown))}")
        self.budget = budget
        for name, value in {**SelectionParams().as_dict(), **params}.items():
            setattr(self, name, value)

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


# The signatures scikit-learn, the docs and IDEs read: derived from SelectionParams.
select.__signature__ = inspect.signature(select).replace(parameters=[
    *[p for p in inspect.signature(select).parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD],
    *keyword_parameters()])
BiLAF.__init__.__signature__ = inspect.signature(BiLAF.__init__).replace(parameters=[
    *[p for p in inspect.signature(BiLAF.__init__).parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD],
    *keyword_parameters()])
