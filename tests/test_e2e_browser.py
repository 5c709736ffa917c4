"""End to end in a real browser: Debian's chromium driven by playwright against
`streamlit run app.py --server.headless true` on localhost. Takes the README's
screenshots (assets/select.png, assets/inspect.png)."""

import csv
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does it)")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BILAF_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    log = open(tmp_path_factory.mktemp("log") / "streamlit.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the streamlit server did not start within 90 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _removed_count(page) -> str:
    return page.locator('[data-testid="stMetric"]').filter(has_text="Removed").locator(
        '[data-testid="stMetricValue"]').inner_text()


def test_select_move_slider_see_map_update_and_export_csv(server, tmp_path):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1150}, accept_downloads=True)
        page.goto(server)
        expect(page.get_by_text("Select samples to label")).to_be_visible(timeout=120_000)
        legend = page.locator(".legendtext").filter(has_text="removed").first  # a rerun briefly keeps the old map
        expect(legend).to_be_visible(timeout=120_000)
        # The UMAP map is computed in the background at first load; wait for it, so the
        # slider timing below is the cached-projection case the target is about.
        expect(page.get_by_text("Computing the UMAP map")).to_have_count(0, timeout=180_000)
        expect(legend).to_be_visible(timeout=60_000)
        before_legend, before_metric = legend.text_content(), _removed_count(page)

        slider = page.locator('[data-testid="stSlider"]').filter(has_text="P_rm").get_by_role("slider")
        slider.focus()
        for _ in range(6):  # 0.10 -> 0.40
            slider.press("ArrowRight")
        started = time.perf_counter()
        page.get_by_role("button", name="Select", exact=True).click()
        metric = page.locator('[data-testid="stMetric"]').filter(has_text="Removed").locator('[data-testid="stMetricValue"]')
        expect(metric).not_to_have_text(before_metric, timeout=60_000)
        after = _removed_count(page).replace(",", "")
        updated = page.locator(".legendtext").filter(has_text=f"removed ({after})").first
        expect(updated).to_be_attached(timeout=60_000)  # the map shows the new selection
        print(f"\nslider change -> map updated in the browser: {time.perf_counter() - started:.2f} s")
        assert f"removed ({after})" != before_legend

        time.sleep(1.0)  # let plotly finish drawing before the screenshot
        expect(page.locator(".js-plotly-plot")).to_have_count(1, timeout=10_000)  # one map once settled
        page.screenshot(path=str(ROOT / "assets" / "select.png"), full_page=False)
        budget = int(page.get_by_label("Budget B").input_value())
        with page.expect_download() as download:
            page.get_by_role("button", name="CSV").click()
        target = tmp_path / "selection.csv"
        download.value.save_as(target)
        with open(target, newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == budget
        assert {"id", "role", "cluster", "boundary_score", "label"} <= set(rows[0])
        assert sum(r["role"] == "core" for r in rows) >= 1 and len({r["id"] for r in rows}) == budget

        page.get_by_role("link", name="Inspect").click()
        expect(page.get_by_text("Inspect the selection")).to_be_visible(timeout=60_000)
        expect(page.locator('[data-testid="stImage"]').first).to_be_visible(timeout=60_000)
        time.sleep(1.0)
        page.screenshot(path=str(ROOT / "assets" / "inspect.png"), full_page=False)
        browser.close()


def test_learn_page_steps_through_the_algorithm(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1150})
        page.goto(server)
        page.get_by_role("link", name="Learn").click()
        expect(page.get_by_text("Learn: BiLAF step by step")).to_be_visible(timeout=60_000)
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
        texts = ["Stage 1: core samples", "Denoising by iterative", "The boundary score", "Iterative selection and",
                 "The result."]
        for step, text in enumerate(texts):
            expect(page.get_by_text(text).first).to_be_visible(timeout=60_000)
            if step == 3:  # the picks step: its table and the figure, for the README
                expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible(timeout=30_000)
                time.sleep(1.0)
                page.screenshot(path=str(ROOT / "assets" / "learn.png"), full_page=False)
            page.get_by_role("button", name="Next ▶").click()
        expect(page.get_by_text(texts[0]).first).to_be_visible(timeout=60_000)  # wrapped around
        page.get_by_text("Play", exact=True).click()  # autoplay moves on by itself
        expect(page.get_by_text(texts[1]).first).to_be_visible(timeout=30_000)
        browser.close()
