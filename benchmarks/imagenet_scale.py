"""An ImageNet-size pool end to end on one machine, through the command line.

    python benchmarks/imagenet_scale.py [--work DIR] [--n 1281167] [--dims 384]

Writes a 1,281,167 x 384 float32 feature file (a seeded Gaussian mixture on the unit
sphere, the shape of DINO ViT-S/16 features of ImageNet-1k's training set; no real
ImageNet features are available offline), then runs, each in its own process so that
its peak resident memory is its own:

1. ``python -m bilaf_core select --n-cores 6405 --budget 12811`` (1 %, the paper's
   ImageNet setting: K = 0.5 % of N): ActiveFT with its automatic mini-batches, then
   stage 2; the stage times come from the selection's own timings.
2. The same with ``--n-cores auto`` (the default): K = round(sqrt(B)).
Prints a markdown table and writes benchmarks/results/imagenet_scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from selection_speed import synthetic_features  # noqa: E402

# The child: runs the CLI in-process and reports its peak memory (ru_maxrss is per process).
CHILD = """
import json, resource, sys, time
from bilaf_core.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - start,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="work folder (default: a new temporary one)")
    parser.add_argument("--n", type=int, default=1_281_167)
    parser.add_argument("--dims", type=int, default=384)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bilaf-imagenet-"))
    work.mkdir(parents=True, exist_ok=True)
    features = work / f"synthetic_{args.n}x{args.dims}.npy"
    if not features.is_file():
        start = time.perf_counter()
        np.save(features, synthetic_features(args.n, args.dims))
        print(f"wrote {features} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    budget = round(0.01 * args.n)
    rows = []
    for label, n_cores in (("K = 0.5 % of N (the paper's ImageNet K)", str(round(0.005 * args.n))),
                           ("K = auto (the default)", "auto")):
        out = work / f"selection_k{n_cores}.json"
        command = [sys.executable, "-c", CHILD, "select", "--features", str(features), "--budget", str(budget),
                   "--n-cores", n_cores, "--seed", "0", "--out", str(out), "--store", str(work / "runs.sqlite")]
        print(f"running {label} ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        selection = json.loads(out.read_text())
        assert len(set(selection["indices"])) == budget
        rows.append((label, selection["params"]["n_cores"], selection["timings"], measured))
        print(f"  {measured['seconds']:.0f} s, peak {measured['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    lines = [f"ImageNet-size pool through the CLI: N = {args.n:,}, d = {args.dims}, B = {budget:,} (1 %); "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU, "
             f"{time.strftime('%Y-%m-%d %H:%M')}", "",
             "| run | K | stage 1 ActiveFT (s) | stage 2 (s) | whole command (s) | peak memory (GB) |",
             "|---|---|---|---|---|---|"]
    for label, k, timings, measured in rows:
        lines.append(f"| {label} | {k:,} | {timings['stage1']:.0f} | {timings['stage2']:.0f} | "
                     f"{measured['seconds']:.0f} | {measured['peak_mb'] / 1024:.1f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    (ROOT / "benchmarks" / "results" / "imagenet_scale.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
