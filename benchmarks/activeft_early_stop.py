"""ActiveFT with and without the early stop (``tol``), and what it does to BiLAF.

    python benchmarks/activeft_early_stop.py [--k 50] [--budget 500] [--seeds 0 1 2]

On the shared CIFAR-10 features: per seed, ActiveFT's cores with ``tol=ACTIVEFT_TOL`` and
with every one of the 300 steps, the steps taken, the seconds, the cores' EMD proxy, and
the linear probe of BiLAF (paper variant) on those cores at the budget. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bilaf_core import select  # noqa: E402
from bilaf_core.core import ACTIVEFT_TOL, activeft_cores, l2_normalize  # noqa: E402
from bilaf_core.evaluate import evaluate  # noqa: E402
from bilaf_core.features import load_feature_file  # noqa: E402
from bilaf_core.metrics import emd_proxy  # noqa: E402

DEFAULT_FEATURES = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10_effl0_features.npz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, default=DEFAULT_FEATURES)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    fs = load_feature_file(args.features)
    features = np.asarray(fs.features, dtype=np.float32)
    unit = l2_normalize(features)
    print(f"| seed | ActiveFT | steps | seconds | EMD proxy of the cores | BiLAF linear probe at B = {args.budget} (%) |")
    print("|---|---|---|---|---|---|")
    for seed in args.seeds:
        for tol in (ACTIVEFT_TOL, None):
            messages: list[str] = []
            start = time.perf_counter()
            cores = activeft_cores(unit, args.k, tol=tol, random_state=seed, progress=lambda f, m: messages.append(m))
            seconds = time.perf_counter() - start
            indices = select(features, args.budget, cores=cores, random_state=seed).indices
            top1 = evaluate(features, fs.labels, indices, protocol="linear", test_features=fs.test_features,
                            test_labels=fs.test_labels).top1
            steps = messages[-1].split()[2]
            print(f"| {seed} | {'tol ' + format(tol, 'g') if tol else '300 steps'} | {steps} | {seconds:.1f} | "
                  f"{emd_proxy(unit, cores):.5f} | {100 * top1:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
