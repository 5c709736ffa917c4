"""The Learn page's library side: toy data, the 2-D walkthrough, Eq. 7 as a field, and
the stage-2 trace's consistency with the selection."""

import numpy as np
import pytest

from bilaf_core.boundary import boundary_score_at
from bilaf_core.teaching import TOY_DATASETS, compare_methods, lift_to_sphere, make_toy_dataset, region_grid, walkthrough


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_datasets_are_seeded_and_sized(name):
    points, labels = make_toy_dataset(name, 500, outlier_fraction=0.1, random_state=3)
    again, _ = make_toy_dataset(name, 500, outlier_fraction=0.1, random_state=3)
    assert points.shape == (500, 2) and points.dtype == np.float32 and np.array_equal(points, again)
    assert (labels == -1).sum() == 50
    assert not np.array_equal(points, make_toy_dataset(name, 500, outlier_fraction=0.1, random_state=4)[0])


@pytest.mark.parametrize("kwargs,fragment", [
    ({"name": "spirals"}, "data set must be one of"),
    ({"n_samples": 100}, "n_samples must be an integer in [200, 5000]"),
    ({"outlier_fraction": 0.6}, "outlier_fraction"),
])
def test_toy_dataset_bad_input(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        make_toy_dataset(**{"name": "blobs", **kwargs})


def test_lift_to_sphere_is_unit_and_keeps_neighbours():
    points, _ = make_toy_dataset("blobs", 400, random_state=0)
    lifted = lift_to_sphere(points)
    assert np.allclose(np.linalg.norm(lifted, axis=1), 1, atol=1e-5)
    # conformal: each point's nearest neighbour in the plane is (almost always) its nearest on the sphere
    plane = np.linalg.norm(points[:, None] - points[None], axis=2) + np.eye(400) * 1e9
    sphere = np.linalg.norm(lifted[:, None] - lifted[None], axis=2) + np.eye(400) * 1e9
    assert np.mean(plane.argmin(1) == sphere.argmin(1)) > 0.9  # measured 0.94 (near-ties swap)


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("criterion", ["boundary_score", "distance"])
def test_trace_is_consistent_with_the_selection(variant, criterion):
    points, _ = make_toy_dataset("moons", 700, outlier_fraction=0.05, random_state=1)
    run = walkthrough(points, 70, n_cores=6, core_method="kmeans", variant=variant, criterion=criterion)
    result = run.result
    assert result.indices.size == 70 and np.unique(result.indices).size == 70
    for c, trace in enumerate(result.traces):
        assert trace.core == run.cores[c]
        assert set(trace.kept) | set(trace.removed) <= set(trace.members)
        assert not set(trace.kept) & set(trace.removed)
        picked = [trace.core] + [int(trace.kept[p.position]) for p in trace.picks]
        mine = result.indices[result.cluster_of_selected == c]
        assert picked == mine[: len(picked)].tolist()  # the trace's picks are the selection, in order
        assert len(picked) <= trace.budget or trace.budget == 0 or len(picked) == mine.size
        dropped_so_far = set()
        for pick in trace.picks:
            assert pick.position not in dropped_so_far  # a dropped candidate is never picked
            dropped_so_far |= set(pick.dropped.tolist())
    assert np.isin(result.removed, np.concatenate([t.removed for t in result.traces])).all()


def test_score_field_reproduces_every_pick_score_of_stage_2():
    points, _ = make_toy_dataset("blobs", 900, overlap=1.5, random_state=2)
    run = walkthrough(points, 90, n_cores=7, core_method="kmeans", opponent_penalty=1.3)
    checked = 0
    for c, trace in enumerate(run.result.traces):
        counts = np.zeros(run.cores.size, dtype=int)
        members = points[trace.kept]
        for pick in trace.picks:
            at = boundary_score_at(members[[pick.position]], members, run.core_points, c, opponent_penalty=1.3,
                                   penalty_counts=counts)
            assert at["score"][0] == pytest.approx(pick.score, abs=1e-5)
            assert at["opponent"][0] == pick.opponent
            counts[pick.opponent] += 1
            checked += 1
    assert checked == 90 - 7


def test_boundary_score_at_hand_checked():
    # Cluster 0 = {(0,0), (2,0)} around core (0,0); the other core at (4,0).
    members = np.array([[0.0, 0.0], [2.0, 0.0]])
    cores = np.array([[0.0, 0.0], [4.0, 0.0]])
    at = boundary_score_at(np.array([[2.0, 0.0], [0.0, 0.0]]), members, cores, 0, opponent_penalty=1.1)
    # x = (2, 0): d_intra = (2 + 0) / 2 = 1, D = 2 -> (2 - 1) / 2 = 0.5; x = (0, 0): d_intra = 1, D = 4 -> 0.75
    assert at["score"].tolist() == pytest.approx([0.5, 0.75])
    assert at["d_intra"].tolist() == [1.0, 1.0] and at["opponent"].tolist() == [1, 1]
    penalised = boundary_score_at(np.array([[2.0, 0.0]]), members, cores, 0, opponent_penalty=2.0,
                                  penalty_counts=np.array([0, 1]))
    assert penalised["score"][0] == pytest.approx((2 * 2 - 1) / 2)


def test_region_grid_and_comparison():
    points, _ = make_toy_dataset("rings", 300, random_state=0)
    run = walkthrough(points, 30, n_cores=4)
    xs, ys, grid = region_grid(points, run.core_points, resolution=40)
    assert grid.shape == (40, 40) and set(np.unique(grid)) == set(range(4))
    picks = compare_methods(points, 30)
    assert set(picks) == {"activeft", "kmeans", "random"} and all(np.unique(p).size == 30 for p in picks.values())


def test_walkthrough_bad_input():
    points, _ = make_toy_dataset("blobs", 300)
    with pytest.raises(ValueError, match="budget must be at least n_cores"):
        walkthrough(points, 5, n_cores=10)
    with pytest.raises(ValueError, match="denoise must be one of"):
        walkthrough(points, 20, n_cores=4, denoise="magic")
    with pytest.raises(ValueError, match="unknown stage-2 option"):
        walkthrough(points, 20, n_cores=4, temperature=3)


@pytest.mark.parametrize("option,expected", [({}, None), ({"process": "one_shot"}, "none (one-shot process)"),
                                              ({"criterion": "distance"}, "none (distance criterion)")])
def test_learn_pick_table_shows_penalty_counts_only_where_a_penalty_applies(option, expected):
    from studio.learn_figures import picks_table

    points, _ = make_toy_dataset("blobs", n_samples=300, random_state=0)
    run = walkthrough(points, 40, n_cores=4, random_state=0, **option)
    cluster = max(range(4), key=lambda c: len(run.result.traces[c].picks))
    shown = [row["t_l in force"] for row in picks_table(run, cluster)[1:]]
    assert len(shown) > 2
    if expected is None:  # iterative + boundary score: counts grow with the opponents of earlier picks
        assert shown[0] == "all 0" and any(s.startswith("t") for s in shown[1:])
    else:
        assert set(shown) == {expected}


def test_learn_figures_legends_are_under_the_plot_clear_of_the_toolbar():
    """Above the plot the legends sat on plotly's toolbar (its icons at the top right);
    under it, at y = -0.05, on the x axis' numbers and step 2's round slider. They are
    under the plot, low enough for the numbers, and step 2's under its slider (the page's
    boxes are checked in the browser journey)."""
    from studio.learn_figures import (LEGEND_BELOW, LEGEND_UNDER_SLIDER, comparison_figure, idc_figure,
                                      picks_figure, regions_figure, score_figure)

    points, _ = make_toy_dataset("blobs", n_samples=300, random_state=0)
    run = walkthrough(points, 40, n_cores=4, random_state=0)
    for fig in (regions_figure(run), score_figure(run, 0, penalty=1.1), picks_figure(run, 0, 2)):
        assert fig.layout.legend.y == LEGEND_BELOW["y"] <= -0.1 and fig.layout.legend.yanchor == "top"
    fig = idc_figure(run)
    assert fig.layout.sliders[0].y > fig.layout.legend.y == LEGEND_UNDER_SLIDER and fig.layout.legend.yanchor == "top"
    assert comparison_figure(points, {"BiLAF": run}).layout.legend.y < 0
    assert score_figure(run, 0, penalty=1.1).data[0].hoverongaps is False  # outside the cluster: no "BS NaN"


def test_idc_figure_follows_the_chosen_cluster():
    """Step 2 drew every cluster's IDC while its text and 'Cluster to follow' named one
    cluster ('cluster 0: 97 samples, 11 rounds'; the colour bar went to 12): the select box
    changed nothing on the map."""
    from studio.learn_figures import idc_figure

    points, _ = make_toy_dataset("blobs", n_samples=600, random_state=0)
    run = walkthrough(points, 60, n_cores=8, random_state=0)
    for cluster in (0, 2):
        trace = run.result.traces[cluster]
        layers = {d.name: d for d in idc_figure(run, cluster).data}
        assert len(layers["included (kept)"].x) + len(layers["removed (periphery)"].x) == trace.inclusion_order.size
        assert len(layers["removed (periphery)"].x) == trace.removed.size
        assert len(layers["other clusters"].x) == points.shape[0] - trace.members.size
        assert len(idc_figure(run, cluster).frames) == int(trace.inclusion_round.max())


def test_learn_result_step_draws_cores_as_stars_and_boundary_picks_as_circles_as_every_map():
    """Step 5 drew BiLAF's cores as circles, where every other map draws cores as stars (and
    circles mean boundary picks); the baselines' picks are stars, as whole-budget methods'
    are on the Select and Compare maps. The markers are the maps' own (studio.maps.MARKERS)."""
    from studio.learn_figures import comparison_figure
    from studio.maps import MARKERS

    points, _ = make_toy_dataset("blobs", n_samples=300, random_state=0)
    run = walkthrough(points, 40, n_cores=4, random_state=0)
    picks = {"BiLAF": run, **compare_methods(points, 40, random_state=0)}
    fig = comparison_figure(points, picks)
    drawn = {(t.xaxis, t.name): t for t in fig.data if t.name}
    cores = drawn[("x", "cores (4)")]
    boundary = drawn[("x", "boundary (36)")]
    assert cores.marker.symbol == MARKERS["core"].symbol == "star"
    assert boundary.marker.symbol == MARKERS["boundary"].symbol == "circle-open"
    assert sorted(cores.customdata) == sorted(run.cores.tolist())
    assert sorted(cores.customdata + boundary.customdata) == sorted(run.result.indices.tolist())
    for axis in ("x2", "x3", "x4"):  # ActiveFT, K-Means, random: 40 picks each, stars
        (chosen,) = [t for (a, _), t in drawn.items() if a == axis]
        assert chosen.marker.symbol == MARKERS["selected"].symbol and len(chosen.x) == 40
