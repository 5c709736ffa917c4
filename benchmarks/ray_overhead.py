"""The Ray engine's own costs, for the README's scaling model: rows/s through the engine
with a model that costs nothing, the driver process's CPU time per image, and decode +
resize of an ImageNet-size JPEG on one core.

    python benchmarks/ray_overhead.py [--images 40000]

The "model" is a 1x1 convolution on 8 x 8 inputs giving 384-d rows (ViT-S/16's width);
images are the shared CIFAR-10 JPEGs. Two runs (a quarter of the images, then all)
separate the fixed start-up from the rate. The ImageNet-size JPEGs are CIFAR images
upscaled to 500 x 375 with noise added (about 70 KB each; real ImageNet photos average
about 110 KB and decode somewhat slower).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bilaf_core.data import Pool, load_pool  # noqa: E402
from bilaf_core.features import Backbone, _resized, extract_features  # noqa: E402


def _first(pool: Pool, n: int) -> Pool:
    return Pool(pool.name, pool.ids[:n], pool.labels[:n], pool.class_names, f"{pool.fingerprint}:first{n}",
                pool.load_image)


def engine_rates(pool: Pool, n: int) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 384, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    free = Backbone("free", model, (8, 8), "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "avg", "none", "free")
    for batch in (64, 256):
        seconds, cpu = {}, {}
        for m in (n // 4, n):
            start, start_cpu = time.perf_counter(), time.process_time()
            extract_features(_first(pool, m), free, cache_dir=tempfile.mkdtemp(), batch_size=batch, engine="ray")
            seconds[m], cpu[m] = time.perf_counter() - start, time.process_time() - start_cpu
        extra = n - n // 4
        print(f"batch {batch}: {extra / (seconds[n] - seconds[n // 4]):,.0f} img/s through the engine; driver CPU "
              f"{1000 * (cpu[n] - cpu[n // 4]) / extra:.3f} ms per image (start-up and the first quarter: "
              f"{seconds[n // 4]:.1f} s)")


def decode_cost(pool: Pool) -> None:
    rng = np.random.default_rng(0)
    blobs = []
    for i in range(100):
        pixels = np.asarray(pool.load_image(i).resize((500, 375), Image.BICUBIC), dtype=np.float32)
        noisy = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    big = Pool("big", pool.ids[:100], None, (), "big", lambda i: Image.open(io.BytesIO(blobs[i])).convert("RGB"))
    geometry = Backbone("geometry", None, (224, 224), "bicubic", (), (), "avg", "", "")
    start = time.perf_counter()
    for i in range(100):
        _resized(big, i, geometry)
    print(f"decode + resize to 224 of a 500 x 375 JPEG ({np.mean([len(b) for b in blobs]) / 1024:.0f} KB): "
          f"{10 * (time.perf_counter() - start):.2f} ms on one core")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40_000)
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    args = parser.parse_args()
    pool = load_pool("cifar10", root=Path(args.shared) / "data" / "cifar10")
    decode_cost(pool)
    engine_rates(pool, args.images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
