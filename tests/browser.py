"""Driving the app in a real browser: Debian's chromium through playwright, against
`streamlit run app.py` on localhost. Helpers shared by the browser tests; every page a
test opens collects console errors and page errors, and :func:`assert_clean` fails on
them and on any Streamlit exception box."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
PROBE = re.compile(r"/[\w-]+/_stcore/(health|host-config)$")
LONG = 240_000  # ms: a first selection on a 50,000-sample pool takes about a minute on two cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def streamlit_server(cache: Path, log: Path, **env):
    """Start the app on a free localhost port; yield its URL (a :class:`ServerURL`, which
    knows the server's process id and log); stop it."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does it)")
    port = _free_port()
    # A server shared by a module's tests starts before conftest's per-test private store
    # is set: without its own, its runs went to the user's ~/.local/share/bilaf-studio.
    # Its own data folder too: finetuning checkpoints go there, and a finished checkpoint of the
    # user's (or an earlier run's) made a journey's 2-epoch run resume as done, too late to cancel.
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "BILAF_CACHE_DIR": str(cache),
               "BILAF_STORE": str(cache / "runs.sqlite"), "BILAF_DATA_DIR": str(cache / "data"), **env}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                                 "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                                 "--browser.gatherUsageStats", "false"], cwd=ROOT, env=environ, stdout=out, stderr=out)
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
        try:
            yield ServerURL(url, proc.pid, log)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _digits_cache(tmp_path_factory) -> Path:
    """A cache holding the built-in digits' features and UMAP map, made once per test run.

    A server started on an empty cache computes that map in its background process, which
    first compiles UMAP's numba code: about 45 s of CPU per server on the two cores the
    browser and the journey share. The first-load background map is the subject of
    test_e2e_browser's server and of the density journey, which start empty."""
    cache = tmp_path_factory.getbasetemp() / "digits-cache"
    if not cache.is_dir():
        from bilaf_core.data import load_pool
        from bilaf_core.features import extract_features, load_backbone
        from bilaf_core.projection import project_2d
        from studio.state import Source

        made = tmp_path_factory.mktemp("digits-cache-")
        start = Source()
        fs = extract_features(load_pool(start.dataset), load_backbone(start.backbone), cache_dir=made)
        project_2d(np.asarray(fs.features, dtype=np.float32), method="umap", random_state=0, cache_dir=made)
        made.rename(cache)
    return cache


@contextlib.contextmanager
def digits_server(tmp_path_factory, *, cached_map: bool = True):
    """A module's app server (on the built-in digits) with its own cache, which already
    holds the digits' features and UMAP map (:func:`_digits_cache`) unless ``cached_map``
    is False, and a data folder the app may open; yields (url, that folder)."""
    folder = tmp_path_factory.mktemp("data")
    cache = tmp_path_factory.mktemp("cache")
    if cached_map:
        shutil.copytree(_digits_cache(tmp_path_factory), cache, dirs_exist_ok=True)
    with streamlit_server(cache, tmp_path_factory.mktemp("log") / "streamlit.log",
                          BILAF_ALLOWED_ROOTS=str(folder)) as url:
        yield url, folder


def open_select(url: str, browser: "Browser", query: str = "") -> Page:
    """A new tab on the app (``query``: a link's ``/?...``), its Select page drawn."""
    page = browser.page()
    page.goto(url + query)
    wait_select(page)
    return page


class ServerURL(str):
    """The server's address, knowing the server's process id and its log file."""

    def __new__(cls, url: str, pid: int, log: Path):
        self = super().__new__(cls, url)
        self.pid, self.log = pid, log
        return self


