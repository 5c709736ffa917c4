"""Browser journeys on the built-in digits: what a person does, and what they must see.
Each test drives Debian's chromium against `streamlit run app.py` with the mouse and the
keyboard, and fails on any Streamlit exception box, console error or page error."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from bilaf_core.data import load_pool
from bilaf_core.store import RunStore

from browser import (LONG, assert_clean, choose, digits_server, drag, gallery_ids, go, inside, map_box, map_points,
                     mark, metric, nudge, open_select, pick_tool, radio_value, slider, slider_value, wait_idle, wait_select)

DIGIT_IDS = load_pool("digits").ids


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with digits_server(tmp_path_factory) as served:
        yield served


def _shape(tool: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if tool == "Lasso Select":  # a hexagon
        return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 7)[:-1]]
    return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]


def _lasso_check(page, tool: str, index: int = 0) -> set[str]:
    """Drag ``tool`` over a shape that holds 3 to 60 points, none of them within 3 pixels
    of its outline (so what is inside is not a matter of rounding); return the ids
    inside it, read from the figure's own coordinates."""
    pick_tool(page, tool, index)
    box = map_box(page, index)
    points = map_points(page, index)
    xy = np.array([(x, y) for x, y, _ in points])
    for cx, cy in xy[:: max(1, len(xy) // 400)]:
        if not (box["x"] + 60 < cx < box["x"] + box["width"] - 60 and box["y"] + 60 < cy < box["y"] + box["height"] - 60):
            continue
        for r in (60, 50, 40, 30, 24, 18, 14):
            shape = _shape(tool, cx, cy, r)
            held = [inside(shape, x, y) for x, y in xy]
            if 3 <= sum(held) <= 60 and not any(inside(_shape(tool, cx, cy, r + 3), x, y) != inside(
                    _shape(tool, cx, cy, r - 3), x, y) for x, y in xy):
                drag(page, shape, box=tool == "Box Select")
                return {str(DIGIT_IDS[int(row)]) for (x, y, row), h in zip(points, held) if h}
    raise AssertionError("no shape with 3 to 60 clearly inside points on this map")


def test_lasso_and_box_on_the_select_and_inspect_maps(server, browser):
    page = open_select(server[0], browser)
    expect(page.get_by_text("Computing the UMAP map")).to_have_count(0, timeout=LONG)
    wait_idle(page)

    expected = _lasso_check(page, "Lasso Select")
    expect(page.get_by_role("heading", name=f"Picked on the map ({len(expected)})")).to_be_visible(timeout=60_000)
    wait_idle(page)
    on_select = gallery_ids(page)
    assert set(on_select) == expected
    assert_clean(page, browser)

    go(page, "Inspect", "Inspect the selection")  # the pick belongs to the pool: Inspect shows it
    expect(page.get_by_text(f"{len(expected)} point(s) picked on the map")).to_be_visible(timeout=60_000)
    wait_idle(page)
    assert gallery_ids(page) == on_select  # one order on both pages: the selected first, as picked (was by id)
    page.screenshot(path=str(Path(__file__).parents[1] / "assets" / "inspect.png"))

    boxed = _lasso_check(page, "Box Select")
    expect(page.get_by_text(f"{len(boxed)} point(s) picked on the map")).to_be_visible(timeout=60_000)
    wait_idle(page)
    assert set(gallery_ids(page)) == boxed
    assert_clean(page, browser)


def _tune(page) -> dict:
    """Set B, K, P_rm and the map on the Select page as a user does; return what the page shows."""
    page.get_by_label("Budget B").fill("120")
    nudge(page, "K: core samples", 4)
    nudge(page, "P_rm: removal ratio", 3)
    page.get_by_role("button", name="Select", exact=True).click()
    expect(page.get_by_text("B = 120 samples")).to_be_visible(timeout=LONG)
    page.get_by_text("t-SNE", exact=True).click()
    wait_select(page)
    return _shown(page)


def _shown(page) -> dict:
    return {"budget": page.get_by_label("Budget B").input_value(),
            "k": slider_value(page, "K: core samples"), "p_rm": slider_value(page, "P_rm: removal ratio"),
            "map": radio_value(page, "t-SNE"),
            **{name: metric(page, name) for name in ("Selected", "Core", "Boundary", "Removed")}}


def test_settings_survive_every_page_and_a_reload(server, browser):
    page = open_select(server[0], browser)
    tuned = _tune(page)
    assert tuned["budget"] == "120" and tuned["k"] == "4" and tuned["p_rm"] == "0.25", tuned
    expect(page.locator('[data-testid="stSidebar"]')).to_contain_text("B = 120 · K = 4")  # not one run behind

    go(page, "Inspect", "Inspect the selection")
    page.get_by_role("tab", name="One cluster, in the algorithm's order").click()
    go(page, "Finetune", "Finetune and compare")
    page.get_by_test_id("stRadioGroup").get_by_text("k-NN", exact=True).click()
    wait_idle(page)
    for name, title in (("Data", "Data"), ("Compare", "Compare selections"), ("Learn", "Learn: BiLAF step by step"),
                        ("Select", "Select samples to label")):
        go(page, name, title)
        wait_idle(page)
    wait_select(page)
    assert _shown(page) == tuned
    go(page, "Finetune", "Finetune and compare")
    expect(page.get_by_text("Linear probe", exact=True)).to_be_visible(timeout=LONG)
    assert radio_value(page, "Linear probe") == "k-NN"
    assert "budget=120" in page.url  # the address holds the settings on every page, from the start of its run

    page.reload()  # a new session: the URL carries the source and the settings
    expect(page.get_by_role("heading", name="Finetune and compare")).to_be_visible(timeout=LONG)
    wait_idle(page)  # the reloaded page has drawn (a click before its first run would go to a bare Select)
    go(page, "Select", "Select samples to label")
    wait_select(page)
    assert _shown(page) == tuned
    shared = browser.page()  # the same link in another tab opens the same selection
    shared.goto(page.url)
    wait_select(shared)
    assert _shown(shared) == tuned
    assert_clean(page, browser)


def test_budget_in_percent_switches_at_once_and_keeps_the_budget(server, browser):
    page = open_select(server[0], browser)
    before = metric(page, "Selected")
    page.get_by_text("% of the pool", exact=True).click()
    expect(page.get_by_label("Budget (% of the pool)")).to_be_visible(timeout=30_000)
    wait_select(page)
    assert metric(page, "Selected") == before  # same budget, now shown as a percentage
    page.get_by_label("Budget (% of the pool)").fill("10")
    page.get_by_role("button", name="Select", exact=True).click()
    expect(page.get_by_text("B = 180 samples")).to_be_visible(timeout=LONG)
    assert metric(page, "Selected") == "180"
    assert_clean(page, browser)


def test_a_budget_of_0_is_answered_about_0_not_about_the_budget_before(server, browser):
    """The input refused 0 (its min_value) and kept the last budget it had taken: the page
    went on warning that 100,000 samples were more than the pool while the box showed 0."""
    page = open_select(server[0], browser)
    page.get_by_label("Budget B").fill("100000")
    page.get_by_role("button", name="Select", exact=True).click()
    expect(page.get_by_text("A budget of 100,000 samples is more than the pool's 1,797")).to_be_visible(timeout=LONG)
    wait_select(page)
    page.get_by_label("Budget B").fill("0")
    page.get_by_role("button", name="Select", exact=True).click()
    expect(page.get_by_text("A budget of 0 samples is less than one sample: selecting 1.")).to_be_visible(timeout=LONG)
    wait_select(page)
    expect(page.get_by_text("100,000 samples")).to_have_count(0)
    assert metric(page, "Selected") == "1"
    assert_clean(page, browser)


def _download(page, button: str, target: Path) -> Path:
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name=button, exact=True).click()
    download.value.save_as(target)
    return target


def _load_source(page, choice: str, *, folder: str = "", path: str = "", upload: Path | None = None) -> None:
    go(page, "Data", "Data")
    choose(page, "Source", choice)
    if folder:
        page.get_by_role("textbox", name="Folder (local copy").fill(folder)
    if path:
        page.get_by_role("textbox", name="Feature file path").fill(path)
    if upload is not None:
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(upload))
        expect(page.get_by_text(upload.name)).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Load and extract features").click()
    wait_idle(page)


