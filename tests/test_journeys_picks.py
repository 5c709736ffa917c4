"""Browser journey: a map pick made on the Select page is cleared from the Inspect page
(the pick belongs to the pool, so the Select page shows none afterwards either)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from bilaf_core.data import load_pool

from browser import (LONG, assert_clean, digits_server, drag, drawn_pick, gallery_ids, go, map_box, mark,
                     open_select, pick_tool, wait_idle, wait_select)

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with digits_server(tmp_path_factory) as served:
        yield served


def _box_pick(page, share: float):
    """Drag a box over the top-left ``share`` of the Select map's plotting area (hundreds of
    points) once its UMAP has arrived; return the map's box, the heading of the picked
    samples and their count as the page writes it."""
    expect(page.get_by_text("Computing the UMAP map")).to_have_count(0, timeout=LONG)
    wait_idle(page)
    pick_tool(page, "Box Select")
    box = map_box(page)
    x0, y0 = box["x"] + 5, box["y"] + 5
    x1, y1 = box["x"] + box["width"] * share, box["y"] + box["height"] * share
    drag(page, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], box=True)
    heading = page.get_by_role("heading", name=re.compile(r"Picked on the map \(\d[\d,]*\)"))
    expect(heading).to_be_visible(timeout=60_000)
    count = re.search(r"\(([\d,]+)\)", heading.inner_text()).group(1)
    wait_idle(page)
    return box, heading, count


def test_a_select_pick_is_cleared_on_inspect(server, browser, tmp_path):
    """A pick made on Select is drawn on Inspect's map as its selection (it was not: the
    caption said points were picked, the map showed none); a button clears it on both."""
    page = open_select(server[0], browser)
    _, _, count = _box_pick(page, 0.7)
    picked = drawn_pick(page)
    assert picked is not None and len(picked) == int(count.replace(",", ""))

    go(page, "Inspect", "Inspect the selection")
    line = page.get_by_text(f"{count} point(s) picked on the map")
    expect(line).to_be_visible(timeout=60_000)
    wait_idle(page)
    assert drawn_pick(page) == picked
    page.screenshot(path=str(tmp_path / "inspect_picked.png"))
    page.get_by_role("button", name="Clear the map pick").click()
    expect(page.get_by_text("point(s) picked on the map")).to_have_count(0, timeout=60_000)
    wait_idle(page)
    expect(page.get_by_text("Lasso or box points on the map to narrow this down")).to_be_visible()
    assert drawn_pick(page) is None
    page.screenshot(path=str(tmp_path / "inspect_cleared.png"))

    go(page, "Select", "Select samples to label")
    wait_idle(page)
    expect(page.get_by_role("heading", name=re.compile("Picked on the map"))).to_have_count(0)
    assert drawn_pick(page) is None
    page.screenshot(path=str(tmp_path / "select_after.png"))
    assert_clean(page, browser)


def test_an_inspect_rerun_keeps_the_select_pick(server, browser, tmp_path):
    """Paging Inspect's gallery (a rerun on which the map sends no selection) keeps the pick."""
    page = open_select(server[0], browser)
    _, _, count = _box_pick(page, 0.8)

    go(page, "Inspect", "Inspect the selection")
    expect(page.get_by_text(f"{count} point(s) picked on the map")).to_be_visible(timeout=60_000)
    wait_idle(page)
    page.get_by_label(re.compile(r"^Page \(of")).first.fill("2")
    page.get_by_label(re.compile(r"^Page \(of")).first.press("Enter")
    wait_idle(page)
    expect(page.get_by_text(f"{count} point(s) picked on the map")).to_be_visible()
    first = drawn_pick(page)
    assert first is not None and len(first) == int(count.replace(",", ""))

    # a box on Inspect's map, which shows Select's pick, picks anew; Select's map shows it
    pick_tool(page, "Box Select")
    box = map_box(page)
    x0, y0, x1, y1 = (box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5,
                      box["x"] + box["width"] - 5, box["y"] + box["height"] - 5)
    drag(page, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], box=True)
    line = page.get_by_text(re.compile(r"[\d,]+ point\(s\) picked on the map"))
    expect(line).not_to_contain_text(f"{count} point(s)", timeout=60_000)
    wait_idle(page)
    again = int(re.search(r"([\d,]+) point", line.inner_text()).group(1).replace(",", ""))
    second = drawn_pick(page)
    assert second is not None and len(second) == again and second != first
    go(page, "Select", "Select samples to label")
    expect(page.get_by_role("heading", name=f"Picked on the map ({again:,})")).to_be_visible(timeout=60_000)
    wait_idle(page)
    assert drawn_pick(page) == second
    # a double-click clears only a selection plotly drew itself: Select has the button too
    page.get_by_role("heading", name=re.compile("Picked on the map")).scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "select_shows_the_inspect_pick.png"))
    page.get_by_role("button", name="Clear the map pick").click()
    expect(page.get_by_role("heading", name=re.compile("Picked on the map"))).to_have_count(0, timeout=60_000)
    wait_idle(page)
    assert drawn_pick(page) is None
    assert_clean(page, browser)


