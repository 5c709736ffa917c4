"""The README's screenshots and the Learn page, in a real browser (Debian's chromium driven
by playwright against `streamlit run app.py`); failing on any exception box, console error
or page error like every browser journey (see browser.py)."""

import time
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from browser import LONG, assert_clean, go, metric, nudge, slider_value, streamlit_server, wait_idle, wait_select

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with streamlit_server(tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("log") / "streamlit.log") as url:
        yield url


def test_select_move_slider_see_map_update_readme_screenshot(server, browser):
    page = browser.page(height=1150)
    page.goto(server)
    wait_select(page)
    # The UMAP map is computed in the background at first load; wait for it.
    expect(page.get_by_text("Computing the UMAP map")).to_have_count(0, timeout=LONG)
    # Its worker process imported the app without running it (it ran the app bare before,
    # which filled the server's log with Streamlit's warnings).
    assert "WARNING" not in server.log.read_text(), server.log.read_text()[-2000:]
    before = metric(page, "Removed")
    nudge(page, "P_rm: removal ratio", 6)  # 0.10 -> 0.40
    started = time.perf_counter()
    page.get_by_role("button", name="Select", exact=True).click()
    value = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text("Removed", exact=True)).locator(
        '[data-testid="stMetricValue"]')
    expect(value).not_to_have_text(before, timeout=60_000)
    after = metric(page, "Removed").replace(",", "")
    expect(page.locator(".legendtext").filter(has_text=f"removed ({after})").first).to_be_attached(timeout=60_000)
    print(f"\nslider change -> map updated in the browser: {time.perf_counter() - started:.2f} s")
    wait_select(page)
    time.sleep(1.0)  # let plotly finish drawing before the screenshot
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.screenshot(path=str(ASSETS / "select.png"), full_page=False)
    assert_clean(page, browser)


def test_learn_page_steps_through_the_algorithm(server, browser):
    page = browser.page()
    page.goto(server)
    go(page, "Learn", "Learn: BiLAF step by step")
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
    texts = ["Stage 1: core samples", "Denoising by iterative", "The boundary score", "Iterative selection and",
             "The result."]
    for step, text in enumerate(texts):
        expect(page.get_by_text(text).first).to_be_visible(timeout=60_000)
        if step == 3:  # the picks step: its table and the figure, for the README
            expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible(timeout=30_000)
            time.sleep(1.0)
            page.screenshot(path=str(ASSETS / "learn.png"), full_page=False)
        if step < len(texts) - 1:
            page.get_by_role("button", name="Next ▶").click()
    expect(page.get_by_role("button", name="Next ▶")).to_be_disabled()  # the last step: no wrap to the first
    page.get_by_role("button", name="◀ Previous").click()
    expect(page.get_by_text(texts[-2]).first).to_be_visible(timeout=60_000)
    page.get_by_role("button", name="Next ▶").click()
    expect(page.get_by_text(texts[-1]).first).to_be_visible(timeout=60_000)
    page.get_by_text("Play", exact=True).click()  # autoplay moves on by itself, from the last step to the first
    expect(page.get_by_text(texts[0]).first).to_be_visible(timeout=30_000)
    assert_clean(page, browser)


def test_learn_budget_stays_when_fewer_points_lower_its_slider_maximum(server, browser):
    """Seen in Chromium: Points 600 -> 300 lowered Budget B's maximum (400 -> 300) and
    Budget B fell from 60 to 2, leaving the page one 'K > B' error."""
    page = browser.page()
    page.goto(server)
    go(page, "Learn", "Learn: BiLAF step by step")
    wait_idle(page)
    page.get_by_text("Data: a generated 2-D set").click()
    page.get_by_text("Parameters (the Select page's", exact=False).click()
    wait_idle(page)
    assert slider_value(page, "Budget B") == "60"
    for points in ("500", "400", "300", "200"):
        nudge(page, "Points", -1)
        wait_idle(page)
        assert slider_value(page, "Points") == points
        assert slider_value(page, "Budget B") == "60", points
    expect(page.get_by_text("Stage 1: core samples").first).to_be_visible(timeout=60_000)
    assert_clean(page, browser)


def test_learn_page_at_1000_px_cuts_off_no_button_label_and_no_formula(server, browser):
    """At a 1,000-px window (the sidebar open) the step row's buttons read "◀ Pre…" and
    "Nex…", the Play toggle lost its label and Eq. 7 was cut off after D(x, c_l."""
    page = browser.page(width=1000)
    page.goto(server)
    go(page, "Learn", "Learn: BiLAF step by step")
    page.get_by_text("3 · Boundary score", exact=True).click()
    expect(page.locator(".katex-display").first).to_be_visible(timeout=60_000)
    wait_idle(page)
    cut = page.evaluate("""() => [...document.querySelectorAll(
            '[data-testid="stMain"] button [data-testid="stMarkdownContainer"], '
            + '[data-testid="stMain"] [data-testid="stCheckbox"], [data-testid="stMain"] .katex-display')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.replace(/\\s+/g, ' ').slice(0, 40))""")
    assert not cut, cut
    assert_clean(page, browser)


def test_a_three_sample_pool_draws_its_umap_map_on_every_page(tmp_path, browser):
    # Seen by a newcomer: UMAP failed on 3 samples ("k >= N" from its spectral start), and
    # the Select page's 2 s refresh re-raised it into an ever longer traceback; Inspect and
    # Compare showed it as an exception box.
    tiny = tmp_path / "tiny.npz"
    np.savez(tiny, features=np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    with streamlit_server(tmp_path / "cache", tmp_path / "streamlit.log", BILAF_START_FEATURES=str(tiny),
                          BILAF_ALLOWED_ROOTS=str(tmp_path)) as url:
        page = browser.page()
        page.goto(url)
        expect(page.get_by_role("heading", name="Select samples to label")).to_be_visible(timeout=LONG)
        expect(page.get_by_text("2-D UMAP of the features")).to_be_visible(timeout=LONG)
        wait_idle(page)
        assert_clean(page, browser)
        for name, title in (("Inspect", "Inspect the selection"), ("Compare", "Compare selections")):
            go(page, name, title)
            wait_idle(page)
            expect(page.get_by_text("map failed")).to_have_count(0)
            assert_clean(page, browser)