def _feature_file(path: Path, n: int = 300) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, features=rng.standard_normal((n, 16)).astype(np.float32), labels=rng.integers(0, 3, n))
    return path


def test_a_feature_files_class_names_show_in_the_chart_tables_closer_view_map_and_exports(server, browser, tmp_path):
    """A feature file's ``classes`` array names its integer labels (the shared CIFAR-10
    file has one): the per-class chart, the tables, *Look closer*, the map's hover and the
    CSV / JSON exports showed the numbers 0 to 2 (a newcomer's walk on CIFAR-10)."""
    url, folder = server
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    features = (rng.standard_normal((3, 16)) * 4)[labels] + rng.standard_normal((300, 16))
    path = folder / "named.npz"
    np.savez(path, features=features.astype(np.float32), labels=labels, classes=np.array(["ant", "bee", "cat"]))
    names = {"ant", "bee", "cat"}
    page = open_select(url, browser, f"/?data=features&file={path}&budget=30")
    chart = page.locator('[data-testid="stVegaLiteChart"]').first  # "Selected per class"
    chart.scroll_into_view_if_needed()
    assert names <= set(chart.locator("svg text").all_text_contents())
    hover = page.locator(".js-plotly-plot").first.evaluate("gd => gd.data.map(t => Array.from(t.hovertext || []))")
    assert {name for layer in hover for name in layer} == names
    rows = list(csv.DictReader(open(_download(page, "CSV", tmp_path / "s.csv"))))
    assert {r["label"] for r in rows} <= names and len(rows) == 30
    data = json.loads(_download(page, "JSON", tmp_path / "s.json").read_text())
    assert [s["label"] for s in data["samples"]] == [r["label"] for r in rows]
    go(page, "Inspect", "Inspect the selection")
    wait_idle(page)
    table = page.locator('[data-testid="stDataFrame"]').first  # a feature file's gallery is a table
    expect(table).to_be_visible()
    first = rows[0]["id"]
    choose(page, page.get_by_role("combobox", name="Look closer at"), first, typed=True)
    expect(page.get_by_text("Its 12 nearest neighbours in feature space")).to_be_visible(timeout=LONG)
    wait_idle(page)
    expect(page.get_by_text(f"{first} · label {rows[0]['label']} · ")).to_be_visible()
    page.get_by_text("Its 12 nearest neighbours").scroll_into_view_if_needed()
    page.screenshot(path=str(folder / "class_names.png"))
    assert_clean(page, browser)


