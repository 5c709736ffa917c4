"""ActiveFT's ways to skip or cheapen work, and what each does to the selection.

    python benchmarks/activeft_speed.py                          # K = B = 500 (ActiveFT as a method)
    python benchmarks/activeft_speed.py --k 50 --budget 500      # the paper's pipeline: BiLAF on K = 50
    python benchmarks/activeft_speed.py --k 2500 --budget 2500 --variants bfloat16 default

On the shared CIFAR-10 features (or ``--features``), per seed and variant: ActiveFT's
cores, the steps taken, the seconds, the cores' EMD proxy, and the linear probe of the
selection at the budget (the cores themselves when K = B, else BiLAF, paper variant, on
them). Variants (``--variants``, default all):

  float32       the paper's 300 full-batch steps in float32 (the reference)
  bfloat16      the same steps with the similarity products in bfloat16 (``precision``)
  float32, tol  float32 with the early stop ``tol=ACTIVEFT_TOL``
  default       activeft_cores' defaults: precision and batch_size "auto" (bfloat16 where
                the hardware has it; mini-batches when N x K is large)
  bfloat16, 10k rows  bfloat16 products on a fresh 10,000-row mini-batch every step,
                whatever K (is full-batch worth it at small K?)
  float32, 10k rows  the same mini-batches with float32 products

The float32 cores are kept in ``<work>`` (by default selection_quality.py's folder); every
finished row is appended to ``<work>/activeft_speed.jsonl``, so a rerun only computes what
is missing.
Prints a markdown table per seed and a summary (mean, and std over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bilaf_core import select  # noqa: E402
from bilaf_core._io import atomic_open  # noqa: E402
from bilaf_core.core import ACTIVEFT_TOL, activeft_cores, l2_normalize  # noqa: E402
from bilaf_core.evaluate import evaluate  # noqa: E402
from bilaf_core.features import load_feature_file  # noqa: E402
from bilaf_core.metrics import emd_proxy  # noqa: E402

DEFAULT_FEATURES = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10_effl0_features.npz"
FULL = sys.maxsize  # batch_size: every step on the whole pool, as the paper
VARIANTS = {
    "float32": {"precision": "float32", "batch_size": FULL},
    "bfloat16": {"precision": "bfloat16", "batch_size": FULL},
    "float32, tol": {"precision": "float32", "batch_size": FULL, "tol": ACTIVEFT_TOL},
    "default": {},
    "bfloat16, 10k rows": {"precision": "bfloat16", "batch_size": 10_000},  # mini-batches at any K
    "float32, 10k rows": {"precision": "float32", "batch_size": 10_000},
}


def reference_cores(work: Path, unit: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float, int]:
    """float32 300-step cores, from (or into) the work folder."""
    path = work / f"activeft_k{k}_seed{seed}_300steps.npz"
    if path.is_file():
        with np.load(path) as saved:
            return saved["cores"], float(saved["seconds"]), 300
    start = time.perf_counter()
    cores = activeft_cores(unit, k, random_state=seed, **VARIANTS["float32"])
    seconds = time.perf_counter() - start
    with atomic_open(path, "wb") as handle:
        np.savez(handle, cores=cores, seconds=seconds)
    return cores, seconds, 300


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, default=DEFAULT_FEATURES)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "bilaf-studio" / "selection_quality")
    args = parser.parse_args(argv)
    fs = load_feature_file(args.features)
    features = np.asarray(fs.features, dtype=np.float32)
    unit = l2_normalize(features)
    work = args.work / args.features.stem
    work.mkdir(parents=True, exist_ok=True)
    log = work / "activeft_speed.jsonl"
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done[row["key"]] = row
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            key = json.dumps([name, args.k, args.budget, seed])
            if key not in done:
                if name == "float32":
                    cores, seconds, steps = reference_cores(work, unit, args.k, seed)
                else:
                    messages: list[str] = []
                    start = time.perf_counter()
                    cores = activeft_cores(unit, args.k, random_state=seed, progress=lambda f, m: messages.append(m),
                                           **VARIANTS[name])
                    seconds, steps = time.perf_counter() - start, int(messages[-1].split()[2].split("/")[0])
                indices = cores if args.k == args.budget else select(features, args.budget, cores=cores,
                                                                     random_state=seed).indices
                top1 = evaluate(features, fs.labels, indices, protocol="linear", test_features=fs.test_features,
                                test_labels=fs.test_labels).top1
                done[key] = {"key": key, "variant": name, "seed": seed, "steps": steps, "seconds": seconds,
                             "emd": emd_proxy(unit, cores), "linear": top1}
                with log.open("a") as handle:
                    handle.write(json.dumps(done[key]) + "\n")
            rows.append(done[key])
            r = rows[-1]
            print(f"seed {seed} {name:24s} steps {r['steps']:3d} {r['seconds']:7.1f} s  EMD {r['emd']:.5f}  "
                  f"linear {100 * r['linear']:.1f}", file=sys.stderr, flush=True)
    what = "ActiveFT's cores as the selection" if args.k == args.budget else "BiLAF (paper variant) on the cores"
    print(f"ActiveFT, K = {args.k}, on {args.features.name} ({unit.shape[0]:,} x {unit.shape[1]}); linear probe of "
          f"{what} at B = {args.budget}, seeds {args.seeds}\n")
    print("| variant | steps | seconds | EMD proxy of the cores | linear probe (%) |")
    print("|---|---|---|---|---|")
    for name in args.variants:
        picked = [r for r in rows if r["variant"] == name]
        linear = [100 * r["linear"] for r in picked]
        spread = f" ± {statistics.stdev(linear):.1f}" if len(linear) > 1 else ""
        print(f"| {name} | {statistics.mean(r['steps'] for r in picked):.0f} | "
              f"{statistics.mean(r['seconds'] for r in picked):.1f} | {statistics.mean(r['emd'] for r in picked):.5f} | "
              f"{statistics.mean(linear):.1f}{spread} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
