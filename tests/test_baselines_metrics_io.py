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
    with pytest.raises(ValueError, match="unknown parameter"):
        model.set_params(colour="red")
