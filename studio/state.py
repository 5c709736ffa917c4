"""Cached data access for the pages: the pool, its features, cores, selections, maps.

``st.cache_data`` keys on cheap values (names, parameters), never on arrays, so a rerun
with the same widgets is instant and a stage-2 slider never recomputes stage 1.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from bilaf_core import select
from bilaf_core.core import l2_normalize, select_cores
from bilaf_core.data import load_pool
from bilaf_core.features import extract_features, load_backbone
from bilaf_core.projection import project_2d

DEFAULT_DATASET = "digits"
DEFAULT_BACKBONE = "pixels"


@st.cache_resource(show_spinner="Loading the image pool ...")
def pool(dataset: str):
    return load_pool(dataset)


@st.cache_data(show_spinner="Computing features ...")
def features(dataset: str, backbone: str) -> np.ndarray:
    """(N, d) features of the pool (disk-cached by bilaf_core as well)."""
    return np.asarray(extract_features(pool(dataset), load_backbone(backbone)).features)


@st.cache_data(show_spinner="Stage 1: selecting core samples ...")
def cores(dataset: str, backbone: str, n_cores: int, core_method: str, seed: int) -> np.ndarray:
    return select_cores(l2_normalize(features(dataset, backbone)), n_cores, method=core_method, random_state=seed)


@st.cache_data(show_spinner="Selecting ...")
def selection(dataset: str, backbone: str, budget: int, params: tuple):
    """Run the selection; BiLAF reuses the cached stage-1 cores."""
    options = dict(params)
    data = features(dataset, backbone)
    if options["method"] == "bilaf":
        n_cores = options.pop("n_cores")
        if n_cores > budget:  # let select() phrase the error
            return select(data, budget, n_cores=n_cores, **options)
        options["cores"] = cores(dataset, backbone, n_cores, options.pop("core_method"), options["random_state"])
    else:
        options.pop("n_cores")
        options.pop("core_method")
    return select(data, budget, **options)


@st.cache_data(show_spinner="Projecting to 2-D ...")
def projection(dataset: str, backbone: str, method: str = "pca") -> np.ndarray:
    return project_2d(features(dataset, backbone), method=method)
