"""Hand-checked small cases for every step of stage 2 (boundary.py)."""

import numpy as np
import pytest

from bilaf_core.boundary import (
    BoundaryScorer,
    ClusterPicker,
    DistanceScorer,
    LocalDistances,
    allocate_budget,
    assign_clusters,
    denoise_cluster,
    idc_order,
    select_boundary,
)

# A 1-D cluster whose IDC order is worked out by hand in test_idc_order_by_hand.
CLUSTER_1D = np.array([0.0, 0.1, 0.2, 0.3, 5.0, 5.1, 0.35, 9.0, 0.15, 0.25], dtype=np.float32)[:, None]


@pytest.mark.parametrize("exact", [True, False])
def test_assignment_nearest_core_ties_to_lower_id(exact):
    features = np.array([[0.0], [10.0], [5.0], [2.0], [8.0]], dtype=np.float32)
    labels = assign_clusters(features, np.array([0, 1]), exact=exact).labels
    np.testing.assert_array_equal(labels, [0, 1, 0, 0, 1])  # 5.0 is equidistant: lower id


def test_assignment_keeps_duplicate_cores_in_their_own_clusters():
    features = np.zeros((4, 3), dtype=np.float32)
    labels = assign_clusters(features, np.array([1, 3])).labels
    assert labels[1] == 0 and labels[3] == 1


@pytest.mark.parametrize("exact", [True, False])
def test_idc_order_by_hand(exact):
    # m = 2 per round, k = 2. Round 1: core 0 and its nearest, 1 (0.1).
    # Round 2: mean distance to {0, 0.1}: 8 (0.15) -> 0.10, 2 (0.2) -> 0.15.
    # Round 3: two nearest of {0, .1, .15, .2}: 9 (.25) -> .075, 3 (.3) -> .125.
    # Round 4: 6 (.35) -> .075, 4 (5.0) -> 4.725. Round 5: 5 and 7.
    order, rounds = idc_order(LocalDistances(CLUSTER_1D, exact=exact), 0, k_neighbors=2, include_ratio=0.2, reference=False)
    np.testing.assert_array_equal(order, [0, 1, 8, 2, 9, 3, 6, 4, 5, 7])
    np.testing.assert_array_equal(rounds, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])


def test_idc_removal_keeps_floor_n_times_one_minus_ratio():
    den = denoise_cluster(LocalDistances(CLUSTER_1D, exact=False), 0, method="idc", k_neighbors=2,
                          include_ratio=0.2, removal_ratio=0.2, reference=False)
    np.testing.assert_array_equal(den.kept, [0, 1, 8, 2, 9, 3, 6, 4])
    np.testing.assert_array_equal(np.sort(den.removed), [5, 7])


def test_reference_idc_drops_leftovers_and_skips_small_clusters():
    points = np.arange(13, dtype=np.float32)[:, None]
    # n = 13, m = int(1.3) = 1: 13 rounds, nothing left over; with P_in = 0.3, m = 3:
    # only 3 * floor(13 / 3) = 12 samples are ever included, one is dropped.
    den = denoise_cluster(LocalDistances(points, exact=True), 0, method="idc", k_neighbors=10,
                          include_ratio=0.3, removal_ratio=0.0, reference=True)
    assert den.order.size == 12 and den.dropped.size == 1
    small = denoise_cluster(LocalDistances(points[:9], exact=True), 4, method="idc", k_neighbors=10,
                            include_ratio=0.1, removal_ratio=0.5, reference=True)
    np.testing.assert_array_equal(small.kept, np.arange(9))  # untouched, index order


@pytest.mark.parametrize("method,expected_removed", [("distance", [7, 5]), ("density", [7, 4]), ("none", [])])
def test_other_denoisers_by_hand(method, expected_removed):
    # distance: 9.0 and 5.1 are farthest from the core at 0. density (k = 2): 9.0 ->
    # (3.9 + 4.0) / 2 = 3.95 and 5.0 -> (0.1 + 4.0) / 2 = 2.05 are the loosest.
    den = denoise_cluster(LocalDistances(CLUSTER_1D, exact=False), 0, method=method, k_neighbors=2,
                          include_ratio=0.1, removal_ratio=0.2, reference=False)
    assert sorted(den.removed.tolist()) == sorted(expected_removed)
    assert den.kept[0] == 0


