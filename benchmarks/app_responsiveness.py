"""App responsiveness at CIFAR scale, measured in a real browser (issue 14's targets: a
stage-2 slider change shows the updated map in <= 1.5 s median over 8 changes, the first
change after the first load in <= 2.5 s; with a 200,000-sample pool in <= 3 s).

    python benchmarks/app_responsiveness.py [--repeats 8] [--shared ../shared] [--dims 384] [--work DIR]
    python benchmarks/app_responsiveness.py --pool 200000 --work DIR   # the CIFAR features tiled 4 x
    python benchmarks/app_responsiveness.py --dims 384 --work DIR --server-only   # AppTest, no browser

Uses the real CIFAR-10 EfficientNet-Lite0 features in shared/data/cifar10 (50,000 x
1,280); --pool 200000 tiles them 4 times, each copy with small Gaussian noise (5 % of
each dimension's spread), and its UMAP map the same way (the 50,000-sample map tiled with
noise of 0.5 % of its extent, written to the projection cache: a UMAP of 200,000 points
would take most of an hour here). Precomputes and caches the UMAP map, starts `streamlit
run app.py` on that feature file (BILAF_START_FEATURES), waits for the first selection
(stage 1 runs once) and for the page to be idle, then moves the P_rm slider, presses
Select and times until the map's legend shows the new selection (timed by the page on
every animation frame). The split: the page also notes when each websocket message
arrives and its size, so "server + transfer" ends when the largest message of the rerun
(the map) has arrived, and "drawing" is from then to the map drawn; the server's share
is then split again in-process (stage 2, map figure, JSON). Writes a section per pool
size into benchmarks/results/app_responsiveness_<d>d.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bilaf_core.features import load_feature_file  # noqa: E402
from bilaf_core.projection import project_2d  # noqa: E402
from browser import CHROMIUM, FLAGS, _free_port, wait_idle  # noqa: E402


# Every websocket message's arrival (performance.now()) and size, noted before Streamlit's
# own handler runs.
FRAMES = """(() => {
  const Native = window.WebSocket;
  window.__frames = [];
  window.WebSocket = function (...args) {
    const ws = new Native(...args);
    ws.addEventListener('message', e => window.__frames.push(
        [performance.now(), e.data.byteLength ?? e.data.size ?? e.data.length ?? 0]));
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();"""

# Timed by the page itself: the click, then on every animation frame whether the
# "Removed" metric changed and whether the map's legend shows that new count. (Playwright's
# own expect() retries back off to 1 s between polls, which added up to a second.)
WATCH = """() => {
  const removed = () => [...document.querySelectorAll('[data-testid="stMetric"]')]
      .find(m => m.textContent.includes('Removed')).querySelector('[data-testid="stMetricValue"]').textContent;
  const before = removed();
  const bench = window.__bench = {};
  document.addEventListener('click', () => { bench.clicked = performance.now(); }, {capture: true, once: true});
  const check = () => {
    const now = removed();
    if (bench.clicked !== undefined && now !== before) {
      bench.metric ??= performance.now();
      const count = now.replaceAll(',', '');  // "removed (N)", or "removed (N; M drawn)" over a density image
      if ([...document.querySelectorAll('.legendtext')].some(e => e.textContent === `removed (${count})`
                                                             || e.textContent.startsWith(`removed (${count};`))) {
        bench.map = performance.now();
        return;
      }
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--pool", type=int, default=50_000,
                        help="pool size: above 50,000 the CIFAR features are tiled with small noise")
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--dims", type=int, default=None,
                        help="reduce the features with PCA to this many dimensions first (384 = DINO ViT-S/16's size)")
    parser.add_argument("--work", help="work folder to reuse (keeps the UMAP cache between runs)")
    parser.add_argument("--server-only", action="store_true",
                        help="time only the server side: a full rerun after the slider change, through AppTest")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bilaf-responsiveness-"))
    work.mkdir(parents=True, exist_ok=True)
    with np.load(Path(args.shared) / "data" / "cifar10" / "cifar10_effl0_features.npz", allow_pickle=False) as data:
        features, labels = data["train_features"].astype(np.float32), data["train_labels"]
    if args.dims:
        from sklearn.decomposition import PCA

        features = PCA(n_components=args.dims, random_state=0).fit_transform(features).astype(np.float32)
    cache = work / "cache"
    started = time.perf_counter()
    np.savez(work / "cifar10_train.npz", features=features, labels=labels)
    coords = project_2d(np.asarray(load_feature_file(work / "cifar10_train.npz").features, dtype=np.float32),
                        method="umap", cache_dir=cache)
    print(f"UMAP of 50,000 points precomputed in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    feature_file = work / "cifar10_train.npz"
    if args.pool > features.shape[0]:
        features, labels, feature_file = tiled(features, labels, coords, args.pool, work, cache)

    if args.server_only:
        return server_side_only(feature_file, cache, args.repeats)
    port = _free_port()
    env = {**os.environ, "BILAF_START_FEATURES": str(feature_file), "BILAF_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                               "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    timings, server_side = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1500, "height": 1150})
            page.add_init_script(FRAMES)
            received = [0]  # bytes the server sent over the app's websocket

            def on_websocket(ws):
                ws.on("framereceived", lambda frame: received.__setitem__(
                    0, received[0] + len(frame if isinstance(frame, (bytes, str)) else b"")))

            page.on("websocket", on_websocket)
            started = time.perf_counter()
            page.goto(url)
            metric = page.locator('[data-testid="stMetric"]').filter(has_text="Removed").locator(
                '[data-testid="stMetricValue"]')
            expect(metric).to_be_visible(timeout=900_000)  # first load: stage 1 (ActiveFT) runs once
            expect(page.locator(".legendtext").filter(has_text="removed").first).to_be_attached(timeout=300_000)
            first_load = time.perf_counter() - started
            wait_idle(page)  # the first load's diagnostics finish after its map, as a user reads it
            slider = page.locator('[data-testid="stSlider"]').filter(has_text="P_rm").get_by_role("slider")
            payloads, map_message, map_bytes = [], [], []
            for _ in range(args.repeats):
                before_bytes = received[0]
                slider.focus()
                slider.press("ArrowRight")
                page.evaluate("() => { window.__frames.length = 0; }")
                page.evaluate(WATCH)
                page.get_by_role("button", name="Select", exact=True).click()
                page.wait_for_function("() => window.__bench.map !== undefined", polling=100, timeout=120_000)
                clock = page.evaluate("() => window.__bench")
                server_side.append((clock["metric"] - clock["clicked"]) / 1000)  # the new selection's numbers
                timings.append((clock["map"] - clock["clicked"]) / 1000)
                wait_idle(page)  # the rerun's last messages (diagnostics, exports) arrive after the map
                payloads.append(received[0] - before_bytes)
                frames = [f for f in page.evaluate("() => window.__frames") if clock["clicked"] <= f[0] <= clock["map"]]
                arrived, size = max(frames, key=lambda f: f[1]) if frames else (clock["map"], 0)
                map_message.append((arrived - clock["clicked"]) / 1000)
                map_bytes.append(size)
                print(f"slider -> metrics {server_side[-1]:.2f} s, -> map message {map_message[-1]:.2f} s "
                      f"({size:,} B), -> updated map {timings[-1]:.2f} s; {payloads[-1]:,} B in all", file=sys.stderr)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    n = features.shape[0]
    split = server_split(feature_file, cache, coords_of(feature_file, cache))
    median = statistics.median
    target = "<= 1.5 median; first change <= 2.5" if n <= 50_000 else "<= 3 median"
    table = "\n".join([
        f"## {n:,} x {features.shape[1]:,} CIFAR-10 features"
        f"{' (PCA of the 1,280-d EfficientNet-Lite0 features)' if args.dims else ''}"
        f"{' (the 50,000 tiled with small noise)' if n > 50_000 else ''}, cached UMAP", "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores (check the load: the browser shares them), "
        f"with `python benchmarks/app_responsiveness.py --repeats {args.repeats}"
        f"{f' --pool {n}' if n > 50_000 else ''}{f' --dims {args.dims}' if args.dims else ''}`.", "",
        "| measure | seconds |", "|---|---|",
        f"| first load (stage 1 ActiveFT + stage 2 + map) | {first_load:.1f} |",
        f"| stage-2 slider change -> updated map, median of {len(timings)} | {median(timings):.2f} |",
        f"| ... each (the first is the first change after the first load) | {', '.join(f'{t:.2f}' for t in timings)} |",
        f"| slider change -> new selection's metrics shown (median) | {median(server_side):.2f} |",
        f"| slider change -> the map's message received (server + transfer), median | {median(map_message):.2f} |",
        f"| ... from then to the map drawn (drawing), median | "
        f"{median(t - m for t, m in zip(timings, map_message)):.2f} |",
        *(f"| server, in-process: {name} | {seconds:.2f} |" for name, seconds in split),
        f"| bytes sent by the server per rerun, median | {median(payloads):,.0f} B |",
        f"| ... of which the map's message, median | {median(map_bytes):,.0f} B |",
        f"| target (issue 14) | {target} |",
    ])
    print(table)
    write_section(ROOT / "benchmarks" / "results" / f"app_responsiveness_{features.shape[1]}d.md", n, table)
    return 0


def tiled(features, labels, coords, pool: int, work: Path, cache: Path):
    """The features tiled to ``pool`` rows, each copy with Gaussian noise of 5 % of each
    dimension's spread, and the map tiled alike (0.5 % of its extent) into the projection
    cache under the tiled features' key. Returns (features, labels, feature file)."""
    from bilaf_core.projection import _cache_path  # the cache's own naming, so the app finds the map

    rng = np.random.default_rng(0)
    copies = -(-pool // features.shape[0])
    spread, extent = features.std(axis=0), np.ptp(coords, axis=0)
    big = np.concatenate([features + rng.standard_normal(features.shape, dtype=np.float32) * (0.05 * spread)
                          for _ in range(copies)])[:pool]
    big_labels = np.tile(labels, copies)[:pool]
    big_coords = np.concatenate([coords + rng.standard_normal(coords.shape, dtype=np.float32) * (0.005 * extent)
                                 for _ in range(copies)])[:pool].astype(np.float32)
    feature_file = work / f"cifar10_train_{pool}.npz"
    np.savez(feature_file, features=big, labels=big_labels)
    path = _cache_path(np.asarray(load_feature_file(feature_file).features, dtype=np.float32), "umap", 0, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, big_coords)
    return big, big_labels, feature_file


def coords_of(feature_file: Path, cache: Path) -> np.ndarray:
    return project_2d(np.asarray(load_feature_file(feature_file).features, dtype=np.float32), method="umap",
                      cache_dir=cache)


def server_split(feature_file: Path, cache: Path, coords: np.ndarray) -> list[tuple[str, float]]:
    """Median seconds of the server's parts of a P_rm change, in-process with the app's own
    calls: stage 2 (reusing the stage-1 cores, from the disk cache the app filled, and the
    stage-2 geometry), the map figure, and its JSON (as st.plotly_chart encodes it)."""
    import plotly.io as pio

    from bilaf_core import select, stage2_geometry
    from bilaf_core.core import l2_normalize, select_cores
    from bilaf_core.params import SelectionParams, default_budget
    from bilaf_core.selection import resolve_n_cores
    from studio.maps import pool_colouring, selection_figure

    fs = load_feature_file(feature_file)
    features = np.asarray(fs.features, dtype=np.float32)
    n = features.shape[0]
    params = SelectionParams()
    budget = default_budget(n)  # the Select page's
    k = resolve_n_cores(params.n_cores, n, budget).n_cores
    space = l2_normalize(features)
    cores = select_cores(space, k, method=params.core_method, random_state=0, cache_dir=cache)
    geometry = stage2_geometry(space, cores, variant=params.variant, normalize=False)
    parts = {"stage 2 (select with cached cores and geometry)": [], "map figure": [], "map JSON": []}
    for removal in (0.15, 0.2, 0.25):
        started = time.perf_counter()
        result = select(features, budget, cores=cores, geometry=geometry, removal_ratio=removal, random_state=0)
        parts["stage 2 (select with cached cores and geometry)"].append(time.perf_counter() - started)
        started = time.perf_counter()
        colouring = pool_colouring(result, fs.labels, "pseudo-class", coords=coords)
        fig = selection_figure(coords, result, ids=fs.ids, labels=fs.labels, colouring=colouring)
        parts["map figure"].append(time.perf_counter() - started)
        started = time.perf_counter()
        pio.to_json(fig, validate=False)
        parts["map JSON"].append(time.perf_counter() - started)
    return [(name, statistics.median(values)) for name, values in parts.items()]


def write_section(path: Path, n: int, table: str) -> None:
    """Put ``table`` in ``path`` as the section of an n-sample pool, keeping the others."""
    header = "# App responsiveness at 1,280-d (issue 14)\n"
    text = path.read_text() if path.is_file() else header
    if not text.startswith("# "):
        text = header
    sections = [part for part in text.split("\n## ")[1:] if not part.startswith(f"{n:,} x")]
    sections.append(table[3:])
    sections.sort(key=lambda part: int(part.split(" x")[0].replace(",", "")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.split("\n## ")[0].rstrip("\n") + "\n" + "".join(f"\n## {part.rstrip()}\n" for part in sections))


def server_side_only(feature_file: Path, cache: Path, repeats: int) -> int:
    """Seconds for the whole script rerun (stage 2, map figure, diagnostics, exports)
    after a P_rm change, without a browser: the server's share of the response time."""
    from streamlit.testing.v1 import AppTest

    os.environ.update({"BILAF_START_FEATURES": str(feature_file), "BILAF_CACHE_DIR": str(cache)})
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=900)
    started = time.perf_counter()
    at.run()
    print(f"first run (stage 1 included): {time.perf_counter() - started:.1f} s", file=sys.stderr)
    reruns = []
    for step in range(1, repeats + 1):
        at.slider(key="removal_ratio").set_value(round(0.1 + 0.05 * step, 2))
        at.button[0].click()
        started = time.perf_counter()
        at.run()
        reruns.append(time.perf_counter() - started)
        assert not at.exception, [e.value for e in at.exception]
    print(f"server-side rerun after a slider change: median {statistics.median(reruns):.2f} s "
          f"({', '.join(f'{r:.2f}' for r in reruns)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