def test_a_double_click_on_the_select_map_still_clears_its_pick(server, browser):
    """The pick now changes only when the map's own selection does: a double-click, which
    empties it, still clears the pick."""
    page = open_select(server[0], browser)
    box, heading, _ = _box_pick(page, 0.6)
    page.mouse.dblclick(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.9)
    expect(heading).to_have_count(0, timeout=60_000)
    wait_idle(page)
    assert_clean(page, browser)


def _overlay_rows(page, index: int = 0) -> dict[str, set[int]]:
    """Each overlay layer of the index-th map (every layer but the pool's): its legend name
    less the count -> the rows it draws."""
    return {name.split(" (")[0]: set(rows) for name, rows in page.locator(".js-plotly-plot").nth(index).evaluate(
        "gd => gd._fullData.filter(t => !t.name.startsWith('pool'))"
        ".map(t => [t.name, Array.from(t.customdata, c => c[0])])")}


def test_marks_are_drawn_on_both_maps_and_inspect_filters_by_mark(server, browser, tmp_path):
    """A newcomer marked samples on Inspect and could find them on no map, nor list only
    them: the maps now ring each marked sample (one legend entry per kind, the mark in its
    hover), and Inspect's Mark filter keeps the excluded, forced or unmarked samples."""
    page = open_select(server[0], browser)
    go(page, "Inspect", "Inspect the selection")
    expect(page.locator(".bilaf-caption").first).to_be_visible(timeout=LONG)
    wait_idle(page)
    overlays = _overlay_rows(page)
    selected = overlays["core"] | overlays["boundary"]
    rows = {str(sample): row for row, sample in enumerate(load_pool("digits").ids)}
    excluded = gallery_ids(page)[0]  # the selection comes first: a selected sample to exclude
    forced = next(sample for sample, row in rows.items() if row not in selected)  # offered after the selection
    mark(page, excluded, forced)
    wait_idle(page)
    rings = _overlay_rows(page)
    assert rings["excluded from the export"] == {rows[excluded]} and rings["forced into the export"] == {rows[forced]}
    legend = page.locator(".js-plotly-plot").first.locator(".legendtext").evaluate_all("els => els.map(e => e.textContent)")
    assert "excluded from the export (1)" in legend and "forced into the export (1)" in legend, legend
    hover = page.locator(".js-plotly-plot").first.evaluate(
        "gd => gd._fullData.filter(t => t.name.startsWith('forced')).map(t => t.text[0])")
    assert hover and "mark: forced into the export" in hover[0], hover
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "inspect_marks.png"))

    for kind in ("excluded", "unmarked"):
        page.locator('[data-testid="stMultiSelect"]').filter(has_text="Mark").get_by_role(
            "button", name=f"Remove {kind}").click()
        wait_idle(page)
    expect(page.get_by_text("1 sample(s) match the filters")).to_be_visible(timeout=60_000)
    assert gallery_ids(page) == [forced]
    expect(page.get_by_text("outside the filters")).to_be_visible()
    assert set(_overlay_rows(page)) == {"forced into the export"}
    page.screenshot(path=str(tmp_path / "inspect_forced_only.png"), full_page=True)

    go(page, "Select", "Select samples to label")
    wait_select(page)
    rings = _overlay_rows(page)
    assert rings["excluded from the export"] == {rows[excluded]} and rings["forced into the export"] == {rows[forced]}
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "select_marks.png"))
    page.get_by_role("button", name="Clear marks").click()
    expect(page.get_by_text("Your marks on this pool")).to_have_count(0, timeout=30_000)
    wait_idle(page)
    assert not {"excluded from the export", "forced into the export"} & set(_overlay_rows(page))
    assert_clean(page, browser)