def test_allocation_by_hand():
    # floors [2, 1, 0]; one leftover unit to the smallest allocation (cluster 2)
    np.testing.assert_array_equal(allocate_budget(4, np.array([5, 3, 2])), [2, 1, 1])
    # floors [2, 0, 0], leftover to cluster 1 (tie on size: lower id), then cluster 2
    # still has 0 and takes a unit from the largest allocation
    np.testing.assert_array_equal(allocate_budget(3, np.array([100, 1, 1])), [1, 1, 1])
    # ties among equal allocations go to the larger proportion
    np.testing.assert_array_equal(allocate_budget(3, np.array([1, 2, 1])), [1, 1, 1])
    np.testing.assert_array_equal(allocate_budget(5, np.array([3, 4, 3])), [2, 2, 1])


def test_allocation_reference_floors_in_floating_point():
    # 0.29 * 100 = 28.999999999999996 in floating point: the reference floors it to 28
    # and hands the unit back through the leftover rule; exact arithmetic gives 29.
    np.testing.assert_array_equal(allocate_budget(100, np.array([29, 71]), reference=False), [29, 71])
    np.testing.assert_array_equal(allocate_budget(100, np.array([29, 71]), reference=True), [29, 71])
    np.testing.assert_array_equal(allocate_budget(10, np.array([29, 71]), reference=True), [3, 7])


def _scorer(dynamic):
    d_intra = np.array([1.0, 1.0])
    opponents = np.array([[1, 2], [2, 1]])
    distances = np.array([[2.0, 3.0], [0.5, 4.0]])
    return BoundaryScorer(d_intra, opponents, distances, n_cores=3, penalty=1.1, dynamic=dynamic)


def test_boundary_score_eq7_by_hand():
    scores, opponents = _scorer(True).scores(np.array([0, 1]))
    np.testing.assert_allclose(scores, [(2 - 1) / 2, (0.5 - 1) / 1])
    np.testing.assert_array_equal(opponents, [1, 2])


def test_opponent_penalty_switches_the_opponent():
    scorer = _scorer(True)
    scorer.record_pick(1)
    np.testing.assert_allclose(scorer.scores(np.array([0]))[0], [(2.2 - 1) / 2])
    scorer.record_pick(1)
    scorer.record_pick(1)  # factor 1.331: (2.662 - 1) / 2 = 0.831 > (3 - 1) / 3
    score, opponent = scorer.scores(np.array([0]))
    np.testing.assert_allclose(score, [2 / 3])
    assert opponent[0] == 2
    fixed = _scorer(False)  # the reference keeps the nearest opponent whatever the penalty
    for _ in range(3):
        fixed.record_pick(1)
    score, opponent = fixed.scores(np.array([0]))
    np.testing.assert_allclose(score, [(2 * 1.1 * 1.1 * 1.1 - 1) / 2])
    assert opponent[0] == 1


def _random_scorer(rng, n: int, k: int, listed: int, penalty: float):
    """A dynamic scorer over random distances to k cores (core 0 is every member's own),
    each member listing its ``listed`` nearest; returns it with all distances and d_intra."""
    dist_all = rng.uniform(0.5, 3.0, size=(n, k))
    dist_all[:, 0] = np.inf  # own core
    order = np.argsort(dist_all, axis=1)[:, :listed]
    d_intra = rng.uniform(0.5, 2.0, size=n)
    scorer = BoundaryScorer(d_intra, order, np.take_along_axis(dist_all, order, axis=1), n_cores=k, penalty=penalty,
                            dynamic=True, all_opponent_distances=lambda pos: dist_all[pos])
    return scorer, dist_all, d_intra


