"""Browser journeys on a 12,000-sample feature file, above the size where the Select map
draws the pool as a density image (studio.maps.DENSITY_ABOVE): the image is drawn under
the overlays with a colour legend, a lasso over it picks the pool samples under it, and
a UMAP map computed in the background shows its progress with the time left."""

from __future__ import annotations

import math

import numpy as np
import pytest
from playwright.sync_api import expect

from bilaf_core.projection import project_2d
from browser import (LONG, assert_clean, drag, map_box, pick_tool, streamlit_server, to_page, wait_idle,
                     wait_select)

N = 12_000
CLASSES = ("ant", "bee", "cat", "dog", "eel", "fox")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(CLASSES), N)
    features = (rng.standard_normal((len(CLASSES), 16)) * 4)[labels] + rng.standard_normal((N, 16))
    path = folder / "blobs.npz"
    np.savez(path, features=features.astype(np.float32), labels=np.array(CLASSES)[labels])
    with streamlit_server(tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("log") / "streamlit.log",
                          BILAF_ALLOWED_ROOTS=str(folder)) as url:
        yield url, path, features.astype(np.float32)


def test_lasso_over_the_density_image_picks_the_pool_samples_under_it(pool, browser):
    url, path, features = pool
    page = browser.page()
    page.goto(f"{url}/?data=features&file={path}&budget=300&projection=pca")
    wait_select(page)
    plot = page.locator(".js-plotly-plot").first
    expect(plot.locator("image")).to_have_count(1)  # the pool: one image, no marker per sample
    expect(page.locator(".legendtext").filter(has_text="pool")).to_have_count(0)
    expect(page.get_by_text("Pool colour: pseudo-class")).to_be_visible()
    page.get_by_text("true label", exact=True).click()
    wait_select(page)
    expect(page.get_by_text("Pool colour: true label")).to_be_visible()
    for name in CLASSES:  # the legend names the classes
        expect(page.locator(".bilaf-key").filter(has_text=name)).to_have_count(1)

    pick_tool(page, "Lasso Select")
    box = map_box(page)
    coords = project_2d(features, method="pca", use_cache=False)  # the page's PCA map
    xy = np.array(to_page(page, coords))
    # a hexagon around the densest spot well inside the map
    inner = (xy[:, 0] > box["x"] + 80) & (xy[:, 0] < box["x"] + box["width"] - 80) & \
            (xy[:, 1] > box["y"] + 80) & (xy[:, 1] < box["y"] + box["height"] - 80)
    cx, cy = np.median(xy[inner], axis=0)
    r = 45

    def held(radius: float) -> set[int]:
        corners = [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in np.arange(6) * math.pi / 3]
        from browser import inside

        near = np.flatnonzero(np.hypot(xy[:, 0] - cx, xy[:, 1] - cy) <= radius + 1)
        return {int(i) for i in near if inside(corners, *xy[i])}

    drag(page, [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in np.arange(6) * math.pi / 3])
    heading = page.get_by_role("heading", name="Picked on the map")
    expect(heading).to_be_visible(timeout=LONG)
    wait_idle(page)
    picked = int(heading.inner_text().split("(")[1].split(")")[0].replace(",", ""))
    smallest, largest = held(r - 2), held(r + 2)
    assert len(smallest) > 60 and len(smallest) <= picked <= len(largest), (picked, len(smallest), len(largest))
    # a feature file has no images: the picked samples are a paged table (label, role, score)
    table = page.locator('[data-testid="stDataFrame"]').last
    expect(table).to_be_visible(timeout=60_000)
    expect(page.get_by_text(f"60 of {picked:,} shown (page 1 of")).to_be_visible()
    page.screenshot(path=str(path.parent / "density_lasso.png"))
    assert_clean(page, browser)


def test_a_umap_map_in_the_background_shows_its_progress_and_time_left(pool, browser):
    url, path, _ = pool
    page = browser.page()
    page.goto(f"{url}/?data=features&file={path}&budget=300")
    expect(page.get_by_role("heading", name="Select samples to label")).to_be_visible(timeout=LONG)
    bar = page.locator('[data-testid="stProgress"]').filter(has_text="UMAP: ")
    expect(bar).to_be_visible(timeout=LONG)
    expect(bar).to_contain_text("s so far")
    expect(bar).to_contain_text("layout, epoch", timeout=LONG)  # the layout's epochs, with the time left
    expect(bar).to_contain_text("s left")
    expect(page.get_by_text("Computing the UMAP map")).to_have_count(0, timeout=LONG)  # then the map comes
    wait_select(page)
    assert_clean(page, browser)
