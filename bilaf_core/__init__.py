"""bilaf_core: BiLAF and ActiveFT active-finetuning selection, as a library.

>>> import numpy as np, bilaf_core
>>> features = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32)
>>> selection = bilaf_core.select(features, 30, n_cores=6, core_method="kmeans", random_state=0)
>>> selection.indices.shape
(30,)
"""

from .auto import auto_n_cores
from .boundary import select_boundary
from .core import select_cores
from .errors import Cancelled
from .metrics import ball_coverage, diagnostics, emd_proxy
from .selection import METHODS, ROLES, BiLAF, Selection, default_n_cores, select, stage2_geometry

__version__ = "0.1.0"

__all__ = [
    "select",
    "stage2_geometry",
    "Selection",
    "BiLAF",
    "METHODS",
    "ROLES",
    "default_n_cores",
    "auto_n_cores",
    "Cancelled",
    "select_cores",
    "select_boundary",
    "diagnostics",
    "emd_proxy",
    "ball_coverage",
    "__version__",
]
