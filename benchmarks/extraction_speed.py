"""Feature-extraction throughput: the project's pipeline against a bare timm forward
loop on preloaded tensors, in the same run (issue 3's target: ratio >= 0.9).

    python benchmarks/extraction_speed.py [--images 256] [--workers N]

Images are real CIFAR-10 JPEGs from ../shared/data/cifar10 (decoded, resized to 224
bicubic and normalised by the pipeline; preloaded once for the bare loop). Weights do
not change speed, so ViT-S/16 runs with random weights when DINO's cannot be had.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bilaf_core.data import Pool, load_pool  # noqa: E402
from bilaf_core.features import _embed, _Images, extract_features, load_backbone  # noqa: E402


def measure(name: str, pool: Pool, batch_size: int, workers: int | None) -> dict:
    backbone = load_backbone(name, device="cpu", random_init=name != "tf_efficientnet_lite0", notify=lambda m: None)
    indices = np.arange(len(pool))
    preloaded = torch.stack([_Images(pool, indices, backbone)[i][0] for i in indices])
    with torch.inference_mode():  # warm-up
        _embed(backbone, preloaded[:batch_size])
    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(pool), batch_size):
            _embed(backbone, preloaded[s : s + batch_size])
    bare = len(pool) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        extract_features(pool, backbone, batch_size=batch_size, num_workers=workers, cache_dir=cache, use_cache=False)
        pipeline = len(pool) / (time.perf_counter() - start)
    return {"backbone": name, "pipeline": pipeline, "bare": bare, "ratio": pipeline / bare}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    args = parser.parse_args()
    full = load_pool("cifar10", root=Path(args.shared) / "data" / "cifar10")
    rows = []
    for name, n in (("tf_efficientnet_lite0", args.images), ("vit_small_patch16_224", max(32, args.images // 4))):
        pool = Pool("cifar10-bench", full.ids[:n], full.labels[:n], full.class_names, f"bench:{n}", full.load_image)
        rows.append(measure(name, pool, args.batch_size, args.workers) | {"images": n})
        print(f"{name}: {rows[-1]}", file=sys.stderr)
    lines = [f"Feature extraction on the CPU ({os.cpu_count()} cores, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads), {time.strftime('%Y-%m-%d %H:%M')}", "",
             "| backbone | images | pipeline img/s | bare loop img/s | ratio (target >= 0.9) |", "|---|---|---|---|---|"]
    lines += [f"| {r['backbone']} | {r['images']} | {r['pipeline']:.1f} | {r['bare']:.1f} | {r['ratio']:.2f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "extraction_speed.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
