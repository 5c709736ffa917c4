"""TypiClust, ProbCover, the diagnostics and Selection save/load."""

import json

import numpy as np
import pytest

from bilaf_core import BiLAF, Selection, diagnostics, emd_proxy, select
from bilaf_core.baselines import estimate_probcover_delta, probcover, typiclust
from bilaf_core.metrics import ball_coverage


def test_probcover_covers_each_blob_once(blobs):
    chosen = probcover(blobs, 3, delta=4.0)
    assert np.unique(chosen // 60).size == 3


def test_probcover_delta_is_below_the_gap_between_blobs(blobs):
    delta = estimate_probcover_delta(blobs, n_classes=3, random_state=0)
    assert 0 < delta < 7.0


def test_probcover_default_pseudo_classes_are_round_n_over_200_as_documented(monkeypatch):
    import bilaf_core.baselines as baselines

    seen = []
    monkeypatch.setattr(baselines, "estimate_probcover_delta", lambda f, n_classes, random_state: seen.append(n_classes) or 0.5)
    features = np.random.default_rng(0).standard_normal((650, 3)).astype(np.float32)
    probcover(features, 5, random_state=0)
    assert seen == [3]  # round(650 / 200) = 3; it was computed with ceil (4)
    assert [baselines.probcover_n_classes(n) for n in (1, 399, 401, 650, 10_000)] == [2, 2, 2, 3, 50]


def test_typiclust_takes_dense_points_from_each_cluster(blobs):
    chosen = typiclust(blobs, 3, random_state=0)
    assert np.unique(chosen // 60).size == 3
    centers = np.array([[0, 0], [10, 0], [0, 10]])
    # the most typical point of a Gaussian blob lies near its centre
    assert np.linalg.norm(blobs[chosen] - centers[chosen // 60], axis=1).max() < 1.0


def test_emd_proxy_and_coverage_by_hand():
    points = np.array([[0.0], [1.0], [3.0], [10.0]], dtype=np.float32)
    # distances to the nearest of {0, 10}: 0, 1, 3, 0 -> mean 1
    assert emd_proxy(points, np.array([0, 3])) == pytest.approx(1.0)
    assert ball_coverage(points, np.array([0, 3]), 1.5) == pytest.approx(0.75)


def test_diagnostics_with_labels_and_clusters(blobs):
    selection = select(blobs, 9, n_cores=3, core_method="kmeans", random_state=0)
    report = diagnostics(blobs, selection.indices, cluster=selection.cluster, labels=np.arange(180) // 60)
    assert report["classes_covered"] == 3 and report["n_classes"] == 3
    assert sum(report["per_class"].values()) == 9 and sum(report["per_cluster"].values()) == 9
    assert 0 < report["coverage"] <= 1


def test_selection_save_load_roundtrip_leaves_no_temporary_files(tmp_path, blobs):
    selection = select(blobs, 9, n_cores=3, core_method="kmeans", random_state=0)
    json_path, npz_path = selection.save(tmp_path / "sel.json")
    loaded = Selection.load(json_path)
    for name in Selection._ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(selection, name))
    assert loaded.params == json.loads(json.dumps(selection.params))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sel.json", "sel.npz"]


def test_save_failure_keeps_the_previous_file(tmp_path, blobs, monkeypatch):
    selection = select(blobs, 9, n_cores=3, core_method="kmeans", random_state=0)
    json_path, _ = selection.save(tmp_path / "sel.json")
    before = json_path.read_text()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dumps", disk_full)
    with pytest.raises(OSError):
        selection.save(tmp_path / "sel.json")
    assert json_path.read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_estimator_wraps_select(blobs):
    model = BiLAF(9, n_cores=3, core_method="kmeans", random_state=0).fit(blobs)
    np.testing.assert_array_equal(model.indices_, select(blobs, 9, n_cores=3, core_method="kmeans", random_state=0).indices)
    assert model.labels_.shape == (180,) and model.get_params()["budget"] == 9
    with pytest.raises(ValueError, match="Invalid parameter 'colour'"):  # scikit-learn's BaseEstimator
        model.set_params(colour="red")
    with pytest.raises(TypeError, match="unknown parameter"):
        BiLAF(9, colour="red")
    from sklearn.base import clone

    assert clone(model).get_params() == model.get_params()


@pytest.mark.parametrize("chunk_rows", [100, None])
def test_knn_distances_ranked_on_squares_equal_the_sorted_distances_exactly(monkeypatch, chunk_rows):
    from bilaf_core import distances
    from bilaf_core.distances import knn_distances, pairwise_distances

    if chunk_rows:  # many chunks
        monkeypatch.setattr(distances, "CHUNK_ELEMENTS", 40 * chunk_rows)

    rng = np.random.default_rng(5)
    pool = np.vstack([rng.standard_normal((700, 9)).astype(np.float32)] * 2)  # duplicates: zero distances tie
    queries = pool[rng.choice(1400, 40, replace=False)]
    step = chunk_rows or len(pool)  # the distances as the chunks' products give them
    every = np.hstack([pairwise_distances(queries, pool[s : s + step], exact=False) for s in range(0, len(pool), step)])
    expected = np.sort(every, axis=1)[:, 1:8].astype(np.float64)
    np.testing.assert_array_equal(knn_distances(queries, pool, 7), expected)


def test_knn_distances_hand_checked_and_the_label_free_diagnostics():
    from bilaf_core.distances import knn_distances
    from bilaf_core.metrics import budget_radius, pseudo_class_kl, selection_diagnostics, typicality

    line = np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32)
    np.testing.assert_allclose(knn_distances(line, line, 2), [[1, 3], [1, 2], [2, 3], [4, 6]])
    np.testing.assert_allclose(knn_distances(line[:1], line, 9), [[1, 3, 7]])  # k capped at N - 1
    # typicality: 1 / mean distance to the 2 nearest others, averaged over the selected
    assert typicality(line, np.array([1, 3]), k=2) == pytest.approx((1 / 1.5 + 1 / 5.0) / 2)
    # B = 2 of 4: the radius to the ceil(4 / 2) = 2nd neighbour, median over the pool (3, 2, 3, 6)
    assert budget_radius(line, 2) == pytest.approx(3.0)
    pseudo = np.array([0, 0, 1, 1])
    assert pseudo_class_kl(pseudo, np.array([0, 2])) == pytest.approx(0.0)  # one of each, as the pool
    assert pseudo_class_kl(pseudo, np.array([0, 1])) > pseudo_class_kl(pseudo, np.array([0, 2]))
    report = selection_diagnostics(line, np.array([1, 3]), radius=1.0, pseudo=pseudo)
    assert report["emd_proxy"] == pytest.approx((1 + 0 + 2 + 0) / 4) and report["coverage"] == 0.75
    assert set(report) == {"emd_proxy", "coverage", "budget_coverage", "typicality", "pseudo_class_kl"}


def test_guidance_names_a_predictor_only_when_every_data_set_agrees():
    from bilaf_core.guidance import guidance

    measured = {"A": {"1": {"emd_proxy": {"rho": -0.8, "n": 20}, "coverage": {"rho": 0.3, "n": 20}},
                      "5": {"emd_proxy": {"rho": -0.2, "n": 20}, "coverage": {"rho": 0.4, "n": 20}}},
                "B": {"1": {"emd_proxy": {"rho": -0.6, "n": 20}, "coverage": {"rho": -0.7, "n": 20}},
                      "5": {"emd_proxy": {"rho": 0.1, "n": 20}, "coverage": {"rho": 0.45, "n": 20}}}}
    near_one = guidance(0.012, measurements=measured)  # 1.2 % -> the 1 % measurements
    assert near_one.diagnostic == "emd_proxy" and near_one.budget_percent == 1.0
    assert "lower is better" in near_one.message and "-0.80 on A" in near_one.message
    at_five = guidance(0.04, measurements=measured)
    assert at_five.diagnostic is None and at_five.budget_percent == 5.0  # coverage agrees in sign, but |rho| < 0.5
    assert "No label-free diagnostic predicted" in at_five.message
    assert "at 5 % of the pool (the measured budget nearest to this one, 4 %)" in at_five.message
    assert "at 1 % of the pool:" in guidance(0.0102, measurements=measured).message  # a measured budget: no aside
    assert guidance(0.01, measurements={}) is None
    far = guidance(0.5, measurements=measured)  # 50 % of the pool: nothing was measured near it
    assert far.diagnostic is None and "No benchmark measured" in far.message and "near 50 %" in far.message
    assert "near 100 % of the pool" in guidance(1.0, measurements=measured).message  # was "near 1e+02 %"
    from bilaf_core.guidance import DIAGNOSTIC_NAMES
    from bilaf_core.metrics import LABEL_FREE

    assert set(DIAGNOSTIC_NAMES) == set(LABEL_FREE)  # a name for every diagnostic measured


def test_selection_members_filter_and_order_and_one_cluster_view():
    features = np.random.default_rng(3).standard_normal((120, 4)).astype(np.float32)
    result = select(features, 20, n_cores=4, core_method="kmeans", random_state=0)
    everyone = result.members()
    assert sorted(everyone.tolist()) == list(range(120))
    np.testing.assert_array_equal(everyone[:20], result.indices)  # selected first, in selection order
    rest = everyone[20:]
    assert np.all(np.diff(rest) > 0)  # then the others ascending
    boundary_in_2 = result.members(roles=("boundary",), cluster=2)
    assert set(boundary_in_2) == set(np.flatnonzero((result.role == "boundary") & (result.cluster == 2)))
    some = np.array([5, 3, int(result.indices[7]), int(result.indices[1])])
    np.testing.assert_array_equal(result.members(some), [result.indices[1], result.indices[7], 3, 5])
    picks, removed = result.cluster_view(2)
    assert picks[0] == result.cores[2] and set(picks) == set(result.indices[result.cluster[result.indices] == 2])
    assert set(removed) == set(np.flatnonzero((result.role == "removed") & (result.cluster == 2)))


def test_coverage_radius_is_kept_on_disk_per_feature_set(tmp_path, monkeypatch):
    import bilaf_core.metrics as metrics

    features = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    first = metrics.default_coverage_radius(features, cache_dir=tmp_path)
    assert first == metrics.default_coverage_radius(features)
    def computed_again(*args, **kwargs):
        raise LookupError("computed again")

    monkeypatch.setattr(metrics, "knn_distances", computed_again)
    assert metrics.default_coverage_radius(features, cache_dir=tmp_path) == first  # a restarted app
    with pytest.raises(LookupError, match="computed again"):  # other features: not the cached value
        metrics.default_coverage_radius(features[:200], cache_dir=tmp_path)


def test_exported_indices_and_marks_change_by_hand():
    """Selection [5, 2, 9]; exclude 2 and 7 (7 not selected), force 9 (already in), 1 and 7
    (excluded wins): the export is 5, 9, then the forced 1; one taken out, one added."""
    from bilaf_core.export import exported_indices, marks_change, selection_table

    result = select(np.random.default_rng(0).standard_normal((12, 3)), 3, method="random")
    result.indices[:] = [5, 2, 9]
    exported = exported_indices(result, excluded={2, 7}, forced={9, 1, 7})
    assert exported.tolist() == [5, 9, 1]
    assert marks_change(result, exported) == (1, 1)
    assert marks_change(result, exported_indices(result)) == (0, 0)
    assert selection_table(result, np.arange(12).astype(str), excluded={2, 7}, forced={9, 1, 7})["index"].tolist() \
        == exported.tolist()


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_estimated_diagnostics_of_a_random_selection_are_unbiased_at_its_own_seed(seed):
    """The estimate's pool rows were default_rng(0).choice(N, M) and random selection at
    seed 0 default_rng(0).choice(N, B): the same draws, so every random pick lay in the
    estimate's rows at distance 0 (CIFAR-10 at B = 2,500: EMD 0.36 against the pool's 0.69,
    better than ActiveFT's; a newcomer's walk of the Compare page)."""
    from bilaf_core.core import random_cores

    features = np.random.default_rng(3).normal(size=(20_000, 16)).astype(np.float32)
    picks = random_cores(features.shape[0], 1_000, random_state=seed)
    full = diagnostics(features, picks, radius=3.0)
    estimate = diagnostics(features, picks, radius=3.0, max_pool_samples=2_000, random_state=seed)
    assert estimate["estimated_on"] == 2_000
    assert estimate["emd_proxy"] == pytest.approx(full["emd_proxy"], rel=0.05)
    assert estimate["coverage"] == pytest.approx(full["coverage"], abs=0.04)
