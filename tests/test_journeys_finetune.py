"""Browser journeys of the Finetune page's full finetuning, as a newcomer walked it in
Chromium: settings out of range, a finished run's per-epoch charts, a cancelled run, a
failed run's error in a narrow window.
``BILAF_SHOTS=folder`` keeps a screenshot of each step there."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from bilaf_core.store import RunStore

from browser import LONG, assert_clean, digits_server, go, radio_value, slider, wait_idle, wait_select


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with digits_server(tmp_path_factory) as (url, folder):
        url.folder = folder  # a folder the app may open (an unlabelled image folder goes there)
        yield url


def _shot(page, name: str) -> None:
    folder = os.environ.get("BILAF_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _full_finetuning(server, browser):
    page = browser.page()
    page.goto(server)
    wait_select(page)
    go(page, "Finetune", "Finetune and compare")
    for _ in range(3):  # a click that lands in a rerun is lost: a user clicks again
        wait_idle(page)
        page.get_by_test_id("stRadioGroup").get_by_text("Full finetuning", exact=True).click()
        try:
            expect(page.get_by_label("Epochs", exact=True)).to_be_visible(timeout=15_000)
            break
        except AssertionError:
            continue
    expect(page.get_by_label("Epochs", exact=True)).to_be_visible(timeout=15_000)
    wait_idle(page)
    return page


def _type(page, label: str, value) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Tab")


def _smallest_images(page) -> None:
    thumb = slider(page, "Image size")
    thumb.focus()
    thumb.press("Home")  # 32 pixels: a run of a few seconds on a CPU


def test_settings_out_of_range_are_named_and_a_run_draws_titled_charts_in_percent(server, browser):
    """Epochs / Batch size / Evaluate at most of 0 turned the input red, a tooltip held the
    range and Launch did nothing. Then a finished run's curves had no titles and top-1 read
    0.2 where the page says 20 %. A misspelt backbone was found only by the run, which stayed
    in the history as failed: it is refused before launch, with the close names."""
    page = _full_finetuning(server, browser)
    _type(page, "Backbone (timm)", "no_such_model_xyz")
    _type(page, "Epochs", 0)
    _type(page, "Batch size", 0)
    _type(page, "Evaluate on at most", 0)
    page.get_by_role("button", name="Launch").click()
    for line in ("Not launched: Epochs must be an integer ≥ 1, got 0",
                 "Not launched: Batch size must be an integer ≥ 1, got 0",
                 "Not launched: Evaluate on at most must be an integer ≥ 1, got 0",
                 "Not launched: Backbone (timm): unknown backbone 'no_such_model_xyz'"):
        expect(page.get_by_text(line, exact=False)).to_be_visible(timeout=30_000)
    wait_idle(page)
    _shot(page, "1_refused")
    time.sleep(2.0)  # a launched run's Cancel button comes with the job's fragment (every second)
    assert page.get_by_role("button", name="Cancel").count() == 0
    assert page.get_by_label("Epochs", exact=True).input_value() == "0"  # what was typed stays

    _type(page, "Backbone (timm)", "tf_efficientnet_lite0")
    _type(page, "Epochs", 2)
    _type(page, "Batch size", 64)
    _type(page, "Warm-up epochs", 0)
    _type(page, "Evaluate on at most", 20)
    _smallest_images(page)
    page.get_by_role("button", name="Launch").click()
    # the run's banner (the options' caption also says "the best top-1 seen is reported")
    expect(page.locator('[data-testid="stAlertContentSuccess"]').filter(has_text="best top-1")).to_be_visible(
        timeout=LONG)
    expect(page.get_by_text("must be an integer", exact=False)).to_have_count(0)
    expect(page.get_by_text("unknown backbone", exact=False)).to_have_count(0)
    for title in ("Training loss per epoch", "Top-1 per epoch"):
        expect(page.locator(".gtitle").filter(has_text=title)).to_have_count(1, timeout=30_000)
    top1 = page.locator(".js-plotly-plot").filter(has=page.locator(".gtitle", has_text="Top-1 per epoch"))
    ticks = top1.locator(".ytick text").all_text_contents()
    assert ticks and all(t.endswith("%") for t in ticks), ticks
    assert top1.locator(".g-xtitle").text_content() == "epoch"
    wait_idle(page)
    _shot(page, "2_charts")
    assert_clean(page, browser)


def test_a_cancelled_run_says_once_where_it_stopped(server, browser):
    """A cancelled run read "cancelled: cancelled during evaluation", and the run history's
    error column cut it."""
    page = _full_finetuning(server, browser)
    _type(page, "Epochs", 50)
    _type(page, "Warm-up epochs", 0)
    _type(page, "Evaluate on at most", 20)
    _type(page, "Seed", 7)  # not the other journey's run, whose checkpoint would resume
    _smallest_images(page)
    page.get_by_role("button", name="Launch").click()
    cancel = page.get_by_role("button", name="Cancel")
    expect(cancel).to_be_visible(timeout=60_000)
    time.sleep(3.0)  # into an epoch past the first
    cancel.click()
    said = page.get_by_text("Full finetuning · bilaf · B = 90: Cancelled during ", exact=False)
    expect(said).to_be_visible(timeout=LONG)
    text = said.inner_text()
    assert text.count("ancelled") == 1 and " of 50" in text and "/" not in text, text  # no checkpoint path
    wait_idle(page)
    page.locator('[data-testid="stDataFrame"]').last.scroll_into_view_if_needed()
    _shot(page, "3_cancelled")
    assert_clean(page, browser)


def test_maps_draw_each_role_with_one_marker_learn_and_select_alike(server, browser):
    """Learn's result step drew BiLAF's cores as circles (every other map: stars; circles are
    boundary picks), and the Select map's removed samples read as grey dots at their small
    sizes, where the legend says crosses."""
    page = browser.page()
    page.goto(server)
    wait_select(page)
    removed = page.locator(".legend .traces").filter(has_text="removed").locator("path.scatterpts").first
    style = removed.get_attribute("style") or ""
    assert "stroke-width: 1.5px" in style, style  # a line-drawn cross, as on the map
    assert removed.get_attribute("d").count("M") == 2, removed.get_attribute("d")  # two strokes: x-thin
    go(page, "Learn", "Learn: BiLAF step by step")
    wait_idle(page)
    page.get_by_text("5 · Result", exact=True).click()
    wait_idle(page)
    figure = page.locator(".js-plotly-plot").first
    for entry in ("removed (", "boundary (", "cores (", "picks ("):
        expect(figure.locator(".legendtext").filter(has_text=entry)).to_have_count(1, timeout=30_000)
    _shot(page, "4_learn_result")
    assert_clean(page, browser)


def test_a_failed_runs_error_reads_whole_in_a_900_px_window(server, browser):
    # The history's error column was cut at the table's edge in a 900 px window: the
    # message is written out under the table (the newest failed run's, or the selected run's).
    page = browser.page(width=900, height=1000)
    page.goto(server + "/finetune")
    expect(page.get_by_role("heading", name="Finetune and compare")).to_be_visible(timeout=LONG)
    wait_idle(page)
    said = page.get_by_text(re.compile(r"^(No runs yet in |Store: )")).first.inner_text()
    store = RunStore(re.sub(r"^(No runs yet in |Store: )", "", said).strip().rstrip("."))
    picked = store.add_selection(dataset="digits", backbone="pixels", params={"method": "bilaf", "random_state": 0},
                                 indices=np.arange(89), sample_ids=None, n_pool=1797)
    error = ("RuntimeError: out of memory while allocating a batch of 64 images at 224 px; lower the batch size or "
             "the image size and launch again")
    store.finish_run(store.start_run(protocol="finetune", params={"epochs": 3}, selection_id=picked), status="failed",
                     error=error)
    store.finish_run(store.start_run(protocol="knn", params={"k": 20}, selection_id=picked), status="completed",
                     metrics={"top1": 0.8})
    page.reload()
    expect(page.get_by_role("heading", name="Run history")).to_be_visible(timeout=LONG)
    wait_idle(page)
    written = page.locator('[data-testid="stCode"]').filter(has_text="RuntimeError")
    expect(written).to_be_visible()
    assert " ".join(written.inner_text().split()) == error
    written.scroll_into_view_if_needed()
    box = written.bounding_box()
    assert box["x"] + box["width"] <= 900, box  # inside the window, wrapped
    page.screenshot(path=str(Path(store.path).parent / "history_error_900.png"))
    table = page.locator('[data-testid="stDataFrame"]').last
    top = table.bounding_box()
    page.mouse.click(top["x"] + 17, top["y"] + 35 + 17)  # the newest run's (the k-NN run's) selection box
    expect(page.get_by_text("The selected run has no error.")).to_be_visible(timeout=LONG)
    expect(written).to_have_count(0)
    wait_idle(page)
    assert_clean(page, browser)


def test_an_unlabelled_folder_without_a_test_folder_is_refused_before_launch(server, browser):
    """A newcomer's walk: an unlabelled image folder, its labels CSV uploaded, no test
    folder: Launch started a run that failed ("folder has no labelled test split"), and the
    "Upload a CSV" warning stayed after the CSV was in. Also: the protocol chosen stays
    through a visit to another page."""
    from PIL import Image

    pool = Path(server.folder) / "unlabelled"
    pool.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(pool / f"img{i:02d}.png")
    labels = Path(server.folder) / "my labels.csv"
    labels.write_text("id,label\n" + "".join(f"img{i:02d}.png,{'cat' if i % 2 else 'dog'}\n" for i in range(40)))
    page = browser.page()
    page.goto(f"{server}/?data=folder&root={pool}&backbone=pixels")
    wait_select(page)
    go(page, "Finetune", "Finetune and compare")
    wait_idle(page)
    missing = page.get_by_text(f"Not ready to launch: folder ({pool}) has no labels and no labelled test folder",
                               exact=False)
    asked = page.get_by_text("This pool has no labels. Upload a CSV", exact=False)
    launch = page.get_by_role("button", name="Launch")
    expect(missing).to_be_visible()
    expect(asked).to_be_visible()
    expect(launch).to_be_disabled()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(labels))
    expect(asked).to_have_count(0, timeout=30_000)  # the CSV is in
    wait_idle(page)
    expect(missing).to_be_visible()
    expect(launch).to_be_disabled()
    for _ in range(3):  # a click that lands in a rerun is lost: a user clicks again
        page.get_by_test_id("stRadioGroup").get_by_text("Full finetuning", exact=True).click()
        wait_idle(page)
        if radio_value(page, "Full finetuning") == "Full finetuning":
            break
    expect(launch).to_be_disabled()
    expect(missing).to_be_visible()
    _shot(page, "5_no_test_folder")
    go(page, "Select", "Select samples to label")
    wait_idle(page)
    go(page, "Finetune", "Finetune and compare")
    wait_idle(page)
    assert radio_value(page, "Full finetuning") == "Full finetuning"
    expect(page.get_by_label("Epochs", exact=True)).to_be_visible()
    assert_clean(page, browser)