def test_marks_stay_with_their_pool_and_can_be_cleared(server, browser, tmp_path):
    page = open_select(server[0], browser)
    selected = {r["id"] for r in csv.DictReader(open(_download(page, "CSV", tmp_path / "s.csv")))}
    go(page, "Inspect", "Inspect the selection")
    expect(page.locator(".bilaf-caption").first).to_be_visible(timeout=LONG)
    first = gallery_ids(page)[0]  # a selected sample, to exclude; and the first unselected one, to force
    second = next(str(i) for i in DIGIT_IDS if str(i) not in selected)
    mark(page, first, second)
    # the one-cluster view (cluster 0: the first sample is its core) says the mark, as the map's gallery does
    page.get_by_role("tab", name="One cluster, in the algorithm's order").click()
    expect(page.locator(".bilaf-caption >> visible=true").first).to_contain_text(first)
    expect(page.locator(".bilaf-caption >> visible=true").first).to_contain_text("core · excluded")
    # a run trains on what gets labelled: the export, the marks applied (it trained on the
    # selection without them, not saying so, while the sidebar said "Marks 2")
    go(page, "Finetune", "Finetune and compare")
    expect(page.get_by_text("your marks take out 1 excluded sample and add 1 forced sample: the export has")
           ).to_be_visible(timeout=LONG)
    expect(page.get_by_text("Runs train on the export")).to_be_visible()
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("top-1", exact=False).first).to_be_visible(timeout=LONG)
    wait_idle(page)
    store = page.get_by_text("Store: ").inner_text().removeprefix("Store: ").strip()
    trained = set(RunStore(store).selections()[-1]["sample_ids"])
    assert second in trained and first not in trained and len(trained) == len(selected)
    page.screenshot(path=str(tmp_path / "finetune_marks.png"), full_page=True)

    _load_source(page, "Feature file (upload)", upload=_feature_file(tmp_path / "my features.npz"))
    expect(page.get_by_role("heading", name="upload my features.npz")).to_be_visible(timeout=LONG)
    go(page, "Select", "Select samples to label")
    wait_select(page)
    expect(page.get_by_text("Your marks on this pool")).to_have_count(0)
    rows = list(csv.DictReader(open(_download(page, "CSV", tmp_path / "f.csv"))))
    assert len(rows) == int(metric(page, "Selected")) and not {r["role"] for r in rows} & {"forced"}
    assert all(r["id"].startswith("row/") for r in rows)

    _load_source(page, "Built-in digits (offline)")
    go(page, "Select", "Select samples to label")
    wait_select(page)
    expect(page.get_by_text("Your marks on this pool: 1 excluded from the export, 1 forced")).to_be_visible()
    page.reload()  # marks outlive the session
    wait_select(page)
    expect(page.get_by_text("Your marks on this pool: 1 excluded from the export, 1 forced")).to_be_visible()
    rows = list(csv.DictReader(open(_download(page, "CSV", tmp_path / "d.csv"))))
    assert first not in {r["id"] for r in rows} and {r["id"]: r["role"] for r in rows}[second] == "forced"
    # the JSON file alone says which samples the marks took out and added (it had no word of the excluded one)
    exported = json.loads(_download(page, "JSON", tmp_path / "d.json").read_text())
    assert exported["marks"] == {"excluded": [first], "forced": [second]}
    assert [r["id"] for r in exported["samples"]] == [r["id"] for r in rows]
    page.get_by_role("button", name="Clear marks").click()
    expect(page.get_by_text("Your marks on this pool")).to_have_count(0, timeout=30_000)
    rows = list(csv.DictReader(open(_download(page, "CSV", tmp_path / "c.csv"))))
    assert len(rows) == int(metric(page, "Selected")) and "forced" not in {r["role"] for r in rows}
    assert_clean(page, browser)