def _assert_brute_force(scorer, dist_all, d_intra, scores, opponents) -> None:
    """Scores and opponents equal Eq. 7 minimised over every core, with the scorer's factors."""
    with np.errstate(invalid="ignore"):
        brute = (dist_all * scorer.factor[None, :-1] - d_intra[:, None]) / np.maximum(dist_all, d_intra[:, None])
    brute[:, 0] = np.inf  # the own core is no opponent
    np.testing.assert_allclose(scores, brute.min(axis=1))
    np.testing.assert_array_equal(opponents, brute.argmin(axis=1))


def test_pruned_opponent_search_equals_brute_force():
    rng = np.random.default_rng(3)
    n, k = 300, 40
    scorer, dist_all, d_intra = _random_scorer(rng, n, k, listed=5, penalty=1.5)
    for opponent in rng.integers(1, k, size=60):
        scorer.record_pick(int(opponent))
    _assert_brute_force(scorer, dist_all, d_intra, *scorer.scores(np.arange(n)))


def test_removal_radius_and_iterative_picks_by_hand():
    points = np.arange(10, dtype=np.float32)[:, None]  # core at position 0, x = 0
    dist = LocalDistances(points, exact=True)
    scorer = DistanceScorer(np.arange(10, dtype=np.float64), np.full(10, -1))
    picker = ClusterPicker(dist, scorer, core=0, budget=3, iterative=True, keep_trace=True)
    assert picker.radius == 3  # floor(10 / 3)
    assert picker.step() and picker.step()
    # step 1 drops {0, 1, 2} (nearest the core) and takes the farthest, 9;
    # step 2 drops {9, 8, 7} and takes the farthest left, 6.
    assert picker.picks == [0, 9, 6]
    np.testing.assert_array_equal(picker.trace[0].dropped, [0, 1, 2])
    np.testing.assert_array_equal(picker.trace[1].dropped, [9, 8, 7])


def test_one_shot_takes_the_lowest_scores_without_removal():
    points = np.arange(10, dtype=np.float32)[:, None]
    scorer = DistanceScorer(np.arange(10, dtype=np.float64), np.full(10, -1))
    picker = ClusterPicker(LocalDistances(points, exact=True), scorer, core=0, budget=3, iterative=False)
    picker.step()
    picker.step()
    assert picker.picks == [0, 9, 8]


def test_exhausted_cluster_passes_budget_on(blobs):
    # Tiny removal radius cannot serve a budget larger than a cluster: the rest must
    # come from the other clusters, still distinct, still exactly B.
    cores = np.array([0, 60, 120])
    result = select_boundary(blobs, cores, 150, removal_ratio=0.0)
    assert result.indices.size == 150 and np.unique(result.indices).size == 150
    everything = select_boundary(blobs, cores, blobs.shape[0], removal_ratio=0.3)  # uses removed samples too
    assert np.unique(everything.indices).size == blobs.shape[0]


def test_output_order_clusters_in_core_order_each_starting_with_its_core(blobs):
    cores = np.array([5, 70, 130])
    result = select_boundary(blobs, cores, 12)
    starts = np.flatnonzero(np.diff(np.r_[-1, result.cluster_of_selected]))
    np.testing.assert_array_equal(result.indices[starts], cores)
    assert np.all(np.diff(result.cluster_of_selected) >= 0)
    assert np.isnan(result.scores[starts]).all() and not np.isnan(np.delete(result.scores, starts)).any()


def test_reopened_candidates_are_not_dropped_by_the_removal_radius():
    # Regression (found by hypothesis): three 1-D points, one core, B = N = 3. The second
    # pick's radius exhausts the candidates; the fallback reopened the last sample, but
    # the radius dropped it again and the selection came back one short.
    features = np.array([[2.0], [1.0], [1.0]], dtype=np.float32)
    for variant in ("reference", "paper"):
        result = select_boundary(features, np.array([2]), 3, variant=variant, k_neighbors=1,
                                 include_ratio=0.05, removal_ratio=0.0, opponent_penalty=1.0)
        assert sorted(result.indices.tolist()) == [0, 1, 2]