class Browser:
    """One chromium for a test; pages made by :meth:`page` record their errors."""

    def __init__(self):
        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        self.errors: list[str] = []

    def page(self, width: int = 1500, height: int = 1100) -> Page:
        page = self._browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
        page.on("console", lambda m: self._note(f"console: {m.text}", m.location.get("url", "")) if m.type == "error"
                else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("response", lambda r: self._note(f"HTTP {r.status}: {r.url}", r.url) if r.status >= 400 else None)
        return page

    def _note(self, error: str, url: str) -> None:
        # Opened at a page's own address (/finetune after a reload), Streamlit's frontend
        # finds its server by asking /finetune/_stcore/... first, then the root: two
        # expected 404s of Streamlit's, not of this app.
        if not PROBE.search(url):
            self.errors.append(error)

    def close(self) -> None:
        self._browser.close()
        self._playwright.stop()


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


def assert_clean(page: Page, browser: Browser) -> None:
    """No Streamlit exception box on the page, no console error, no page error."""
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()
    assert not browser.errors, browser.errors


def go(page: Page, name: str, title: str) -> None:
    """Switch page with the sidebar's link, as a user does; wait for the page's title."""
    page.get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=LONG)


def wait_idle(page: Page, timeout: float = LONG) -> None:
    """Wait until the app has finished its run: no "Running..." icon, no stale element
    (kept from the previous run until the new one replaces it), no progress bar; checked
    twice, so a run that was about to start is waited for too."""
    busy = page.locator('[data-testid="stStatusWidgetRunningIcon"], [data-stale="true"], [data-testid="stProgress"]')
    for _ in range(2):
        time.sleep(0.5)
        expect(busy).to_have_count(0, timeout=timeout)


def choose(page: Page, box: str | Locator, option: str, *, typed: bool = False, tries: int = 3) -> None:
    """Pick ``option`` of a select box or multiselect (its label, or its locator) as a user
    does: open it, type the option to filter a long list (``typed``), click the option. A
    rerun that lands while the list is open closes it (under load, a timer of the page just
    left can still tick once: CI saw the list close and the option never appear); a user
    opens it again, and so does this, up to ``tries`` times."""
    box = page.get_by_label(box) if isinstance(box, str) else box
    for _ in range(tries):
        wait_idle(page)
        box.scroll_into_view_if_needed()
        box.click()
        if typed:
            page.keyboard.press("Control+A")
            page.keyboard.type(option)
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=10_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    raise AssertionError(f"the select box {box} did not offer {option!r} in {tries} tries")


def mark(page: Page, excluded: str, forced: str) -> None:
    """On Inspect, as a user does: one sample to exclude and one to force (typed into the
    lists), Apply marks; wait for the page to say so."""
    for label, sample in (("Exclude from the export", excluded), ("Force into the export", forced)):
        choose(page, page.locator('[data-testid="stMultiSelect"]').filter(has_text=label).locator("input"), sample,
               typed=True)
        page.keyboard.press("Escape")
    page.get_by_role("button", name="Apply marks").click()
    expect(page.get_by_text("Your marks on this pool: 1 excluded from the export, 1 forced")).to_be_visible(
        timeout=30_000)


def wait_select(page: Page) -> None:
    """The Select page has drawn its selection and map."""
    expect(page.get_by_role("heading", name="Select samples to label")).to_be_visible(timeout=LONG)
    expect(page.locator(".legendtext").filter(has_text="boundary").first).to_be_attached(timeout=LONG)
    wait_idle(page)


def metric(page: Page, name: str) -> str:
    return page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(name, exact=True)).locator(
        '[data-testid="stMetricValue"]').inner_text()


def slider(page: Page, label: str):
    return page.locator('[data-testid="stSlider"]').filter(has_text=label).get_by_role("slider")


def slider_value(page: Page, label: str) -> str:
    """The value shown above a slider's thumb."""
    return page.locator('[data-testid="stSlider"]').filter(has_text=label).locator(
        '[data-testid="stSliderThumbValue"]').inner_text()


def radio_value(page: Page, option: str) -> str:
    """The chosen option of the radio group that offers ``option``."""
    group = page.locator('[data-testid="stRadio"]').filter(has=page.get_by_text(option, exact=True))
    return group.locator("label").filter(has=page.locator("input:checked")).inner_text().strip()


def nudge(page: Page, label: str, steps: int) -> None:
    """Move a slider by keyboard steps (right if positive)."""
    thumb = slider(page, label)
    thumb.focus()
    for _ in range(abs(steps)):
        thumb.press("ArrowRight" if steps > 0 else "ArrowLeft")