def _image_folder(folder: Path, n: int = 100) -> Path:
    """n digits as PNG files in class subfolders (a labelled image folder)."""
    pool = load_pool("digits")
    for i in range(n):
        target = folder / str(pool.labels[i]) / f"digit {i:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        pool.load_image(i).resize((32, 32)).save(target)
    return folder


def test_three_downloads_in_a_row_all_arrive_and_match_the_page(server, browser, tmp_path):
    folder = _image_folder(server[1] / "pics")
    page = open_select(server[0], browser)
    _load_source(page, "Image folder", folder=str(folder))
    go(page, "Select", "Select samples to label")
    wait_select(page)
    count = int(page.get_by_role("heading", name="Export (").inner_text().split("(")[1].split()[0])
    with page.expect_download(timeout=60_000) as a:
        page.get_by_role("button", name="CSV", exact=True).click()
    with page.expect_download(timeout=60_000) as b:
        page.get_by_role("button", name="JSON", exact=True).click()
    with page.expect_download(timeout=60_000) as c:
        page.get_by_role("button", name="Label Studio tasks", exact=True).click()
    files = [d.value.path() for d in (a, b, c)]
    rows = list(csv.DictReader(open(files[0])))
    data = json.loads(Path(files[1]).read_text())
    tasks = json.loads(Path(files[2]).read_text())
    assert len(rows) == len(data["samples"]) == len(tasks) == count == int(metric(page, "Selected"))
    assert [r["id"] for r in rows] == [s["id"] for s in data["samples"]] == [t["data"]["id"] for t in tasks]
    assert data["params"]["core_method"] == "activeft"  # not "given": the app ran stage 1 with ActiveFT
    assert data["provenance"]["source"]["root"] == str(folder) and "features" in data["provenance"]
    assert all(str(folder) in t["data"]["image"] for t in tasks)
    assert_clean(page, browser)


