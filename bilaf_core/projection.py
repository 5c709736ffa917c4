"""2-D maps of a feature set for display: PCA (fast, exact) now; UMAP / t-SNE later."""

from __future__ import annotations

import numpy as np

__all__ = ["project_2d"]


def project_2d(features: np.ndarray, *, method: str = "pca", random_state: int = 0) -> np.ndarray:
    """Project (N, d) features to (N, 2) float32 for plotting."""
    if method != "pca":
        raise ValueError(f"projection method must be 'pca' (UMAP and t-SNE are not available yet), got {method!r}")
    from sklearn.decomposition import PCA

    n_components = min(2, features.shape[0], features.shape[1])
    coords = PCA(n_components=n_components, random_state=random_state).fit_transform(features)
    if coords.shape[1] < 2:  # d = 1 or N = 1: pad so there is always an x and a y
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords.astype(np.float32)
