"""Selection speed and memory benchmark (issue 2's targets). Prints a table and writes
it to benchmarks/results/selection_speed.md.

    python benchmarks/selection_speed.py            # every case
    python benchmarks/selection_speed.py --quick    # skip the ImageNet-size case
    python benchmarks/selection_speed.py --cases cifar_pipeline cifar_activeft_2500 \
        --out benchmarks/results/selection_speed_cifar.md                          # issue 16's cases

Cases (synthetic clustered features, L2-normalised, d = 384):
  stage2_c100   N = 50,000, K = 250, B = 2,500, given cores: median of 5 runs (target <= 1.0 s)
  stage2_c10    N = 50,000, K = 50,  B = 1,000, given cores: median of 5 runs (target <= 1.5 s)
  full_activeft N = 50,000, K = 250, B = 2,500, ActiveFT 300 steps + stage 2; ratio to the
                floor = 300 bare N x K float32 similarity products in the same process (target <= 1.5)
  imagenet      N = 1,281,167, K = 6,405, B = 12,811, given cores: assignment + stage 2
                (target <= 300 s, peak RSS <= 8 GB)
  cifar_pipeline       the shared CIFAR-10 features (50,000 x 1,280): the paper's pipeline,
                       select(features, 500, n_cores=50) (ActiveFT 300 steps + stage 2); ratio
                       to 300 bare 50,000 x 1,280 x 50 float32 products in the same process
                       (target <= 1.0)
  cifar_activeft_2500  the same features: ActiveFT as a method, B = 2,500 (target <= 60 s)
Each case runs in its own process, so its peak resident memory is its own.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"stage2_c100": 1.0, "stage2_c10": 1.5, "imagenet": 300.0, "cifar_activeft_2500": 60.0}
RATIO_TARGETS = {"full_activeft": 1.5, "cifar_pipeline": 1.0}
CIFAR = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10_effl0_features.npz"


def synthetic_features(n: int, d: int = 384, n_modes: int = 1000, seed: int = 0) -> np.ndarray:
    """Gaussian mixture on the unit sphere, built in chunks (no N x d float64 temporary)."""
    from bilaf_core.core import l2_normalize

    rng = np.random.default_rng(seed)
    modes = rng.standard_normal((n_modes, d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 200_000):
        stop = min(start + 200_000, n)
        noise = rng.standard_normal((stop - start, d), dtype=np.float32)
        out[start:stop] = l2_normalize(modes[rng.integers(0, n_modes, stop - start)] + 0.8 * noise)
    return out


def run_case(name: str) -> dict:
    import torch

    from bilaf_core import select
    from bilaf_core.boundary import select_boundary
    from bilaf_core.core import random_cores

    if name in ("stage2_c100", "stage2_c10"):
        k, b = (250, 2500) if name == "stage2_c100" else (50, 1000)
        features = synthetic_features(50_000)
        cores = random_cores(50_000, k, random_state=0)
        select_boundary(features, cores, b)  # warm-up (imports, allocator)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            select_boundary(features, cores, b)
            times.append(time.perf_counter() - start)
        return {"seconds": statistics.median(times), "runs": times}
    if name in ("full_activeft", "cifar_pipeline"):
        if name == "full_activeft":
            features, k, b = synthetic_features(50_000), 250, 2500
        else:
            with np.load(CIFAR) as data:
                features, k, b = data["train_features"].astype(np.float32), 50, 500
        pool = torch.from_numpy(features)
        centers = pool[:k].clone()
        buffer = torch.empty((features.shape[0], k))

        def floor_seconds() -> float:
            start = time.perf_counter()
            for _ in range(300):
                torch.mm(pool, centers.T, out=buffer)
            return time.perf_counter() - start

        before = floor_seconds()
        start = time.perf_counter()
        selection = select(features, b, n_cores=k, random_state=0)
        total = time.perf_counter() - start
        after = floor_seconds()
        floor = min(before, after)  # the faster floor: the conservative ratio
        return {"seconds": total, "floor_seconds": floor, "floor_runs": [before, after], "ratio": total / floor,
                "timings": selection.timings}
    if name == "cifar_activeft_2500":
        with np.load(CIFAR) as data:
            features = data["train_features"].astype(np.float32)
        start = time.perf_counter()
        selection = select(features, 2500, method="activeft", random_state=0)
        return {"seconds": time.perf_counter() - start, "timings": selection.timings}
    if name == "imagenet":
        features = synthetic_features(1_281_167)
        cores = random_cores(features.shape[0], 6405, random_state=0)
        start = time.perf_counter()
        result = select_boundary(features, cores, 12_811)
        elapsed = time.perf_counter() - start
        assert np.unique(result.indices).size == 12_811
        return {"seconds": elapsed}
    raise ValueError(f"unknown case {name!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the ImageNet-size case")
    parser.add_argument("--cases", nargs="+", help="run only these cases")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "selection_speed.md")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    if args.case:
        result = run_case(args.case)
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0
    cases = args.cases or (["stage2_c100", "stage2_c10", "full_activeft"] + ([] if args.quick else ["imagenet"])
                           + (["cifar_pipeline", "cifar_activeft_2500"] if CIFAR.is_file() else []))
    rows = []
    for name in cases:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        target = TARGETS.get(name)
        ratio = result.get("ratio")
        verdict = ("ok" if result["seconds"] <= target else "SLOW") if target else (
            "ok" if ratio <= RATIO_TARGETS[name] else "SLOW")
        rows.append((name, result["seconds"], result["peak_mb"], ratio, target, verdict, result))
    lines = [
        f"Selection speed on {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "| case | seconds | peak MB | ratio to floor | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for name, seconds, peak, ratio, target, verdict, _ in rows:
        lines.append(f"| {name} | {seconds:.2f} | {peak:.0f} | {'' if ratio is None else f'{ratio:.2f}'} | "
                     f"{f'<= {RATIO_TARGETS[name]:g} ratio' if target is None else f'<= {target:g} s'} | {verdict} |")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n\n```\n" + json.dumps([r[-1] for r in rows], indent=1) + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
