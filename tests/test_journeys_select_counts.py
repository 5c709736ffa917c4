"""Browser journeys on the Select page's counts and legend: what they say at K = B, with a
whole-budget method, and in a narrow window."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from browser import LONG, assert_clean, digits_server, go, map_box, metric, radio_value, wait_idle, wait_select
from studio.maps import drawn_at_most


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with digits_server(tmp_path_factory) as served:
        yield served


def _drawn(page, link: str) -> None:
    """Open the Select page at ``link``; wait for its map with its cores or a whole-budget
    method's picks (none may be boundary picks)."""
    page.goto(link)
    expect(page.get_by_role("heading", name="Select samples to label")).to_be_visible(timeout=LONG)
    expect(page.locator(".legendtext").filter(has_text=re.compile(r"^(core|selected) \(")).first).to_be_attached(
        timeout=LONG)
    wait_idle(page)


def _labels(page) -> list[str]:
    return page.locator('[data-testid="stMetricLabel"]').all_inner_texts()


def test_at_k_equal_to_b_the_page_says_stage_2_did_not_run(server, browser, tmp_path):
    """B = 30 of the digits' 1,797 is auto's low budget, K = B: the page showed a Removed
    count and per-cluster budgets that played no part in the selection."""
    page = browser.page()
    _drawn(page, server[0] + "/?data=digits&budget=30")
    assert _labels(page) == ["Selected", "Core", "Unselected"]
    assert metric(page, "Selected") == metric(page, "Core") == "30"
    expect(page.get_by_text("With K = B every label is a core: stage 2 (denoising, boundary picks) did not run",
                            exact=False)).to_be_visible()
    expect(page.get_by_text("Per-cluster budgets")).to_have_count(0)
    legend = page.locator(".js-plotly-plot").first.locator(".legendtext").evaluate_all(
        "els => els.map(e => e.textContent)")
    assert not [name for name in legend if name.startswith(("removed", "boundary"))], legend
    page.screenshot(path=str(tmp_path / "k_equals_b.png"), full_page=True)

    _drawn(page, server[0] + "/?data=digits&budget=30&n_cores=10")  # K < B: stage 2 runs, and is counted
    assert _labels(page) == ["Selected", "Core", "Boundary", "Removed", "Unselected"]
    expect(page.get_by_text("Per-cluster budgets")).to_be_visible()
    assert_clean(page, browser)


def test_a_whole_budget_methods_legend_names_the_colouring_as_the_control_does(server, browser, tmp_path):
    """TypiClust has no pseudo-classes: the legend said "Pool colour: pool" while the control
    said "pseudo-class"; the BiLAF-only settings say they do not apply to it."""
    page = browser.page()
    page.goto(server[0] + "/?data=digits&method=typiclust")
    expect(page.locator(".legendtext").filter(has_text=re.compile(r"^selected \(")).first).to_be_attached(
        timeout=LONG)
    wait_idle(page)
    assert radio_value(page, "true label") == "pseudo-class"
    expect(page.locator(".bilaf-legend")).to_contain_text(
        "Pool colour: pseudo-class (typiclust gives no pseudo-class per sample: the pool is one colour)")
    expect(page.get_by_text("the method selected now spends the whole budget in one stage and does not use them",
                            exact=False)).to_be_visible()
    page.get_by_role("button", name="Help for P_rm: removal ratio").hover()
    expect(page.get_by_text("BiLAF only: a whole-budget method (any other) does not use it.")).to_be_visible()
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "typiclust_legend.png"))
    page.get_by_text("true label", exact=True).click()
    expect(page.locator(".bilaf-legend")).to_contain_text("Pool colour: true label", timeout=LONG)
    wait_idle(page)
    assert_clean(page, browser)


def test_the_counts_read_whole_in_a_900_px_window(server, browser, tmp_path):
    """At 900 px the five counts shared five columns and "Unselected" read "1,…"."""
    page = browser.page(width=900)
    page.goto(server[0] + "/?data=digits")
    wait_select(page)
    values = page.locator('[data-testid="stMetricValue"], [data-testid="stMetricLabel"]')
    assert values.count() == 10
    cut = values.evaluate_all("""els => els.flatMap(e => [e, ...e.querySelectorAll('*')])
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)""")
    assert not cut, cut  # no label or number cut with an ellipsis
    assert re.fullmatch(r"1,\d{3}", metric(page, "Unselected"))  # the whole number
    page.locator('[data-testid="stMetric"]').first.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "counts_900.png"))
    # the budget field shows a five-digit budget whole (it had room for two digits: "8" of 89)
    budget = page.get_by_label("Budget B")
    budget.fill("12500")
    room = budget.evaluate("e => e.clientWidth - parseFloat(getComputedStyle(e).paddingLeft) "
                           "- parseFloat(getComputedStyle(e).paddingRight)")
    text = budget.evaluate("e => { const c = document.createElement('canvas').getContext('2d'); "
                           "c.font = getComputedStyle(e).font; return c.measureText(e.value).width; }")
    assert text <= room, (text, room)
    assert_clean(page, browser)


def _dark_share(page, index: int = 0) -> float:
    """The share of the index-th map's plotting area drawn black (luminance under 40): the pool hidden."""
    page.locator(".js-plotly-plot").nth(index).scroll_into_view_if_needed()
    shot = page.screenshot(clip=map_box(page, index))
    return float((np.asarray(Image.open(io.BytesIO(shot)).convert("L")) < 40).mean())


def test_thousands_of_picks_leave_the_pool_visible_on_select_and_compare(server, browser, tmp_path):
    """A whole-budget method's picks at B = 2,500 on CIFAR-10 were solid black blobs of
    stars on the Select map and on Compare's small multiples: the pool could not be seen.
    Crowded, they are outline stars, semi-transparent (boundary circles likewise); here
    half the digits, 900 picks."""
    page = browser.page()
    _drawn(page, server[0] + "/?data=digits&method=random&budget=900&projection=pca")
    star = page.locator(".js-plotly-plot").first.evaluate(
        "gd => gd._fullData.filter(t => t.name.startsWith('selected (')).map(t => [t.marker.symbol, t.marker.opacity])")
    assert len(star) == 1 and star[0][0] == "star-open" and star[0][1] < 0.7, star
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "select_900.png"))
    go(page, "Compare", "Compare selections")
    expect(page.locator(".js-plotly-plot").nth(3)).to_be_attached(timeout=LONG)
    wait_idle(page)
    shares = [_dark_share(page, i) for i in range(4)]  # bilaf, activeft, kmeans, random
    page.screenshot(path=str(tmp_path / "compare_900.png"))
    assert max(shares) < 0.04, shares  # 0.11 with filled stars (BiLAF: its 30 filled cores, 0.02)
    # Four maps side by side draw a fixed subset of each overlay beyond what one shows (at
    # B = 2,500 on CIFAR-10, BiLAF's 2,450 circles and 5,000 crosses were a red and grey
    # mass), and say so under the map: they have no legend.
    most = drawn_at_most(320, 4)
    drawn = [page.locator(".js-plotly-plot").nth(i).evaluate(
        "gd => gd._fullData.filter(t => !t.name.startsWith('pool')).map(t => [t.name, t.x.length])") for i in range(4)]
    assert drawn[0][1][0] == f"boundary (870; {most} drawn)" and drawn[0][1][1] == most, drawn
    assert all(layers == [[f"selected (900; {most} drawn)", most]] for layers in drawn[1:]), drawn
    expect(page.get_by_text(f"Drawn: selected (900; {most} drawn).")).to_have_count(3)
    assert_clean(page, browser)
