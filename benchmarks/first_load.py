"""The app's first load of a 50,000-sample feature file, cold and after a restart
(issue 16's target: a usable Select page, i.e. map, counts and diagnostics, in <= 15 s).

    python benchmarks/first_load.py [--shared ../shared] [--work DIR]

1. The time split of the work the Select page's first run does, timed in-process with
   the same library calls (load, normalise, stage 1, stage-2 geometry, stage 2, the
   coverage radius and the diagnostics): as before issue 16 (float32 ActiveFT), cold,
   and with the disk cache of the cores.
2. In Chromium: `streamlit run app.py` on the shared CIFAR-10 training features
   (BILAF_START_FEATURES), timed from the server's start and from opening the page to
   the Select page showing its counts, the map's "removed" layer and the diagnostics;
   once with an empty cache folder (cold) and once more after stopping the server and
   starting a new one on the same cache (a restart). The UMAP map is not waited for: it
   arrives later, in the background, and the page shows PCA meanwhile.
Writes benchmarks/results/first_load.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser import CHROMIUM, FLAGS, streamlit_server  # noqa: E402


def split(feature_file: Path, cache: Path | None) -> list[tuple[str, float]]:
    """Seconds per step of the Select page's first run, as the library does it; with
    ``cache`` None, stage 1 as it was before issue 16 (float32 products, no disk cache)."""
    from bilaf_core import diagnostics, select, stage2_geometry
    from bilaf_core.auto import auto_n_cores
    from bilaf_core.core import activeft_cores, l2_normalize, select_cores
    from bilaf_core.features import load_feature_file
    from bilaf_core.metrics import default_coverage_radius
    from bilaf_core.params import default_budget

    steps, last = [], [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        steps.append((name, now - last[0]))
        last[0] = now

    fs = load_feature_file(feature_file)
    features = np.asarray(fs.features, dtype=np.float32)
    lap("load the feature file")
    unit = l2_normalize(features)
    lap("L2-normalise")
    budget = default_budget(features.shape[0])  # the Select page's default budget (5 %)
    k = auto_n_cores(features.shape[0], budget).n_cores
    if cache is None:
        cores = activeft_cores(unit, k, random_state=0, precision="float32", batch_size=unit.shape[0])
    else:
        cores = select_cores(unit, k, method="activeft", random_state=0, cache_dir=cache)
    lap(f"stage 1: ActiveFT, K = {k}")
    geometry = stage2_geometry(unit, cores, normalize=False)
    lap("stage-2 geometry (assignment, distances)")
    result = select(features, budget, cores=cores, geometry=geometry, random_state=0)
    lap(f"stage 2, B = {budget:,}")
    radius = default_coverage_radius(unit)
    lap("coverage radius")
    diagnostics(unit, result.indices, cluster=result.cluster, labels=fs.labels, radius=radius,
                max_pool_samples=5_000)
    lap("diagnostics")
    return steps


def browser_load(feature_file: Path, cache: Path, log: Path) -> tuple[float, float]:
    """(seconds from the server's start, seconds from opening the page) to a usable Select page."""
    from playwright.sync_api import expect, sync_playwright

    started = time.perf_counter()
    with streamlit_server(cache, log, BILAF_START_FEATURES=str(feature_file)) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1500, "height": 1150})
            opened = time.perf_counter()
            page.goto(url)
            removed = page.locator('[data-testid="stMetric"]').filter(has_text="Removed")
            expect(removed).to_be_visible(timeout=600_000)
            expect(page.locator(".legendtext").filter(has_text="removed").first).to_be_attached(timeout=600_000)
            expect(page.get_by_text("EMD proxy").first).to_be_visible(timeout=600_000)
            done = time.perf_counter()
            page.screenshot(path=str(log.with_suffix(".png")))
            browser.close()
    return done - started, done - opened


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    parser.add_argument("--work", help="work folder (default: a new temporary one)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bilaf-first-load-"))
    work.mkdir(parents=True, exist_ok=True)
    with np.load(Path(args.shared) / "data" / "cifar10" / "cifar10_effl0_features.npz", allow_pickle=False) as data:
        np.savez(work / "cifar10_train.npz", features=data["train_features"], labels=data["train_labels"])
    feature_file = work / "cifar10_train.npz"

    in_process = []
    for run, cache in (("before (float32 stage 1, no disk cache)", None), ("cold", work / "split_cache"),
                       ("restart (cores on disk)", work / "split_cache")):
        steps = split(feature_file, cache)
        in_process.append((run, steps))
        print(f"in-process {run}: {sum(s for _, s in steps):.1f} s", file=sys.stderr, flush=True)

    app_cache = work / "app_cache"
    loads = []
    for run in ("cold", "restart"):
        loads.append((run, *browser_load(feature_file, app_cache, work / f"server_{run}.log")))
        print(f"browser {run}: {loads[-1][1]:.1f} s from the server's start, {loads[-1][2]:.1f} s from opening "
              f"the page", file=sys.stderr, flush=True)

    lines = [f"First load of a 50,000 x 1,280 feature file (shared CIFAR-10 training features), "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d %H:%M')}", "",
             "### In Chromium: to a usable Select page (counts, map with its layers, diagnostics)", "",
             "| run | from the server's start (s) | from opening the page (s) | target |", "|---|---|---|---|"]
    lines += [f"| {run} | {total:.1f} | {page:.1f} | <= 15 |" for run, total, page in loads]
    lines += ["", "### The same work in-process, per step (s)", "",
              "| step | " + " | ".join(run for run, _ in in_process) + " |", "|---|" + "---|" * len(in_process)]
    for i, (name, _) in enumerate(in_process[0][1]):
        lines.append(f"| {name} | " + " | ".join(f"{steps[i][1]:.2f}" for _, steps in in_process)
                     + " |")
    lines.append("| total | " + " | ".join(f"{sum(s for _, s in steps):.1f}" for _, steps in in_process) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    out = ROOT / "benchmarks" / "results" / "first_load.md"
    out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
