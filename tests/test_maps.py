"""The selection map without Streamlit: the pool's colouring and its density image, the
colour legend, and the pool rows a lasso or box holds under that image."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from bilaf_core import select
from studio.maps import (DENSITY_ABOVE, OTHER, OVERLAY_DRAWN, PALETTE_10, PALETTE_MANY, Colouring, density_rgba,
                         draw_pick, legend_html, map_extent, pool_colouring, rows_in_region, selection_figure, spread_colours)


def _pool(n: int, budget: int = 300, k: int = 20, **options):
    features = np.random.default_rng(0).standard_normal((n, 4)).astype(np.float32)
    return features, select(features, budget, n_cores=k, core_method="random", random_state=0, **options)


def test_a_pool_above_the_limit_is_one_density_image_under_every_overlay():
    n = DENSITY_ABOVE + 5000
    features, result = _pool(n)
    coords = features[:, :2]
    fig = selection_figure(coords, result, ids=np.array([f"s{i}" for i in range(n)]), labels=np.arange(n) % 3)
    assert [t.name.split(" (")[0] for t in fig.data] == ["removed", "boundary", "core"]  # no marker per pool sample
    assert sum(len(t.x) for t in fig.data) == result.budget + result.removed.size  # every pick and removal drawn
    (image,) = fig.layout.images
    assert image.source.startswith("data:image/png;base64,") and image.layer == "below" and image.sizing == "stretch"
    x0, x1, y0, y1 = map_extent(coords)
    assert tuple(fig.layout.xaxis.range) == (x0, x1) and tuple(fig.layout.yaxis.range) == (y0, y1)
    assert (image.x, image.y, image.sizex, image.sizey) == (x0, y1, x1 - x0, y1 - y0)  # lined up with the markers
    png = Image.open(io.BytesIO(base64.b64decode(image.source.split(",", 1)[1])))
    assert png.mode == "RGBA" and len(image.source) < 200_000
    again = selection_figure(coords, result, ids=np.array([f"s{i}" for i in range(n)]), labels=np.arange(n) % 3)
    assert again.layout.images[0].source is image.source  # made once, not re-encoded on a rerun

    small = selection_figure(coords[:500], _pool(500, 50, 5)[1], ids=np.arange(500).astype(str))
    assert not small.layout.images and small.data[0].name == "pool (500)" and len(small.data[0].x) == 500


def test_over_a_density_image_the_removed_noise_draws_a_fixed_subset():
    n = DENSITY_ABOVE + 5000
    features, result = _pool(n, removal_ratio=0.6)
    assert result.removed.size > OVERLAY_DRAWN
    ids = np.arange(n).astype(str)
    removed = selection_figure(features[:, :2], result, ids=ids).data[0]
    assert removed.name == f"removed ({result.removed.size:,}; {OVERLAY_DRAWN:,} drawn)" and len(removed.x) == OVERLAY_DRAWN
    rows = np.asarray(removed.customdata)[:, 0].astype(int)
    assert (result.role[rows] == "removed").all()
    again = selection_figure(features[:, :2], result, ids=ids).data[0]
    assert np.array_equal(np.asarray(again.customdata)[:, 0], rows)  # the same subset on every rerun


def test_every_whole_budget_method_draws_its_picks_as_stars():
    # Seen on Compare: ProbCover's picks were red circles (BiLAF's boundary style), the
    # other whole-budget methods' stars, under a caption that says stars
    from bilaf_core import select

    features = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    for method in ("activeft", "typiclust", "probcover"):
        result = select(features, 20, method=method, random_state=0)
        fig = selection_figure(features[:, :2], result, ids=np.arange(300).astype(str))
        (picks,) = [t for t in fig.data if not t.name.startswith("pool")]
        assert picks.marker.symbol == "star", (method, picks.name, picks.marker.symbol)


def test_each_density_pixel_takes_its_most_frequent_colour_and_a_log_opacity():
    # 2 x 2 pixels over [0, 2] x [0, 2]: top-left 30 of category 0 and 10 of 1; bottom-right 3 of 1; others empty
    coords = np.array([[0.5, 1.5]] * 40 + [[1.5, 0.5]] * 3, dtype=np.float32)
    codes = np.array([0] * 30 + [1] * 10 + [1] * 3)
    rgba = density_rgba(coords, Colouring(codes, ("a", "b"), "label"), extent=(0, 2, 0, 2), shape=(2, 2))
    first, second = (tuple(int(PALETTE_10[i][j:j + 2], 16) for j in (1, 3, 5)) for i in (0, 1))
    assert tuple(rgba[0, 0, :3]) == first and tuple(rgba[1, 1, :3]) == second
    assert rgba[0, 1, 3] == 0 and rgba[1, 0, 3] == 0  # empty: transparent
    assert rgba[0, 0, 3] > rgba[1, 1, 3] > 0  # more samples, more opaque
    outside = density_rgba(coords, Colouring(np.where(codes == 0, -1, codes), ("a", "b"), "label"),
                           extent=(0, 2, 0, 2), shape=(2, 2))
    assert tuple(outside[0, 0, :3]) == tuple(int(OTHER[j:j + 2], 16) for j in (1, 3, 5))  # filtered out: grey


def test_density_of_a_million_points_is_quick_and_a_sparse_pool_is_smoothed():
    import time

    rng = np.random.default_rng(1)
    coords = rng.standard_normal((1_000_000, 2)).astype(np.float32)
    colouring = Colouring(rng.integers(0, 50, 1_000_000), tuple(map(str, range(50))), "pseudo-class")
    started = time.perf_counter()
    rgba = density_rgba(coords, colouring)
    assert time.perf_counter() - started < 5  # about 0.1 s alone on two cores; generous for a loaded machine
    assert rgba.shape == (240, 480, 4)
    sparse = density_rgba(coords[:2000], Colouring(colouring.codes[:2000], colouring.names, "pseudo-class"),
                          extent=map_extent(coords))
    assert (sparse[..., 3] > 0).sum() > 5 * 2000  # 3 x 3 neighbourhoods, not 2,000 specks


def test_lasso_and_box_hold_exactly_the_pool_rows_inside():
    x, y = np.meshgrid(np.arange(20, dtype=np.float32), np.arange(20, dtype=np.float32))
    coords = np.column_stack([x.ravel(), y.ravel()])
    box = rows_in_region(coords, {"box": [{"x": [5.5, 2.5], "y": [1.5, 3.5]}], "lasso": []})
    assert box.tolist() == sorted(r * 20 + c for r in (2, 3) for c in (3, 4, 5))
    triangle = {"box": [], "lasso": [{"x": [0.5, 10.5, 0.5], "y": [0.5, 0.5, 10.5]}]}
    expected = [r * 20 + c for r in range(20) for c in range(20) if c >= 1 and r >= 1 and c + r < 11]
    assert rows_in_region(coords, triangle).tolist() == expected
    both = rows_in_region(coords, {**triangle, "box": [{"x": [15.5, 16.5], "y": [15.5, 16.5]}]})
    assert both.tolist() == sorted(expected + [16 * 20 + 16])
    assert rows_in_region(coords, {"points": []}).size == 0  # a click: no region


def test_pool_colouring_by_label_names_by_pseudo_class_and_by_inspect_filters():
    features, result = _pool(400, 60, 6)
    names = np.array(["cat", "dog", "emu"])[np.arange(400) % 3]
    by_label = pool_colouring(result, names, "true label")
    assert by_label.names == ("cat", "dog", "emu") and by_label.title == "true label"
    assert (np.asarray(by_label.names)[by_label.codes] == names).all()
    by_cluster = pool_colouring(result, names, "pseudo-class")
    assert by_cluster.names == tuple(map(str, range(6))) and (by_cluster.codes == result.cluster).all()
    assert pool_colouring(result, None, "true label").title == "pseudo-class"  # no labels: pseudo-classes
    focus = pool_colouring(result, names, "true label", roles=("core", "boundary"), cluster=2)
    keep = np.isin(result.role, ["core", "boundary"]) & (result.cluster == 2)
    assert (focus.codes[~keep] == -1).all() and (focus.codes[keep] >= 0).all()
    fig = selection_figure(features[:, :2], result, ids=np.arange(400).astype(str), roles=("core", "boundary"),
                           cluster=2)
    drawn = {t.name.split(" (")[0]: np.asarray(t.customdata)[:, 0].astype(int) for t in fig.data}
    assert set(drawn) == {"pool", "boundary", "core"}  # the removed noise filtered out
    assert all((result.cluster[drawn[r]] == 2).all() for r in ("boundary", "core"))
    assert (np.asarray(fig.data[0].marker.color)[~keep] == len(PALETTE_10)).all()  # the rest of the pool grey


def test_clusters_sharing_a_colour_lie_far_apart_and_the_legend_names_them():
    centres = np.column_stack([np.arange(50, dtype=float), np.zeros(50)])  # 50 clusters in a row
    colours = spread_colours(centres, len(PALETTE_MANY))
    assert len(set(colours[:24].tolist())) == 24
    for colour in set(colours.tolist()):
        where = np.flatnonzero(colours == colour)
        assert where.size == 1 or np.diff(where).min() >= 10, where  # neighbours never share one
    colouring = Colouring(np.arange(50), tuple(map(str, range(50))), "pseudo-class", colours)
    text = legend_html(colouring)
    assert "Pool colour: pseudo-class" in text and "each shared by clusters far apart" in text
    assert text.count("bilaf-swatch\"") == 24 and PALETTE_MANY[0] in text
    labels = legend_html(Colouring(np.array([0, 1, -1]), ("airplane", "automobile"), "label"))
    assert "airplane" in labels and PALETTE_10[1] in labels and "outside the filters" in labels


def test_a_projection_progress_file_reports_the_time_since_the_start_not_since_the_last_report(tmp_path):
    """The UMAP bar read "nearest neighbours (0 s so far)" for the whole neighbour search:
    the seconds were counted to the last report, and that step reports once."""
    import pickle

    from studio.maps import ProgressFile, progress_line

    progress = ProgressFile(str(tmp_path / "job.json"))
    assert progress.read() is None
    progress = pickle.loads(pickle.dumps(progress))  # it travels to the projection process
    progress(0.05, "nearest neighbours")
    done = progress.read()
    fraction, text = progress_line("UMAP", done, now=done["started"] + 40)
    assert fraction == 0.05 and text == "UMAP: nearest neighbours (40 s so far)"  # no estimate from one step
    progress(0.65, "layout, epoch 100 of 200")
    later = progress.read()
    assert later["started"] == done["started"]  # the start is kept across reports
    fraction, text = progress_line("UMAP", later, now=later["started"] + 65)
    assert text == "UMAP: layout, epoch 100 of 200 · about 35 s left (65 s so far)"
    assert ProgressFile.for_job(("a", "umap", 0)) == ProgressFile.for_job(("a", "umap", 0)) != \
        ProgressFile.for_job(("a", "tsne", 0))
    assert progress.reset().read() is None  # a new job starts from nothing


def test_projection_progress_lines_of_umap_and_t_sne_become_fractions():
    from bilaf_core.projection import _ProgressLines

    calls = []
    lines = _ProgressLines(lambda fraction, message: calls.append((round(fraction, 3), message)), total=1000)
    lines.write("[t-SNE] Computed conditional probabilities for sample 1000 / 2000\n")
    lines.write("[t-SNE] Iteration 500: error = 1.2, gradient norm = 0.01\n")
    lines.write("\r 50%|#####     | 100/200 [00:10<00:10]")
    assert calls == [(0.175, "neighbours of 1,000 of 2,000 samples"), (0.65, "layout, iteration 500 of 1,000"),
                     (0.65, "layout, epoch 100 of 200")]


def test_no_category_colour_is_a_grey_that_reads_as_removed_noise_or_filtered_out():
    """Pseudo-class / label 7 was tab10's grey #7F7F7F: on the map it could not be told from
    the removed crosses (grey) or, on Inspect, from the samples outside the filters (grey)."""
    from studio.maps import MARKERS

    def rgb(colour: str) -> tuple[int, ...]:
        if colour.startswith("rgba"):
            return tuple(int(float(v)) for v in colour[5:-1].split(",")[:3])
        return tuple(int(colour[j:j + 2], 16) for j in (1, 3, 5))

    def chroma(colour: str) -> int:
        return max(rgb(colour)) - min(rgb(colour))

    assert chroma(MARKERS["removed"].colour) < 10 and chroma(OTHER) < 10  # the greys the categories must not look like
    assert [colour for colour in PALETTE_10 + PALETTE_MANY if chroma(colour) < 40] == []


def test_a_frozen_matrix_is_hashed_once_and_a_writeable_one_every_time(monkeypatch):
    # the app's first load hashed its normalised features twice (cores, then the coverage radius)
    import hashlib

    from bilaf_core import _cache

    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(_cache.hashlib, "sha256", lambda data: calls.append(1) or real(data))
    frozen = np.arange(12, dtype=np.float32).reshape(4, 3).copy()
    frozen.setflags(write=False)
    first = _cache.features_digest(frozen)
    assert _cache.features_digest(frozen) == first and len(calls) == 1
    assert _cache.features_digest(frozen.copy()) == first and len(calls) == 2  # same content, same key
    writeable = frozen.copy()
    _cache.features_digest(writeable)
    writeable[0, 0] = 99.0
    assert _cache.features_digest(writeable) != first and len(calls) == 4
    key = id(frozen)
    assert key in _cache._FROZEN_DIGESTS
    del frozen
    assert key not in _cache._FROZEN_DIGESTS  # forgotten with its array


def test_umap_of_three_samples_is_their_pca_layout_not_an_eigensolver_error():
    # UMAP's spectral start asks for 3 eigenvectors: on 3 samples scipy raised "k >= N"
    from bilaf_core.projection import project_2d

    features = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    coords = project_2d(features, method="umap", use_cache=False)
    assert coords.shape == (3, 2) and np.isfinite(coords).all()
    np.testing.assert_allclose(coords, project_2d(features, method="pca", use_cache=False), atol=1e-6)


def test_removed_noise_is_a_thin_cross_at_every_size_the_maps_draw():
    """At the sizes the maps shrank it to (4-5 px, filled 'x' with a 1 px outline of its own
    colour) a removed sample read as a grey dot, where the legend says crosses. A line-drawn
    cross ('x-thin') of at least 6 px and a 1.5 px line reads as a cross (seen in Chromium),
    on the full map, with thousands of them, and on Compare's small multiples."""
    from studio.maps import MARKERS

    cross = MARKERS["removed"]
    assert cross.symbol == "x-thin" and cross.smallest >= 6 and cross.line >= 1.5
    features, result = _pool(3000, removal_ratio=0.5)
    for height in (560, 280):
        fig = selection_figure(features[:, :2], result, ids=np.arange(3000).astype(str), height=height)
        (removed,) = [t for t in fig.data if t.name.startswith("removed")]
        assert removed.marker.symbol == "x-thin" and removed.marker.size >= 6 and removed.marker.line.width >= 1.5
        assert removed.marker.line.color == removed.marker.color  # a thin symbol is drawn by its line only
    # the other roles keep their symbols, one definition each
    assert {role: MARKERS[role].symbol for role in ("core", "selected", "boundary")} == {
        "core": "star", "selected": "star", "boundary": "circle-open"}