def test_data_sources_upload_zip_and_bad_files_say_what_is_wrong(server, browser, tmp_path):
    page = open_select(server[0], browser)
    bad = tmp_path / "notes renamed.npz"
    bad.write_text("this is a text file\n")
    # attached, but another source chosen: the source chosen loads, and the page says the file was not
    # (it refused to load "Feature file on this machine" with a path typed until the upload was removed)
    _load_source(page, "Feature file on this machine", path=str(_feature_file(server[1] / "typed.npz")),
                 upload=bad)
    expect(page.get_by_text("notes renamed.npz is attached but not loaded: the source is Feature file on this "
                            "machine. Choose 'Feature file (upload)' to load the file, or remove it.")).to_be_visible(
        timeout=30_000)
    expect(page.get_by_role("heading", name="feature file typed.npz")).to_be_visible(timeout=LONG)
    expect(page.get_by_text("Cannot load this source")).to_have_count(0)
    choose(page, "Source", "Feature file (upload)")
    page.get_by_role("button", name="Load and extract features").click()
    wait_idle(page)
    error = page.locator('[data-testid="stAlertContentError"]').first
    expect(error).to_contain_text("notes renamed.npz is not a .npz file", timeout=60_000)
    expect(page.get_by_text("Loading upload")).to_have_count(0)  # the status box says it failed
    expect(page.get_by_text("Cannot load upload notes renamed.npz")).to_be_visible()

    archive = tmp_path / "my digits.zip"
    pool = load_pool("digits")
    with zipfile.ZipFile(archive, "w") as bundle:
        for i in range(40):
            buffer = io.BytesIO()
            pool.load_image(i).resize((32, 32)).save(buffer, format="PNG")
            bundle.writestr(f"digits/{pool.labels[i]}/d{i:02d}.png", buffer.getvalue())
    _load_source(page, "Image folder (zip upload)", upload=archive)
    expect(page.get_by_role("heading", name="upload my digits.zip")).to_be_visible(timeout=LONG)
    expect(page.locator('[data-testid="stMetric"]').first).to_contain_text("40")
    classes = np.unique(pool.labels[:40]).size  # the zip's single top folder is not a class
    expect(page.locator('[data-testid="stMetric"]').nth(2)).to_contain_text(str(classes))
    go(page, "Select", "Select samples to label")
    wait_select(page)
    tasks = json.loads(_download(page, "Label Studio tasks", tmp_path / "ls.json").read_text())
    assert tasks and all(t["data"]["image"].startswith("/data/local-files/?d=digits") for t in tasks)
    expect(page.get_by_text("Image paths are relative to the top of my digits.zip")).to_be_visible()
    # Seen in a browser: with the cache outside the allowed folders (BILAF_CACHE_DIR, as in
    # this server), a reload refused the app's own copy of the upload and fell back to digits.
    page.reload()
    wait_select(page)
    expect(page.get_by_text("was not opened")).to_have_count(0)
    expect(page.get_by_text("Image paths are relative to the top of my digits.zip")).to_be_visible()

    _load_source(page, "Image folder", folder="/etc")  # outside the allowed folders
    expect(page.get_by_text("restart the app")).to_be_visible(timeout=30_000)
    assert_clean(page, browser)


