"""App responsiveness at CIFAR scale, measured in a real browser (issue 4's target:
with 50,000 cached features and a cached projection, a stage-2 slider change shows
the updated map in <= 2 s end to end).

    python benchmarks/app_responsiveness.py [--repeats 3] [--shared ../shared] [--dims 384] [--work DIR]
    python benchmarks/app_responsiveness.py --dims 384 --work DIR --server-only   # AppTest, no browser

Uses the real CIFAR-10 EfficientNet-Lite0 features in shared/data/cifar10 (50,000 x
1,280), precomputes and caches their UMAP map, starts `streamlit run app.py` on that
feature file (BILAF_START_FEATURES), waits for the first selection (stage 1 runs once),
then moves the P_rm slider, presses Select and times until the map's legend shows the
new selection (timed by the page on every animation frame). Writes
benchmarks/results/app_responsiveness_<d>d.md.
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
from browser import CHROMIUM, FLAGS, _free_port  # noqa: E402


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
      const legend = `removed (${now.replaceAll(',', '')})`;
      if ([...document.querySelectorAll('.legendtext')].some(e => e.textContent === legend)) {
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
    parser.add_argument("--repeats", type=int, default=3)
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
    np.savez(work / "cifar10_train.npz", features=features, labels=labels)
    feature_file = work / "cifar10_train.npz"
    cache = work / "cache"
    started = time.perf_counter()
    project_2d(np.asarray(load_feature_file(feature_file).features, dtype=np.float32), method="umap", cache_dir=cache)
    print(f"UMAP of 50,000 points precomputed in {time.perf_counter() - started:.0f} s", file=sys.stderr)

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
            time.sleep(3)  # the first load's diagnostics finish after its map, as a user reads it
            slider = page.locator('[data-testid="stSlider"]').filter(has_text="P_rm").get_by_role("slider")
            payloads = []
            for _ in range(args.repeats):
                before_bytes = received[0]
                slider.focus()
                slider.press("ArrowRight")
                page.evaluate(WATCH)
                page.get_by_role("button", name="Select", exact=True).click()
                page.wait_for_function("() => window.__bench.map !== undefined", polling=100, timeout=120_000)
                clock = page.evaluate("() => window.__bench")
                server_side.append((clock["metric"] - clock["clicked"]) / 1000)  # the new selection's numbers
                timings.append((clock["map"] - clock["clicked"]) / 1000)
                time.sleep(2)  # the rerun's last messages (diagnostics, exports) arrive after the map
                payloads.append(received[0] - before_bytes)
                print(f"slider -> metrics {server_side[-1]:.2f} s, -> updated map {timings[-1]:.2f} s", file=sys.stderr)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    table = "\n".join([
        f"App responsiveness, 50,000 x {features.shape[1]:,} CIFAR-10 features"
        f"{' (PCA of the 1,280-d EfficientNet-Lite0 features)' if args.dims else ''}, cached UMAP, "
        f"{time.strftime('%Y-%m-%d %H:%M')}", "",
        "| measure | seconds |", "|---|---|",
        f"| first load (stage 1 ActiveFT + stage 2 + map) | {first_load:.1f} |",
        f"| stage-2 slider change -> updated map, median of {len(timings)} | {statistics.median(timings):.2f} |",
        f"| ... each | {', '.join(f'{t:.2f}' for t in timings)} |",
        f"| slider change -> new selection's metrics shown (median) | {statistics.median(server_side):.2f} |",
        f"| ... the rest (transfer of the map and drawing it), median | "
        f"{statistics.median(t - s for t, s in zip(timings, server_side)):.2f} |",
        f"| bytes sent by the server per rerun, median | {statistics.median(payloads):,.0f} |",
        "| target (issue 14) | <= 1.5 median; first change <= 2.5 |",
    ])
    print(table)
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    name = f"app_responsiveness_{features.shape[1]}d.md"
    (ROOT / "benchmarks" / "results" / name).write_text(table + "\n")
    return 0


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