def map_points(page: Page, index: int = 0) -> list[tuple[float, float, int]]:
    """(x, y, row) in page pixels of every point drawn on the index-th plotly map, read
    from the figure plotly drew (its data and axes), for checking what a lasso holds."""
    plot = page.locator(".js-plotly-plot").nth(index)
    return plot.evaluate("""gd => {
        const box = gd.getBoundingClientRect(), L = gd._fullLayout, out = [];
        for (const trace of gd._fullData) {
            if (trace.visible !== true) continue;
            for (let j = 0; j < trace.x.length; j++) {
                const c = trace.customdata[j];
                const row = (typeof c === 'number') ? c : c[0];
                out.push([box.left + L._size.l + L.xaxis.l2p(trace.x[j]),
                          box.top + L._size.t + L.yaxis.l2p(trace.y[j]), row]);
            }
        }
        return out;
    }""")


def inside(polygon: list[tuple[float, float]], x: float, y: float) -> bool:
    """Even-odd rule."""
    result = False
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]):
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            result = not result
    return result


def pick_tool(page: Page, tool: str, index: int = 0) -> None:
    """Click ``tool`` ("Lasso Select", "Box Select") in the index-th map's modebar; the map
    is scrolled into view first, so positions read afterwards stay valid for a drag."""
    plot = page.locator(".js-plotly-plot").nth(index)
    plot.scroll_into_view_if_needed()
    plot.hover()
    plot.locator(f'.modebar-btn[data-title="{tool}"]').click()


def drag(page: Page, polygon: list[tuple[float, float]], *, box: bool = False) -> None:
    """Press the mouse at the polygon's first corner and move along it and back (a lasso),
    or straight to the opposite corner (a box: where the mouse is released is the corner)."""
    path = [polygon[2]] if box else polygon[1:] + polygon[:1]
    page.mouse.move(*polygon[0])
    page.mouse.down()
    for point in path:
        page.mouse.move(*point, steps=8)
    page.mouse.up()


def map_box(page: Page, index: int = 0) -> dict:
    """The plotting area of the index-th map in page pixels (x, y, width, height)."""
    return page.locator(".js-plotly-plot").nth(index).evaluate("""gd => {
        const box = gd.getBoundingClientRect(), s = gd._fullLayout._size;
        return {x: box.left + s.l, y: box.top + s.t, width: s.w, height: s.h};
    }""")


def drawn_pick(page, index: int = 0) -> set[int] | None:
    """The rows the index-th map draws as selected (plotly's ``selectedpoints`` of every
    layer, or of the selection plotly holds after a lasso); None where nothing is selected."""
    rows = page.locator(".js-plotly-plot").nth(index).evaluate(
        "gd => gd._fullData.some(t => t.selectedpoints) ? gd._fullData.flatMap(t => "
        "Array.from(t.selectedpoints || [], i => t.customdata[i][0])) : null")
    return None if rows is None else set(rows)


def gallery_ids(page: Page) -> list[str]:
    """The ids under the gallery's images (the first line of each caption)."""
    captions = page.locator('.bilaf-caption >> visible=true').all_inner_texts()
    return [c.split("\n")[0].strip() for c in captions]


def to_page(page: Page, xy, index: int = 0) -> list[tuple[float, float]]:
    """Page pixels of data points ``xy`` ((N, 2), the map's own coordinates) on the
    index-th plotly map, through its axes: where pool samples drawn as a density image
    (no markers to read) lie, for checking what a lasso over that image holds."""
    plot = page.locator(".js-plotly-plot").nth(index)
    return [tuple(p) for p in plot.evaluate("""(gd, xy) => {
        const box = gd.getBoundingClientRect(), L = gd._fullLayout;
        return xy.map(([x, y]) => [box.left + L._size.l + L.xaxis.l2p(x), box.top + L._size.t + L.yaxis.l2p(y)]);
    }""", [[float(x), float(y)] for x, y in xy])]