def test_crowded_overlays_are_see_through_outlines_of_the_same_shape_and_colour():
    """2,500 filled black stars (a whole-budget method at 5 % of CIFAR-10) hid the pool;
    crowded, a role is drawn as its outline, 1 px, semi-transparent, and a smaller map
    (Compare's) is crowded by fewer points. A few dozen keep their filled symbol."""
    from studio.maps import CROWDED_OPACITY, LEAST_OPACITY, MARKERS, crowded

    assert MARKERS["core"].style(50) == dict(symbol="star", size=14, color="#111111",
                                             line=dict(width=1.5, color="#111111"))
    for role, symbol in (("core", "star-open"), ("selected", "star-open"), ("boundary", "circle-open")):
        crowd = MARKERS[role].style(2500)
        assert crowd["symbol"] == symbol and crowd["line"]["width"] == 1 and crowd["color"] == MARKERS[role].colour
        assert LEAST_OPACITY <= crowd["opacity"] < CROWDED_OPACITY
    assert MARKERS["core"].style(2500, height=320)["opacity"] < MARKERS["core"].style(2500)["opacity"]
    assert not crowded(250) and crowded(250, height=320)
    # crowded crosses keep their shape and line (a thinner one read as dots), and are see-through too:
    # 2,450 circles over 5,000 crosses of their own 0.55 alpha were a grey mass on a Compare panel
    crosses = MARKERS["removed"].style(2500, height=320)
    assert crosses["symbol"] == "x-thin" and crosses["line"]["width"] == MARKERS["removed"].line
    assert LEAST_OPACITY <= crosses["opacity"] < CROWDED_OPACITY and "opacity" not in MARKERS["removed"].style(50)