def test_compare_with_an_edited_row(server, browser):
    page = open_select(server[0], browser)
    go(page, "Compare", "Compare selections")
    expect(page.locator(".js-plotly-plot")).to_have_count(4, timeout=LONG)
    wait_idle(page)  # a rerun still drawing the page takes the grid's focus from the cell (seen under load)
    editor = page.locator('[data-testid="stDataFrame"]').first
    box = editor.bounding_box()
    # The grid is a canvas: click the first row's first cell, step right to n_cores, type, Enter.
    page.mouse.click(box["x"] + 40, box["y"] + 35 + 17)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")  # opens the cell's editor
    cell = page.locator(".gdg-input")  # an input for numbers, a textarea for text cells (K: "auto" or a number)
    expect(cell).to_be_focused(timeout=30_000)
    cell.fill("20")
    cell.press("Enter")
    expect(page.get_by_text("bilaf K=20", exact=False).first).to_be_visible(timeout=LONG)
    wait_idle(page)
    expect(page.locator(".js-plotly-plot")).to_have_count(4)
    go(page, "Select", "Select samples to label")
    go(page, "Compare", "Compare selections")  # the edited row is kept
    expect(page.get_by_text("bilaf K=20", exact=False).first).to_be_visible(timeout=LONG)
    assert_clean(page, browser)


def test_finetune_launch_cancel_and_a_linear_probe(server, browser):
    page = open_select(server[0], browser)
    go(page, "Finetune", "Finetune and compare")
    page.get_by_test_id("stRadioGroup").get_by_text("Full finetuning", exact=True).click()
    expect(page.get_by_label("Epochs", exact=True)).to_be_visible(timeout=30_000)
    page.get_by_label("Epochs", exact=True).fill("2")
    page.get_by_label("Epochs", exact=True).press("Enter")  # a newcomer's Enter in a field launched a run
    time.sleep(2.0)
    wait_idle(page)
    time.sleep(3.0)  # a launched run's Cancel button comes with the job's fragment (every second)
    assert page.get_by_role("button", name="Cancel").count() == 0
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("Train at least twice as many epochs as warm-up epochs")).to_be_visible(timeout=30_000)
    cancel = page.get_by_role("button", name="Cancel")
    expect(cancel).to_be_visible(timeout=60_000)
    cancel.click()
    expect(page.get_by_text("cancelled", exact=False).first).to_be_visible(timeout=LONG)
    # the radio's option, not the history chart's panel of the same name (an earlier journey's probe)
    page.get_by_test_id("stRadioGroup").get_by_text("Linear probe", exact=True).click()
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("top-1", exact=False).first).to_be_visible(timeout=LONG)
    expect(page.locator('[data-testid="stDataFrame"]').last).to_be_visible(timeout=60_000)
    assert_clean(page, browser)