def test_an_error_in_the_parallel_phase_restores_blas_threads(monkeypatch):
    # Regression: the one-thread BLAS limit of the parallel phase was only undone on
    # success, so an error left every later matrix product in the process on one thread.
    from threadpoolctl import threadpool_info

    import bilaf_core.boundary as boundary

    before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    monkeypatch.setattr(boundary.os, "cpu_count", lambda: 2)  # enough workers for the pool

    def broken(*args, **kwargs):
        raise RuntimeError("denoiser failed")

    monkeypatch.setattr(boundary, "idc_order", broken)
    features = np.random.default_rng(0).standard_normal((1000, 4)).astype(np.float32)  # 500 per cluster: parallel
    with pytest.raises(RuntimeError, match="denoiser failed"):
        select_boundary(features, np.array([0, 1]), 10)
    assert [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"] == before


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_a_reused_geometry_gives_the_same_selection_as_a_fresh_one(variant):
    # The app keeps one geometry per (features, cores) and moves stage-2 sliders over
    # it; every parameter setting must select exactly what a from-scratch run selects.
    from bilaf_core import select, stage2_geometry

    rng = np.random.default_rng(3)
    features = np.concatenate([rng.normal(c, 1.0, (120, 6)) for c in (0, 3, 6)]).astype(np.float32)
    cores = np.array([5, 130, 250, 300])
    geometry = stage2_geometry(features, cores, variant=variant)
    settings = [dict(), dict(removal_ratio=0.4), dict(include_ratio=0.3, k_neighbors=3), dict(opponent_penalty=1.0),
                dict(denoise="density"), dict(denoise="none", criterion="distance"), dict(process="one_shot")]
    for setting in settings:
        fresh = select(features, 40, cores=cores, variant=variant, **setting)
        reused = select(features, 40, cores=cores, variant=variant, geometry=geometry, **setting)
        for name in ("indices", "removed", "cluster", "opponent", "allocation"):
            np.testing.assert_array_equal(getattr(reused, name), getattr(fresh, name), err_msg=f"{setting} {name}")
        np.testing.assert_array_equal(reused.boundary_score, fresh.boundary_score)
    assert geometry.nbytes == sum(m.size ** 2 for m in geometry.members_of) * (8 if variant == "reference" else 4)


def test_a_reused_geometry_spares_normalising_the_pool_again(monkeypatch):
    import bilaf_core.selection as selection
    from bilaf_core import select, stage2_geometry

    features = np.random.default_rng(0).standard_normal((300, 5)).astype(np.float32)
    cores = np.array([0, 1, 2, 3])
    geometry = stage2_geometry(features, cores)
    fresh = select(features, 30, cores=cores)
    normalised = []
    original = selection.l2_normalize
    monkeypatch.setattr(selection, "l2_normalize", lambda x: normalised.append(x.shape[0]) or original(x))
    reused = select(features, 30, cores=cores, geometry=geometry)
    assert normalised == [cores.size]  # the core rows, to recognise the geometry; not the 300-sample pool
    np.testing.assert_array_equal(reused.indices, fresh.indices)


def test_a_geometry_for_other_inputs_is_refused():
    from bilaf_core import select, stage2_geometry

    features = np.random.default_rng(0).standard_normal((200, 5)).astype(np.float32)
    geometry = stage2_geometry(features, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="other inputs"):
        select(features, 20, cores=np.array([0, 1, 3]), geometry=geometry)
    with pytest.raises(ValueError, match="other inputs"):  # same cores, other normalisation
        select(features, 20, cores=np.array([0, 1, 2]), normalize=False, geometry=geometry)
    with pytest.raises(ValueError, match="other inputs"):
        select(features, 20, cores=np.array([0, 1, 2]), variant="reference", normalize=True, geometry=geometry)
    with pytest.raises(ValueError, match="cores=geometry.cores"):
        select(features, 20, geometry=geometry)
    with pytest.raises(ValueError, match="cores=geometry.cores"):
        select(features, 20, method="kmeans", cores=np.array([0, 1, 2]), geometry=geometry)


@pytest.mark.parametrize("listed", [29, 6])
def test_scores_updated_pick_by_pick_equal_scores_recomputed_from_the_factors(listed):
    # The scorer updates only the entries a pick's penalty changes. With every other
    # core listed (29 of 30), recomputing all terms from the same factors must give
    # identical scores and opponents; with 6 listed, brute force over all cores agrees.
    rng = np.random.default_rng(7)
    n, k = 400, 30
    scorer, dist_all, d_intra = _random_scorer(rng, n, k, listed=listed, penalty=1.3)
    everyone = np.arange(n)
    for _ in range(80):
        _, opponents = scorer.scores(everyone)
        scorer.record_pick(int(opponents[rng.integers(n)]))  # penalise an opponent that attained some score
    scores, opponents = scorer.scores(everyone)
    if listed == k - 1:
        terms = scorer.factor[scorer.factor_index] * scorer.ratio - scorer.offset
        best = np.argmin(terms, axis=1)
        np.testing.assert_array_equal(scores, terms[everyone, best])
        np.testing.assert_array_equal(opponents, scorer.opponents[everyone, best])
    _assert_brute_force(scorer, dist_all, d_intra, scores, opponents)


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_geometry_keeps_matrices_within_its_memory_budget_and_selects_the_same(monkeypatch, variant):
    """A 1.28M-sample pool in 253 clusters asked for 25 GB of distance matrices; now the
    largest clusters beyond the budget compute rows on demand, with the same selection."""
    import bilaf_core._boundary_kernel as kernel
    from bilaf_core.boundary import cluster_geometry
    from sklearn.datasets import load_digits

    features = load_digits().data.astype(np.float32)[:600]
    cores = np.arange(0, 600, 60)
    unbounded = cluster_geometry(features, cores, variant=variant)
    sizes = np.array([m.size for m in unbounded.members_of])
    itemsize = unbounded.local_distances[0].matrix.itemsize
    budget = int(np.sort(sizes)[:4].astype(np.int64) @ np.sort(sizes)[:4] * itemsize)  # the four smallest fit
    np.testing.assert_array_equal(kernel.matrices_to_keep(sizes, itemsize, budget),
                                  sizes <= np.sort(sizes)[3])  # hand-checked: smallest first (sizes distinct here)
    monkeypatch.setattr(kernel, "GEOMETRY_MATRIX_BYTES", budget)
    bounded = cluster_geometry(features, cores, variant=variant)
    assert bounded.nbytes <= budget < unbounded.nbytes
    assert sum(d.matrix is not None for d in bounded.local_distances) == 4
    expected = select_boundary(features, cores, 120, variant=variant, geometry=unbounded)
    got = select_boundary(features, cores, 120, variant=variant, geometry=bounded)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.removed, expected.removed)