def test_a_small_map_side_by_side_draws_a_named_subset_of_thousands_of_picks():
    """BiLAF at B = 2,500 on CIFAR-10 drew 2,450 circles and 5,000 crosses on each of
    Compare's four 320-px maps: a red and grey mass (and 2,500 stars of a whole-budget
    method, dark). A map draws at most drawn_at_most of its size of each overlay, a fixed
    subset, its legend naming both counts; the full-size map draws up to OVERLAY_DRAWN."""
    from studio.maps import drawn_at_most, overlay_line

    most = drawn_at_most(320, 4)
    assert most < drawn_at_most(320, 2) < drawn_at_most(320) < drawn_at_most() == OVERLAY_DRAWN
    features, result = _pool(20_000, budget=2500, k=50, removal_ratio=0.2)
    ids = np.arange(20_000).astype(str)
    small = selection_figure(features[:, :2], result, ids=ids, height=320, columns=4, show_legend=False)
    drawn = {t.name: len(t.x) for t in small.data}
    assert drawn == {f"removed ({result.removed.size:,}; {most} drawn)": most, f"boundary (2,450; {most} drawn)": most,
                     "core (50)": 50}, drawn
    assert overlay_line(small) == f"core (50) · boundary (2,450; {most} drawn) · removed ({result.removed.size:,}; " \
        f"{most} drawn)"
    boundary = np.asarray(small.data[1].customdata)[:, 0].astype(int)
    assert (result.role[boundary] == "boundary").all()
    again = selection_figure(features[:, :2], result, ids=ids, height=320, columns=4)
    assert np.array_equal(np.asarray(again.data[1].customdata)[:, 0], boundary.astype(np.float32))  # the same subset
    full = selection_figure(features[:, :2], result, ids=ids)
    assert [len(t.x) for t in full.data] == [result.removed.size, 2450, 50]  # the Select map: every pick