def test_inspect_enlarges_a_sample_beside_its_neighbours_on_the_map(server, browser, tmp_path):
    page = open_select(server[0], browser)
    go(page, "Inspect", "Inspect the selection")
    wait_idle(page)
    first = gallery_ids(page)[0]
    choose(page, page.get_by_role("combobox", name="Look closer at"), first, typed=True)  # typing filters the list
    expect(page.get_by_text("Its 12 nearest neighbours in feature space")).to_be_visible(timeout=LONG)
    wait_idle(page)
    expect(page.locator('[data-testid="stImage"] img').first).to_be_visible()  # the sample, large
    caption = page.locator('[data-testid="stImage"]').first.inner_text()
    assert caption.startswith(first) and "label" in caption
    # the map beside it: the pool, the 12 neighbours and the sample itself
    expect(page.locator(".legendtext").filter(has_text="12 nearest")).to_have_count(1)
    expect(page.locator(".legendtext").filter(has_text=first)).to_have_count(1)
    # the neighbours are small thumbnails (72 px), the gallery's stay 112 px: each grid keeps
    # its own width (a shared stylesheet gave every grid on the page the last one's width)
    widths = page.locator(".bilaf-grid").evaluate_all(
        "grids => grids.filter(g => g.offsetParent).map(g => [g.querySelectorAll('img').length, "
        "Math.round(g.querySelector('img').getBoundingClientRect().width)])")
    assert [12, 72] in widths and any(w == 112 for _, w in widths), widths
    for index in (0, 1):  # plotly's toolbar above each map's plotting area: it hid a sample at the top edge
        plot = page.locator(".js-plotly-plot").nth(index)
        plot.hover()
        bar = plot.locator(".modebar").bounding_box()
        assert bar["y"] + bar["height"] <= map_box(page, index)["y"] + 1, index
    page.screenshot(path=str(tmp_path / "closer_view.png"))
    assert_clean(page, browser)


def test_inspect_map_shows_the_cluster_filter(server, browser, tmp_path):
    """The Inspect map draws what its filters keep: the overlays of the chosen cluster only,
    the rest of the pool grey (named so in the colour legend)."""
    page = open_select(server[0], browser)
    go(page, "Inspect", "Inspect the selection")
    wait_idle(page)
    expect(page.get_by_text("outside the filters")).to_have_count(0)

    def overlay_clusters() -> dict[str, set[int]]:
        return {name: set(clusters) for name, clusters in page.locator(".js-plotly-plot").first.evaluate(
            "gd => gd._fullData.filter(t => !t.name.startsWith('pool'))"
            ".map(t => [t.name, Array.from(t.customdata, c => c[1])])")}

    assert len(set().union(*overlay_clusters().values())) > 1
    choose(page, page.get_by_role("combobox", name="Cluster"), "2")
    expect(page.get_by_text("outside the filters")).to_be_visible(timeout=LONG)
    wait_idle(page)
    shown = overlay_clusters()
    assert shown and all(clusters == {2} for clusters in shown.values()), shown
    page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "inspect_cluster_filter.png"))
    # a whole-budget method's picks: the Roles filter names them as the map's legend does (it offered "core")
    page.goto(server[0] + "/inspect?data=digits&method=kmeans")
    expect(page.get_by_role("heading", name="Inspect the selection")).to_be_visible(timeout=LONG)
    expect(page.locator(".js-plotly-plot")).to_have_count(1, timeout=LONG)
    wait_idle(page)
    roles = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Roles")
    offered = [line for line in roles.inner_text().split("\n") if line][1:]  # under the label, its chips
    assert offered == ["selected", "unselected"], offered
    assert any(name.startswith("selected (") for name in page.locator(".legendtext").all_text_contents())
    assert_clean(page, browser)


def test_learn_keeps_budget_b_through_fewer_points_and_next_stops_at_the_last_step(server, browser):
    # Points lowered to 200 cut Budget B from 400 to 200 for good (raised again, B stayed
    # 200), and Next on step 5 went back to step 1.
    page = open_select(server[0], browser)
    go(page, "Learn", "Learn: BiLAF step by step")
    wait_idle(page)
    page.get_by_text("Data: a generated 2-D set").click()
    page.get_by_text("Parameters (the Select page's").click()
    slider(page, "Budget B").focus()
    slider(page, "Budget B").press("End")  # the slider's largest value
    wait_idle(page)
    assert slider_value(page, "Budget B") == "400"
    nudge(page, "Points", -4)  # 600 -> 200
    wait_idle(page)
    assert (slider_value(page, "Points"), slider_value(page, "Budget B")) == ("200", "200")
    expect(page.get_by_text("B = 400 is more than these 200 points allow: using B = 200. B = 400 comes back when "
                            "there are points enough.")).to_be_visible()
    nudge(page, "Points", 4)
    wait_idle(page)
    assert (slider_value(page, "Points"), slider_value(page, "Budget B")) == ("600", "400")
    expect(page.get_by_text("is more than these")).to_have_count(0)
    previous, following = (page.get_by_role("button", name=name) for name in ("◀ Previous", "Next ▶"))
    expect(previous).to_be_disabled()
    for _ in range(4):
        following.click()
        wait_idle(page)
    assert radio_value(page, "5 · Result") == "5 · Result"
    expect(following).to_be_disabled()  # it went back to step 1
    expect(previous).to_be_enabled()
    page.screenshot(path=str(Path(server[1]) / "learn_last_step.png"))
    assert_clean(page, browser)


