"""The `reference` variant reproduces the authors' density_cluster.py index for index."""

import json

import numpy as np
import pytest

from bilaf_core import select
from bilaf_core.boundary import select_boundary
from conftest import DATA

CASES = [1000, 1001, 1002, 1004, 1005, 1006]


def _load(case):
    folder = DATA / "reference_vectors"
    params = json.loads((folder / f"case_{case}.json").read_text())
    with np.load(folder / f"case_{case}.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return params, arrays


@pytest.mark.parametrize("case", CASES)
def test_reference_variant_reproduces_selection_allocation_and_denoising(case):
    params, data = _load(case)
    result = select_boundary(
        data["features"], data["cores"], params["budget"], variant="reference",
        k_neighbors=params["k_neighbors"], include_ratio=params["include_ratio"],
        removal_ratio=params["removal_ratio"], opponent_penalty=params["opponent_penalty"], keep_trace=True,
    )
    np.testing.assert_array_equal(result.indices, data["selected"])
    np.testing.assert_array_equal(result.allocation, data["allocation"])
    for trace, expected in zip(result.traces, params["denoised_clusters_in_inclusion_order"]):
        np.testing.assert_array_equal(trace.kept, np.asarray(expected, dtype=np.int64))


@pytest.mark.parametrize("case", CASES[:2])
def test_public_select_matches_reference_given_cores(case):
    params, data = _load(case)
    selection = select(
        data["features"], params["budget"], cores=data["cores"], variant="reference",
        k_neighbors=params["k_neighbors"], include_ratio=params["include_ratio"],
        removal_ratio=params["removal_ratio"], opponent_penalty=params["opponent_penalty"],
    )
    np.testing.assert_array_equal(selection.indices, data["selected"])
    assert selection.params["normalize"] is False  # the reference works on raw features


@pytest.mark.parametrize("case", CASES)
def test_paper_variant_is_valid_on_reference_inputs(case):
    params, data = _load(case)
    selection = select(data["features"], params["budget"], cores=data["cores"])
    assert selection.indices.size == params["budget"]
    assert np.unique(selection.indices).size == params["budget"]
    assert np.isin(data["cores"], selection.indices).all()