def test_the_colour_legend_names_the_colouring_as_the_page_control_does():
    """With a whole-budget method that makes no pseudo-classes (TypiClust) the legend said
    "Pool colour: pool", and by labels "Pool colour: label", where the page's control says
    "pseudo-class" and "true label"."""
    features = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    typiclust = select(features, 20, method="typiclust", random_state=0)
    legend = legend_html(pool_colouring(typiclust, None, "pseudo-class"))
    # "makes none" read wrong: TypiClust clusters the pool, but gives no sample a pseudo-class
    assert "Pool colour: pseudo-class (typiclust gives no pseudo-class per sample: the pool is one colour)" in legend, \
        legend
    kmeans = select(features, 20, method="kmeans", random_state=0)
    assert pool_colouring(kmeans, None, "pseudo-class", pick_cells=False).title.startswith("pseudo-class (kmeans has")
    assert "Pool colour: true label" in legend_html(pool_colouring(kmeans, np.arange(300) % 3, "true label"))


def test_every_whole_budget_methods_picks_are_named_selected_on_the_map():
    """kmeans, activeft, fds and random named their picks "core (N)" in the map's legend,
    under a caption saying they have no cores; TypiClust and ProbCover "selected (N)"."""
    features = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    ids = np.arange(300).astype(str)
    for method in ("kmeans", "random", "typiclust"):
        fig = selection_figure(features[:, :2], select(features, 20, method=method, random_state=0), ids=ids)
        assert [t.name for t in fig.data[1:]] == ["selected (20)"], (method, [t.name for t in fig.data])
        assert "role selected" in fig.data[1].hovertemplate
    bilaf = selection_figure(features[:, :2], select(features, 20, n_cores=20, random_state=0), ids=ids)
    assert [t.name for t in bilaf.data[1:]] == ["core (20)"]  # BiLAF's cores stay cores, even at K = B