_LAYOUT_BOXES = """gd => {
    const box = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
    const all = s => Array.from(gd.querySelectorAll(s)).filter(e => e.getBoundingClientRect().width > 0).map(box);
    return {legend: all('.legend'), toolbar: all('.modebar'), numbers: all('.xtick text'),
            slider: all('.slider-container'), play: all('.updatemenu-container'), titles: all('.annotation')};
}"""


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("width", [1500, 1000])
def test_learn_legends_sit_under_each_plot_clear_of_the_toolbar_numbers_and_slider(server, browser, width):
    """The Learn figures' legends ('samples / cores', 'denoised members of cluster 0 / cores')
    sat above the plot on plotly's toolbar icons; before that, under it, on the x axis'
    numbers and step 2's round slider. Read from the page: on every step, with the toolbar
    shown (hovered), the legend overlaps none of them, nor do the play button and step 5's
    panel titles overlap the toolbar; in a wide and a 1,000 px window."""
    page = browser.page(width=width)
    page.goto(server[0])
    wait_select(page)
    go(page, "Learn", "Learn: BiLAF step by step")
    wait_idle(page)
    for step in ("1 · Cores", "2 · Denoising (IDC)", "3 · Boundary score", "4 · Iterative picks", "5 · Result"):
        page.get_by_text(step, exact=True).click()
        wait_idle(page)
        figure = page.locator(".js-plotly-plot").first
        figure.scroll_into_view_if_needed()
        figure.hover()
        expect(figure.locator(".modebar")).to_be_visible()
        boxes = figure.evaluate(_LAYOUT_BOXES)
        (legend,), (toolbar,) = boxes["legend"], boxes["toolbar"]
        assert legend[1] > max(b[3] for b in boxes["numbers"] + boxes["slider"] + [toolbar]), (step, boxes)
        assert not [b for b in boxes["play"] + boxes["titles"] if _overlap(b, toolbar)], (step, boxes)
        # the axes end about where the shaded regions do (x from -10 for regions from -8: a blank strip)
        extent = figure.evaluate("""gd => {const h = gd._fullData.find(t => t.type === 'heatmap');
            if (!h) return null; const cell = h.x[1] - h.x[0], ycell = h.y[1] - h.y[0];
            return [gd._fullLayout.xaxis.range, [Math.min(...h.x) - cell, Math.max(...h.x) + cell],
                    gd._fullLayout.yaxis.range, [Math.min(...h.y) - ycell, Math.max(...h.y) + ycell]]}""")
        if extent is not None:
            for (low, high), (start, end) in (extent[:2], extent[2:]):  # plotly's own padding, no more
                assert start - low <= 0.05 * (end - start) and high - end <= 0.05 * (end - start), (step, extent)
        if step.startswith("3"):  # the field and its colour bar take the page's width (were 3/5 of it, squeezed)
            main = page.locator("[data-testid='stMainBlockContainer'] [data-testid='stVerticalBlock']").first.bounding_box()["width"]
            assert figure.bounding_box()["width"] > 0.9 * main, (figure.bounding_box(), main)
        if width == 1000:
            figure.screenshot(path=str(server[1] / f"learn_{step[0]}.png"))
    assert_clean(page, browser)