def test_a_removal_ratio_change_on_a_reused_geometry_skips_idc(monkeypatch):
    # IDC's ranking does not depend on P_rm: the geometry keeps it, so the app's P_rm
    # slider redoes only the cut and the picks, and selects what a fresh run selects.
    import bilaf_core.boundary as boundary
    from bilaf_core import select, stage2_geometry

    rng = np.random.default_rng(5)
    features = np.concatenate([rng.normal(c, 1.0, (150, 6)) for c in (0, 4)]).astype(np.float32)
    cores = np.array([3, 160])
    geometry = stage2_geometry(features, cores)
    calls = []
    original = boundary.idc_order
    monkeypatch.setattr(boundary, "idc_order", lambda *a, **k: calls.append(1) or original(*a, **k))
    select(features, 20, cores=cores, geometry=geometry, removal_ratio=0.1)
    assert len(calls) == 2  # once per cluster
    for ratio in (0.3, 0.1):
        reused = select(features, 20, cores=cores, geometry=geometry, removal_ratio=ratio)
        fresh = select(features, 20, cores=cores, removal_ratio=ratio)
        np.testing.assert_array_equal(reused.indices, fresh.indices)
        np.testing.assert_array_equal(reused.removed, fresh.removed)
    assert len(calls) == 2 + 2 * 2  # only the fresh runs ranked again
    select(features, 20, cores=cores, geometry=geometry, k_neighbors=3)  # another k: ranked again
    assert len(calls) == 8
