"""Small 2-D problems for the app's Learn page: every step of BiLAF can be seen exactly
on data that is itself 2-D. The page asks this module for the data and the run; the run
is the library's own stage 1 and stage 2 (:func:`select_cores`, :func:`select_boundary`
with ``keep_trace=True``), never a second implementation.

Two choices specific to 2-D data, both because L2 normalisation (which stage 1 always
applies and the ``paper`` variant applies in stage 2) would project a plane onto the
unit circle and keep only each point's angle:

* stage 2 runs on the raw coordinates (``normalize=False`` in :func:`select`'s terms);
* stage 1 runs on :func:`lift_to_sphere`, the inverse stereographic projection of the
  standardised plane onto the unit sphere in 3-D, which is conformal (keeps local
  shapes), so cosine-based methods such as ActiveFT see the plane's geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validation as v
from .boundary import BoundaryResult, assign_clusters, select_boundary
from .core import select_cores
from .params import STAGE2_PARAMS, SelectionParams
from .selection import _validate, select

__all__ = ["TOY_DATASETS", "make_toy_dataset", "lift_to_sphere", "Walkthrough", "walkthrough", "compare_methods",
           "region_extent", "region_grid"]

TOY_DATASETS = ("blobs", "moons", "anisotropic", "rings")


def make_toy_dataset(name: str, n_samples: int = 600, *, overlap: float = 1.0, outlier_fraction: float = 0.05,
                     n_blobs: int = 4, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 2-D point set with true classes.

    Parameters
    ----------
    name : ``blobs`` (Gaussian blobs), ``moons``, ``anisotropic`` (sheared blobs) or
        ``rings`` (concentric circles).
    n_samples : 200 .. 5,000 points, outliers included.
    overlap : spread of the classes (blob std, moon / ring noise scale); 1 is moderate.
    outlier_fraction : share of points drawn uniformly over the bounding box, in
        [0, 0.5); they get label -1.
    n_blobs : classes for ``blobs`` and ``anisotropic``.

    Returns
    -------
    points : (n_samples, 2) float32
    labels : (n_samples,) int64, -1 for outliers
    """
    from sklearn import datasets

    name = v.check_choice(name, "data set", TOY_DATASETS)
    if not (isinstance(n_samples, (int, np.integer)) and 200 <= n_samples <= 5000):
        raise ValueError(f"n_samples must be an integer in [200, 5000], got {n_samples!r}")
    if not 0 <= outlier_fraction < 0.5:
        raise ValueError(f"outlier_fraction must be in [0, 0.5), got {outlier_fraction!r}")
    if not overlap > 0:
        raise ValueError(f"overlap must be > 0, got {overlap!r}")
    rng = np.random.default_rng(random_state)
    n_outliers = int(round(n_samples * outlier_fraction))
    n_clean = n_samples - n_outliers
    seed = int(rng.integers(2**31 - 1))
    if name in ("blobs", "anisotropic"):
        points, labels = datasets.make_blobs(n_clean, centers=n_blobs, cluster_std=1.2 * overlap,
                                             center_box=(-8, 8), random_state=seed)
        if name == "anisotropic":
            points = points @ np.array([[0.6, -0.6], [-0.4, 0.8]])
    elif name == "moons":
        points, labels = datasets.make_moons(n_clean, noise=0.08 * overlap, random_state=seed)
    else:
        points, labels = datasets.make_circles(n_clean, noise=0.05 * overlap, factor=0.5, random_state=seed)
    low, high = points.min(axis=0), points.max(axis=0)
    outliers = rng.uniform(low - 0.1 * (high - low), high + 0.1 * (high - low), size=(n_outliers, 2))
    order = rng.permutation(n_samples)
    points = np.concatenate((points, outliers))[order]
    labels = np.concatenate((labels, np.full(n_outliers, -1)))[order]
    return points.astype(np.float32), labels.astype(np.int64)


def lift_to_sphere(points: np.ndarray) -> np.ndarray:
    """(n, 2) -> (n, 3) unit vectors: standardise, scale so the median point sits at
    radius 1, then the inverse stereographic projection (conformal)."""
    points = np.asarray(points, dtype=np.float64)
    centred = points - points.mean(axis=0)
    scale = np.median(np.linalg.norm(centred, axis=1)) or 1.0
    p = centred / scale
    r2 = np.sum(p * p, axis=1, keepdims=True)
    return (np.hstack((2 * p, r2 - 1)) / (r2 + 1)).astype(np.float32)


@dataclass(frozen=True)
class Walkthrough:
    """A BiLAF run on 2-D points with everything the Learn page draws.

    ``result.traces[c]`` holds cluster c's IDC inclusion order and rounds, kept and
    removed samples, budget, removal radius (a count) and every pick with its score,
    opponent and the samples the previous pick's radius dropped.
    """

    points: np.ndarray
    cores: np.ndarray
    result: BoundaryResult
    params: dict

    @property
    def core_points(self) -> np.ndarray:
        return self.points[self.cores]


def walkthrough(points: np.ndarray, budget: int, *, n_cores: int, core_method: str = "kmeans",
                cores: np.ndarray | None = None, random_state: int = 0, **stage2) -> Walkthrough:
    """Stage 1 on :func:`lift_to_sphere` (unless ``cores`` are given), then stage 2 on
    the raw 2-D points with ``keep_trace=True``. ``stage2`` takes :func:`select`'s
    stage-2 keywords (variant, k_neighbors, include_ratio, removal_ratio,
    opponent_penalty, denoise, criterion, process); they are validated as there."""
    unknown = set(stage2) - set(STAGE2_PARAMS)
    if unknown:
        raise ValueError(f"unknown stage-2 option(s): {', '.join(sorted(unknown))}")
    params = SelectionParams(n_cores=n_cores, core_method=core_method, normalize=False, random_state=random_state,
                             **stage2)
    points, budget, n_cores, _, given = _validate(points, budget, params, cores)
    cores = given if given is not None else select_cores(lift_to_sphere(points), n_cores, method=core_method,
                                                         random_state=random_state)
    result = select_boundary(points, cores, budget, keep_trace=True, **stage2)
    return Walkthrough(points, cores, result, {"budget": budget, "n_cores": n_cores, "core_method": core_method,
                                               "random_state": random_state, **stage2})


def compare_methods(points: np.ndarray, budget: int, methods=("activeft", "kmeans", "random"), *,
                    random_state: int = 0) -> dict[str, np.ndarray]:
    """Indices each stage-1 method picks with the whole budget, on the lifted points."""
    lifted = lift_to_sphere(points)
    return {m: select(lifted, budget, method=m, random_state=random_state).indices for m in methods}


def region_extent(points: np.ndarray, *, margin: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The plane :func:`region_grid` covers: the points' bounding box widened by ``margin``
    of its size on every side, as (low, high) corners, each of shape (2,)."""
    low, high = points.min(axis=0), points.max(axis=0)
    pad = margin * (high - low)
    return low - pad, high + pad


def region_grid(points: np.ndarray, core_points: np.ndarray, *,
                resolution: int = 150) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pseudo-class regions over :func:`region_extent`: (xs, ys, cluster id per grid
    cell), each cell assigned to its nearest core as stage 2 assigns samples (ties: lower core id)."""
    low, high = region_extent(points)
    xs = np.linspace(low[0], high[0], resolution)
    ys = np.linspace(low[1], high[1], resolution)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)
    both = np.concatenate((core_points.astype(np.float32), grid))
    labels = assign_clusters(both, np.arange(core_points.shape[0]), exact=True).labels[core_points.shape[0]:]
    return xs, ys, labels.reshape(resolution, resolution)