def test_a_mark_that_changes_nothing_in_the_selection_is_a_faint_ring_named_so():
    """On a kmeans map every excluded mark (made on a BiLAF selection) was a ring named
    "excluded from the export", though kmeans had picked none of them: nothing was excluded."""
    from studio.maps import MARKERS

    features = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    result = select(features, 20, method="kmeans", random_state=0)
    picked, unpicked = result.indices[:2], np.setdiff1d(np.arange(300), result.indices)[:3]
    marks = np.full(300, "unmarked", dtype="<U8")
    marks[[picked[0], *unpicked[:2]]] = "excluded"
    marks[[picked[1], unpicked[2]]] = "forced"
    fig = selection_figure(features[:, :2], result, ids=np.arange(300).astype(str), marks=marks)
    rings = {t.name: (sorted(np.asarray(t.customdata)[:, 0].astype(int)), t.marker.opacity) for t in fig.data[2:]}
    assert {name: rows for name, (rows, _) in rings.items()} == {
        "excluded mark, not picked here (2)": sorted(unpicked[:2]), "forced mark, picked here anyway (1)": [picked[1]],
        "excluded from the export (1)": [picked[0]], "forced into the export (1)": [unpicked[2]]}, rings
    assert [opacity for _, opacity in rings.values()] == [0.4, 0.4, None, None]  # faint, under the marks that act
    assert fig.data[-1].marker.symbol == MARKERS["forced"].symbol


