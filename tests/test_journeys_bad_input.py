"""Browser journeys of a newcomer's bad inputs on the built-in digits: an emptied or
lettered budget, K above a lowered budget, a .csv upload, a file given as the image
folder, a bad Ray address, a one-sample feature file, a link without its data source or
to a missing feature file, a link's warning that must outlive the background map, a
link's budget=abc opened on Learn, a link's K of 0 opened on Inspect, Compare rows differing by seed, Compare cells outside the Select page's ranges, and an Inspect
page number and a link's values out of range.
Each drives Debian's chromium against `streamlit run app.py` and fails on any Streamlit
exception box, console error or page error."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from browser import LONG, assert_clean, choose, digits_server, go, nudge, open_select, slider_value, wait_idle


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # An empty cache: with the digits' map cached, the Compare journey's second cell edit (row 2's
    # seed) never reached the server in Chromium, 3 tries in a row (not yet understood; see
    # _edit_cell), where with the map computed in the background it always did.
    with digits_server(tmp_path_factory, cached_map=False) as served:
        yield served


def _press_select(page) -> None:
    page.get_by_role("button", name="Select", exact=True).click()
    time.sleep(0.5)
    wait_idle(page)


def test_an_emptied_or_lettered_budget_keeps_the_last_budget_and_says_so(server, browser):
    page = open_select(server[0], browser)
    budget = page.get_by_label("Budget B")
    expect(page.get_by_text("Changes here apply when you press Select")).to_be_visible()
    for typed in ("", "abc"):  # a number field takes no letters: the browser sends it as empty
        budget.fill("")
        if typed:
            budget.press_sequentially(typed)
        _press_select(page)
        expect(page.get_by_text("The Budget B field is empty or not a number: selecting B = 90, the last value "
                                "given.")).to_be_visible()
        expect(page.get_by_text("B = 90 samples, 5.01 % of the 1,797-sample pool.")).to_be_visible()
        assert budget.input_value() == ""  # not 0
        expect(page.get_by_text("less than one sample")).to_have_count(0)
    assert_clean(page, browser)


def test_k_stops_at_the_budget_and_a_lower_budget_moves_k_down_with_a_lasting_warning(server, browser):
    page = open_select(server[0], browser)
    page.get_by_label("Budget B").fill("20")
    _press_select(page)
    nudge(page, "K: core samples", 40)  # far beyond the budget
    assert slider_value(page, "K: core samples") == "20"
    _press_select(page)
    page.get_by_label("Budget B").fill("6")
    _press_select(page)
    said = page.get_by_text("K = 20 is more than the budget B = 6: selecting with K = 6.")
    expect(said).to_be_visible()
    assert slider_value(page, "K: core samples") == "6"
    expect(page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')).to_have_count(0)
    expect(page.get_by_text("Computing the UMAP map")).to_have_count(0, timeout=LONG)  # the map's rerun
    time.sleep(3)
    wait_idle(page)
    expect(said).to_be_visible()
    page.get_by_label("Budget B").fill("20")  # the budget back: K = 20 with it (it stayed 6, "set by hand")
    _press_select(page)
    expect(page.get_by_text("K = 20 is back: the budget B = 20 allows it again.")).to_be_visible()
    assert slider_value(page, "K: core samples") == "20"
    assert "n_cores=20" in page.url
    assert_clean(page, browser)


def test_data_page_names_a_csv_upload_a_file_folder_and_a_bad_ray_address(server, browser):
    folder = server[1]
    (folder / "notes.csv").write_text("a,b\n1,2\n")
    (folder / "cat.png").write_bytes(b"not an image folder")
    page = open_select(server[0], browser)
    go(page, "Data", "Data")
    choose(page, "Source", "Feature file (upload)")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(folder / "notes.csv"))
    # the uploader takes only the types its label names (it took a .txt): the browser refuses it there
    expect(page.get_by_text("files are not allowed.")).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Load and extract features").click()
    expect(page.get_by_text("Cannot load this source: choose a feature file (.npy, .npz, .parquet) to "
                            "upload")).to_be_visible(timeout=60_000)

    page.goto(server[0] + "/data")  # a fresh form
    expect(page.get_by_role("heading", name="Data")).to_be_visible(timeout=LONG)
    wait_idle(page)
    page.get_by_text("Ray (a cluster, or a local Ray runtime)").click()
    for address, said in (("not an address", "got 'not an address'"),
                          ("127.0.0.1:99999", "(its port, 99999, is outside 1 to 65535)")):
        page.get_by_label("Ray cluster address").fill(address)
        page.get_by_role("button", name="Load and extract features").click()
        expect(page.get_by_text(said, exact=False)).to_be_visible(timeout=60_000)
        wait_idle(page)
    page.get_by_label("Ray cluster address").fill("")
    page.get_by_text("This machine", exact=True).click()
    choose(page, "Source", "Image folder")
    page.get_by_role("textbox", name="Folder (local copy").fill(str(folder / "cat.png"))
    page.get_by_role("button", name="Load and extract features").click()
    expect(page.get_by_text(f"{folder / 'cat.png'} is a file, not a folder: give the folder that holds the "
                            "images")).to_be_visible(timeout=60_000)
    wait_idle(page)
    # outside the allowed folders, a file and a folder get the same answer: it must not tell what exists there
    page.get_by_role("textbox", name="Folder (local copy").fill("/etc/passwd")
    page.get_by_role("button", name="Load and extract features").click()
    expect(page.get_by_text("/etc/passwd is outside the folders this app may read")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("is a file, not a folder")).to_have_count(0)
    wait_idle(page)
    assert_clean(page, browser)


def test_a_one_sample_feature_file_says_why_k_is_one(server, browser, tmp_path):
    path = tmp_path / "one sample.npy"
    np.save(path, np.ones((1, 8), dtype=np.float32))
    page = open_select(server[0], browser)
    go(page, "Data", "Data")
    choose(page, "Source", "Feature file (upload)")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    expect(page.get_by_text(path.name)).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Load and extract features").click()
    expect(page.get_by_role("heading", name=f"upload {path.name}")).to_be_visible(timeout=LONG)
    go(page, "Select", "Select samples to label")
    expect(page.get_by_text("K = 1 (the pool has a single sample)", exact=False)).to_be_visible(timeout=LONG)
    expect(page.get_by_text("set by hand", exact=False)).to_have_count(0)
    wait_idle(page)
    assert_clean(page, browser)


def _open_link(browser, url: str, title: str, warning: str):
    """A new tab on ``url``: the page titled ``title`` opens, with no error and one warning
    holding ``warning``; return the tab and that warning."""
    page = browser.page()
    page.goto(url)
    expect(page.locator('h1, [data-testid="stAlertContentError"]').first).to_be_visible(timeout=LONG)
    wait_idle(page)
    expect(page.locator('[data-testid="stAlertContentError"]')).to_have_count(0)
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    warned = page.locator('[data-testid="stAlertContentWarning"]').filter(has_text=warning)
    expect(warned).to_have_count(1)
    return page, warned


def test_a_link_without_data_and_a_link_warning_that_outlives_the_map(server, browser):
    page = open_select(server[0], browser, "/?budget=120&n_cores=7")
    expect(page.get_by_text("The link's settings (budget=120, n_cores=7) were not read", exact=False)).to_be_visible()
    expect(page.get_by_text("no data= parameter", exact=False)).to_be_visible()
    page = open_select(server[0], browser, "/?data=digits&method=magic&projection=tsne")
    said = page.get_by_text("method = 'magic'", exact=False)
    expect(said).to_be_visible()
    expect(page.get_by_text("Computing the t-SNE map")).to_have_count(0, timeout=LONG)  # arrived: a rerun
    wait_idle(page)
    expect(said).to_be_visible()
    page.get_by_role("button", name="Dismiss").click()
    expect(said).to_have_count(0, timeout=60_000)
    wait_idle(page)
    assert_clean(page, browser)
    # A link to a missing feature file opened a page holding only an error (no title, no sidebar
    # lines): the digits open, with one warning saying all of it; the link's method and budget,
    # which belong to the feature file, are not applied to the digits (they were: kmeans, B = 100).
    gone = server[1] / "gone.npz"
    page, warned = _open_link(browser, f"{server[0]}/inspect?data=features&file={gone}&method=kmeans&budget=100",
                              "Inspect the selection", "The link's data source")
    for part in (f"The link's data source was not opened: {gone} was not found: check the path",
                 "Showing digits instead", "The link's other settings (method=kmeans, budget=100) were not applied"):
        expect(warned).to_contain_text(part)
    sidebar = page.locator('[data-testid="stSidebarUserContent"]')
    expect(sidebar).to_contain_text("Data digits")
    expect(sidebar).to_contain_text("Run bilaf · B = 90 · K = auto")
    page.screenshot(path=str(Path(server[1]) / "link_missing_feature_file.png"))
    assert_clean(page, browser)
    # A link's n_cores=0 was said only on Select: Inspect refused the selection ("n_cores must be
    # in [1, 90] ...; change them there"), the sidebar read K = 0, the warning named only the budget.
    page, warned = _open_link(browser, f"{server[0]}/inspect?data=digits&backbone=pixels&n_cores=0&budget=abc",
                              "Inspect the selection", "link")
    for part in ("n_cores = '0' (K is 'auto' or a whole number, at least 1): using 'auto' instead",
                 "budget = 'abc' (not a number): using 90 instead"):
        expect(warned).to_contain_text(part)
    expect(page.locator('[data-testid="stSidebarUserContent"]')).to_contain_text("Run bilaf · B = 90 · K = auto")
    expect(page).to_have_url(re.compile(r"[?&]n_cores=auto"))
    page.screenshot(path=str(Path(server[1]) / "link_k0_on_inspect.png"))
    assert_clean(page, browser)
    # Opened on Learn (which reads no budget), a link's budget=abc went unsaid and stayed in the
    # address: no pool takes it, so it is said at once and dropped, as any other bad value.
    page, warned = _open_link(browser, f"{server[0]}/learn?data=digits&budget=abc", "Learn: BiLAF step by step",
                              "link")
    expect(warned).to_have_text("Part of this link could not be used: budget = 'abc' (not a number): using 5 % of "
                                "the pool instead. Change it on the Select page.")
    expect(page).not_to_have_url(re.compile(r"[?&]budget="))
    expect(page).to_have_url(re.compile(r"/learn\?data=digits"))
    page.screenshot(path=str(Path(server[1]) / "link_bad_budget_on_learn.png"))
    assert_clean(page, browser)


def test_compare_rows_that_differ_by_seed_read_differently(server, browser):
    page = open_select(server[0], browser)
    go(page, "Compare", "Compare selections")
    expect(page.locator(".js-plotly-plot")).to_have_count(4, timeout=LONG)
    wait_idle(page)
    editor = page.locator('[data-testid="stDataFrame"]').first
    box = editor.bounding_box()
    page.mouse.click(box["x"] + 40, box["y"] + 35 + 17)  # the first row's method cell
    for _ in range(5):  # method, K, P_rm, delta, denoise, seed
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    cell = page.locator(".gdg-input")
    expect(cell).to_be_focused(timeout=30_000)
    cell.fill("3")
    cell.press("Enter")
    expect(page.get_by_text("bilaf K=auto Prm=0.1 δ=1.1 seed=3").first).to_be_visible(timeout=LONG)
    wait_idle(page)
    page.screenshot(path=str(Path(server[1]) / "compare.png"))
    assert_clean(page, browser)


def test_a_feature_file_opened_by_a_link_shows_on_the_data_page_and_a_typed_one_loads(server, browser):
    """Opened by a link, a feature file on the server was shown on the Data page as
    'Feature file (upload)' with nothing attached, and no source took its path: loading it
    again said 'choose a feature file to upload' (a newcomer's walk)."""
    url, folder = server
    rng = np.random.default_rng(0)
    first, second = folder / "pool a.npz", folder / "pool b.npy"
    np.savez(first, features=rng.standard_normal((150, 6)).astype(np.float32))
    np.save(second, rng.standard_normal((120, 6)).astype(np.float32))
    page = open_select(url, browser, f"/?data=features&file={first}&budget=20")
    go(page, "Data", "Data")
    expect(page.get_by_role("heading", name="feature file pool a.npz")).to_be_visible()
    expect(page.get_by_role("combobox", name="Source")).to_have_value("Feature file on this machine")
    path_box = page.get_by_role("textbox", name="Feature file path")
    expect(path_box).to_have_value(str(first))
    for typed, said in ((str(folder), f"{folder} is a folder, not a feature file"),
                        (str(folder / "gone.npz"), f"{folder / 'gone.npz'} was not found"),
                        ("/etc/passwd", "/etc/passwd is outside the folders this app may read")):
        path_box.fill(typed)
        page.get_by_role("button", name="Load and extract features").click()
        expect(page.get_by_text(f"Cannot load this source: {said}", exact=False)).to_be_visible(timeout=60_000)
        wait_idle(page)
    path_box.fill(str(second))
    page.get_by_role("button", name="Load and extract features").click()
    expect(page.get_by_role("heading", name="feature file pool b.npy")).to_be_visible(timeout=LONG)
    wait_idle(page)
    expect(page.locator('[data-testid="stMetric"]').filter(has_text="Samples")).to_contain_text("120")
    page.screenshot(path=str(folder / "feature_path.png"), full_page=True)
    assert_clean(page, browser)


def _edit_cell(page, row: int, column: int, text: str, said: str, *, tries: int = 3) -> None:
    """Type ``text`` into the Compare table's cell (row, column), both from 0 (column 0:
    method), until the page says ``said``: the grid is a canvas, so click the first row's
    method cell, step to the cell with the arrow keys, open its editor with Enter. An edit
    committed just after the page was drawn can be lost in the grid itself, under load: the
    cell shows its old value and the server never hears of it (seen in 3 of 8 tries once the
    digits' map came from the cache, never with a second's pause first); a user types it
    again, and so does this, up to ``tries`` times."""
    for attempt in range(tries):
        wait_idle(page)  # a rerun still drawing the page takes the grid's focus from the cell (seen under load)
        editor = page.locator('[data-testid="stDataFrame"]').first
        editor.scroll_into_view_if_needed()
        box = editor.bounding_box()
        page.mouse.click(box["x"] + 40, box["y"] + 35 + 17)
        for key, times in (("ArrowDown", row), ("ArrowRight", column)):
            for _ in range(times):
                page.keyboard.press(key)
        page.keyboard.press("Enter")
        cell = page.locator(".gdg-input")
        expect(cell).to_be_focused(timeout=30_000)
        cell.press("Control+A")
        page.keyboard.type(text)  # as a user types: a whole-number column's editor dropped the "." of 1.5
        cell.press("Enter")
        time.sleep(0.5)
        wait_idle(page)
        try:
            expect(page.get_by_text(said, exact=False)).to_be_visible(timeout=15_000)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise


def _runs_with(page) -> list[list[str]]:
    """The rows of the Compare page's "what each row runs with" table (its second table)."""
    cells = page.locator('[data-testid="stDataFrame"]').nth(1).locator('[role="gridcell"]').all_inner_texts()
    return [cells[i:i + 7] for i in range(0, len(cells), 7)]


def test_compare_takes_the_select_pages_ranges_and_shows_what_each_row_runs_with(server, browser):
    # A P_rm of 0.95 was applied though the Select page's slider stops at 0.9, the seed's
    # range was worded otherwise than there, and an empty cell showed "–": not which value
    # the row ran with (the Select page's).
    page = open_select(server[0], browser)
    go(page, "Compare", "Compare selections")
    expect(page.locator(".js-plotly-plot")).to_have_count(4, timeout=LONG)
    wait_idle(page)
    _edit_cell(page, 0, 2, "0.95", "Row 1 (bilaf), removal_ratio = 0.95 was not applied: it is outside 0 to 0.9, "
                                   "the Select page's range.")  # row 1's removal_ratio
    _edit_cell(page, 1, 5, "-1", "Row 2 (activeft), seed = -1 was not applied: it is outside 0 to 2,147,483,647, "
                                 "the Select page's range.")  # row 2's seed
    _edit_cell(page, 2, 5, "1.5", "Row 3 (kmeans), seed = 1.5 was not applied: it is not a whole number from 0 to "
                                  "2,147,483,647.")  # row 3's seed: it became 15, silently
    wait_idle(page)
    rows = _runs_with(page)
    assert rows[0] == ["1", "bilaf", "auto", "0.1 (Select)", "1.1", "idc", "0"], rows
    assert rows[1] == ["2", "activeft", "not used", "not used", "not used", "not used", "0 (Select)"], rows
    expect(page.get_by_text("What each row runs with.", exact=False)).to_be_visible()
    page.screenshot(path=str(Path(server[1]) / "compare_ranges.png"), full_page=True)
    # the same words as the Select page's, for the same range
    go(page, "Select", "Select samples to label")
    page.get_by_text("Advanced").click()
    page.get_by_label("Seed").fill("-1")
    page.get_by_role("button", name="Select", exact=True).click()
    expect(page.get_by_text("Seed -1 is outside 0 to 2,147,483,647: selecting with seed 0.")).to_be_visible(
        timeout=LONG)
    wait_idle(page)
    assert_clean(page, browser)


def test_inspect_shows_the_page_it_shows_and_the_address_the_values_in_use(server, browser):
    # The page field kept 0 or 999 while page 1 or 30 was shown; a link's budget of 99,999
    # and P_rm of 0.95 (above the Select page's slider) stayed in the address after the
    # app had selected 1,797 with P_rm 0.9, so a reload or a shared link said otherwise.
    page = browser.page()
    page.goto(server[0] + "/inspect?data=digits&budget=99999&removal_ratio=0.95")
    expect(page.get_by_role("heading", name="Inspect the selection")).to_be_visible(timeout=LONG)
    wait_idle(page)
    expect(page.get_by_text("B = 1,797 (the Select page's selection)", exact=False)).to_be_visible()
    expect(page.get_by_text("removal_ratio = '0.95' (this input takes 0 to 0.9): using 0.9 instead",
                            exact=False)).to_be_visible()
    expect(page).to_have_url(re.compile(r"[?&]budget=1797(&|$)"))
    expect(page).to_have_url(re.compile(r"[?&]removal_ratio=0\.9(&|$)"))
    field = page.get_by_label("Page (of 30, 60 per page)")
    for typed, shown in (("999", "30"), ("0", "1")):
        field.fill(typed)
        field.press("Enter")
        expect(page.get_by_text(f"Page {typed} does not exist: there are pages 1 to 30 (1,797 samples, 60 per page); "
                                f"showing page {shown}.")).to_be_visible(timeout=LONG)
        wait_idle(page)
        assert field.input_value() == shown
        expect(page.get_by_text(f"(page {shown} of 30)", exact=False)).to_be_visible()
        if typed == "999":
            field.scroll_into_view_if_needed()
            page.screenshot(path=str(Path(server[1]) / "inspect_page_field.png"))
    assert_clean(page, browser)
