"""Property tests (hypothesis): every selection is valid, whatever the input.

Set HYPOTHESIS_PROFILE=long for the 2,000-example fuzz run; CI uses the default.
"""

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bilaf_core import METHODS, select

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@st.composite
def problems(draw):
    n = draw(st.integers(1, 70))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["gauss", "grid", "identical", "blobs"]))
    if kind == "gauss":
        features = rng.standard_normal((n, d))
    elif kind == "grid":  # many exact ties and duplicates
        features = rng.integers(0, 3, size=(n, d)).astype(float)
    elif kind == "identical":
        features = np.ones((n, d))
    else:
        features = rng.standard_normal((n, d)) * 0.1 + rng.integers(0, 4, size=(n, 1)) * 5.0
    budget = draw(st.integers(1, n))
    params = {
        "n_cores": draw(st.one_of(st.integers(1, budget), st.just("auto"))),
        "core_method": draw(st.sampled_from(["random", "kmeans", "fds"])),
        "variant": draw(st.sampled_from(["paper", "reference"])),
        "k_neighbors": draw(st.integers(1, 12)),
        "include_ratio": draw(st.sampled_from([0.05, 0.1, 0.3, 1.0])),
        "removal_ratio": draw(st.sampled_from([0.0, 0.1, 0.5, 0.9])),
        "opponent_penalty": draw(st.sampled_from([1.0, 1.1, 2.0])),
        "denoise": draw(st.sampled_from(["idc", "density", "distance", "none"])),
        "criterion": draw(st.sampled_from(["boundary_score", "distance"])),
        "process": draw(st.sampled_from(["iterative", "one_shot"])),
        "random_state": seed,
    }
    return features.astype(draw(st.sampled_from([np.float16, np.float32, np.float64]))), budget, params


def check_valid(selection, n, budget):
    idx = selection.indices
    assert idx.dtype == np.int64 and idx.size == budget
    assert np.unique(idx).size == budget
    assert idx.min() >= 0 and idx.max() < n
    assert np.isin(selection.cores, idx).all()
    role = selection.role
    assert role.shape == (n,)
    np.testing.assert_array_equal(np.sort(np.flatnonzero(np.isin(role, ["core", "boundary", "selected"]))), np.sort(idx))
    np.testing.assert_array_equal(np.flatnonzero(role == "removed"), np.sort(selection.removed))
    assert set(np.flatnonzero(role == "core")) == set(selection.cores.tolist())
    assert selection.boundary_score.shape == (budget,) and selection.opponent.shape == (budget,)


@given(problems())
def test_bilaf_selection_is_always_valid_and_deterministic(problem):
    features, budget, params = problem
    first = select(features, budget, **params)
    check_valid(first, features.shape[0], budget)
    assert first.allocation.sum() == budget and (first.allocation >= 1).all()
    assert first.cluster.min() >= 0 and np.isnan(first.boundary_score[np.isin(first.indices, first.cores)]).all()
    again = select(features, budget, **params)
    np.testing.assert_array_equal(first.indices, again.indices)


@settings(max_examples=25)
@given(problems(), st.sampled_from([m for m in METHODS if m not in ("bilaf", "activeft")]))
def test_every_method_returns_exactly_budget_distinct(problem, method):
    features, budget, params = problem
    selection = select(features, budget, method=method, random_state=params["random_state"])
    check_valid(selection, features.shape[0], budget)


def test_activeft_method_and_core_method_properties():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((300, 8)).astype(np.float32)
    first = select(features, 40, n_cores=10, random_state=5)
    check_valid(first, 300, 40)
    np.testing.assert_array_equal(first.indices, select(features, 40, n_cores=10, random_state=5).indices)
    alone = select(features, 12, method="activeft", random_state=5)
    check_valid(alone, 300, 12)


@st.composite
def anything(draw):
    """Like :func:`problems`, but each input is, one time in ten, invalid: NaN / Inf rows,
    empty or 1-D arrays, budgets and K out of range, ratios outside their range, unknown
    names, odd seeds. About half the cases are fully valid."""

    def sometimes_bad(valid, invalid):
        return draw(st.integers(0, 9).flatmap(lambda r: invalid if r == 0 else valid))

    features, budget, params = draw(problems())
    features = features.astype(np.float64)
    n, d = features.shape
    features = sometimes_bad(st.just(features), st.sampled_from([
        np.where(np.arange(n * d).reshape(n, d) == 0, np.nan, features), np.full((n, d), np.inf),
        features.reshape(-1), np.empty((0, d)), np.empty((n, 0))]))
    budget = sometimes_bad(st.just(budget), st.sampled_from([0, -1, n + 1, 2.5, None, "ten"]))
    params["n_cores"] = sometimes_bad(st.just(params["n_cores"]), st.sampled_from([0, -2, n + 5, 1.5]))
    for name, bad in (("include_ratio", [0.0, 1.5, -0.1, float("nan")]), ("removal_ratio", [1.0, -0.5, float("nan")]),
                      ("opponent_penalty", [0.5, -1.0, float("nan")]), ("k_neighbors", [0, -3, 2.5]),
                      ("variant", ["other"]), ("denoise", ["?"]), ("core_method", ["magic"]),
                      ("random_state", [-1, 1.5, "seed"])):
        params[name] = sometimes_bad(st.just(params[name]), st.sampled_from(bad))
    params["method"] = sometimes_bad(st.sampled_from(["bilaf", "bilaf", "kmeans", "fds", "random", "typiclust"]),
                                     st.just("magic"))
    return features.astype(draw(st.sampled_from([np.float16, np.float32, np.float64]))), budget, params


@given(anything())
def test_fuzz_any_input_gives_a_valid_selection_or_a_value_error(case):
    features, budget, params = case
    try:
        selection = select(features, budget, **params)
    except ValueError as exc:
        assert str(exc)  # a message, never an empty error
        return
    check_valid(selection, features.shape[0], budget)
    if params["method"] == "bilaf":
        np.testing.assert_array_equal(selection.indices, select(features, budget, **params).indices)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=40), st.integers(0, 45), st.randoms(use_true_random=False))
def test_smallest_first_is_a_lexsort_prefix(keys, m, rnd):
    # Stage 2's partial sort (each pick's removal radius, each IDC round) must take the
    # same samples in the same order as a full sort by (key, id), ties included.
    from bilaf_core._boundary_kernel import smallest_first

    keys = np.array(keys, dtype=np.float32)
    ids = np.array(rnd.sample(range(1000), keys.size))
    np.testing.assert_array_equal(smallest_first(keys, ids, m), np.lexsort((ids, keys))[:m])