def test_a_map_pick_is_drawn_as_each_layers_selection_and_on_a_density_map_as_a_layer():
    """A pick made on the other page's map is drawn as plotly draws a lasso's selection."""
    features, result = _pool(500, 50, 5)
    coords, ids = features[:, :2], np.arange(500).astype(str)
    fig = selection_figure(coords, result, ids=ids)
    draw_pick(fig, np.empty(0, dtype=np.int64), coords)
    assert all(t.selectedpoints is None for t in fig.data)  # nothing picked: nothing faded
    core = result.indices[result.role[result.indices] == "core"]
    picked = np.sort(np.r_[core[:2], np.flatnonzero(result.role == "unselected")[:3]])
    draw_pick(fig, picked, coords)
    for trace in fig.data:  # each layer's picked points, by position in the layer
        rows = np.asarray(trace.customdata)[:, 0].astype(int)
        assert sorted(rows[list(trace.selectedpoints)]) == sorted(set(rows) & set(picked)), trace.name
    assert len(fig.data[0].selectedpoints) == 5  # the pool layer: the pick's five rows

    n = DENSITY_ABOVE + 5000
    features, result = _pool(n)
    dense = selection_figure(features[:, :2], result, ids=np.arange(n).astype(str))
    names = [t.name for t in dense.data]
    draw_pick(dense, np.array([3, 7, 11]), features[:, :2])
    assert dense.data[0].name == "map pick (3)" and list(dense.data[0].selectedpoints) == [0, 1, 2]
    assert [t.name for t in dense.data[1:]] == names  # under the overlays
    assert np.array_equal(np.asarray(dense.data[0].customdata)[:, 0], [3, 7, 11])  # a lasso reads its rows
    # Inspect's filters: only the picked samples they keep (all 6,551 of a pick stayed dark beside "355 match")
    kept = np.zeros(n, dtype=bool)
    kept[[7, 11]] = True
    filtered = selection_figure(features[:, :2], result, ids=np.arange(n).astype(str))
    draw_pick(filtered, np.array([3, 7, 11]), features[:, :2], focus=kept)
    assert filtered.data[0].name == "map pick (2)" and np.array_equal(np.asarray(filtered.data[0].x), features[[7, 11], 0])
