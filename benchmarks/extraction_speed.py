"""Feature-extraction throughput: the project's pipeline against a bare timm forward
loop on preloaded tensors, in the same run (issue 3's target: ratio >= 0.9), and with
``--engine ray`` the Ray engine against the local one, also in the same run (issue 17's
target on this machine, where a cluster cannot help: ratio >= 0.8).

    python benchmarks/extraction_speed.py [--images 256] [--vit-images N] [--workers N] [--engine ray]

Images are real CIFAR-10 JPEGs from ../shared/data/cifar10 (decoded, resized to 224
bicubic and normalised by the pipeline; preloaded once for the bare loop). Weights do
not change speed, so ViT-S/16 runs with random weights when DINO's cannot be had. The
Ray engine runs on a local Ray runtime (one node, this machine's cores); its time
includes starting the runtime and the model actors; a one-batch run shows that fixed
cost. The per-image
costs (decode + resize on one core, bytes shipped per image) feed the README's scaling
model.
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
from bilaf_core.features import _embed, _Images, _resized, extract_features, load_backbone  # noqa: E402


def timed_extraction(pool: Pool, backbone, batch_size: int, workers: int | None, **engine) -> float:
    """Seconds of one uncached extraction, end to end."""
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        extract_features(pool, backbone, batch_size=batch_size, num_workers=workers, cache_dir=cache, use_cache=False,
                         **engine)
        return time.perf_counter() - start


def measure(name: str, pool: Pool, batch_size: int, workers: int | None, engine: str) -> dict:
    backbone = load_backbone(name, device="cpu", random_init=name != "tf_efficientnet_lite0", notify=lambda m: None)
    indices = np.arange(len(pool))
    start = time.perf_counter()
    images = [_resized(pool, int(i), backbone)[0] for i in indices]
    decode_ms = 1000 * (time.perf_counter() - start) / len(pool)
    preloaded = torch.stack([_Images(pool, indices, backbone)[i][0] for i in indices])
    with torch.inference_mode():  # warm-up
        _embed(backbone, preloaded[:batch_size])
    start = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(pool), batch_size):
            features = _embed(backbone, preloaded[s : s + batch_size])
    bare = len(pool) / (time.perf_counter() - start)
    local = len(pool) / timed_extraction(pool, backbone, batch_size, workers)
    row = {"backbone": name, "images": len(pool), "pipeline": local, "bare": bare, "ratio": local / bare,
           "decode_ms": decode_ms, "shipped_kb": images[0].nbytes / 1024, "feature_kb": features[0].nbytes / 1024}
    if engine == "ray":
        whole = timed_extraction(pool, backbone, batch_size, None, engine="ray")
        one_batch = timed_extraction(_first(pool, batch_size), backbone, batch_size, None, engine="ray")
        row |= {"ray": len(pool) / whole, "ray_ratio": len(pool) / whole / local, "ray_one_batch_s": one_batch}
    return row


def _first(pool: Pool, n: int) -> Pool:
    return Pool(pool.name, pool.ids[:n], pool.labels[:n], pool.class_names, f"{pool.fingerprint}:first{n}",
                pool.load_image)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--vit-images", type=int, default=None, help="ViT-S/16 images (default: --images / 4)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="the local engine's DataLoader workers")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: also the Ray engine (a local Ray runtime), against the local engine")
    parser.add_argument("--shared", default=str(ROOT.parent / "shared"))
    args = parser.parse_args()
    full = load_pool("cifar10", root=Path(args.shared) / "data" / "cifar10")
    rows = []
    vit_images = args.vit_images or max(32, args.images // 4)
    for name, n in (("tf_efficientnet_lite0", args.images), ("vit_small_patch16_224", vit_images)):
        pool = _first(Pool("cifar10-bench", full.ids, full.labels, full.class_names, "bench", full.load_image), n)
        rows.append(measure(name, pool, args.batch_size, args.workers, args.engine))
        print(f"{name}: {rows[-1]}", file=sys.stderr)
    lines = [f"Feature extraction on the CPU ({os.cpu_count()} cores, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads), {time.strftime('%Y-%m-%d %H:%M')}", "",
             "| backbone | images | pipeline img/s | bare loop img/s | ratio (target >= 0.9) |", "|---|---|---|---|---|"]
    lines += [f"| {r['backbone']} | {r['images']} | {r['pipeline']:.1f} | {r['bare']:.1f} | {r['ratio']:.2f} |" for r in rows]
    if args.engine == "ray":
        import ray

        lines += ["", f"## Ray engine (ray {ray.__version__}, a local runtime: one node, {os.cpu_count()} CPUs, one model "
                  "actor), against the local engine in the same run", "",
                  f"`python benchmarks/extraction_speed.py --engine ray --images {args.images} --vit-images {vit_images}`",
                  "",
                  "End to end includes starting the Ray runtime, the model actor and its imports; the time of a "
                  "run of one batch shows that fixed cost.", "",
                  "| backbone | images | local img/s | Ray img/s | ratio (target >= 0.8) | Ray, one batch |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['backbone']} | {r['images']} | {r['pipeline']:.1f} | {r['ray']:.1f} | {r['ray_ratio']:.2f} | "
                  f"{r['ray_one_batch_s']:.1f} s |" for r in rows]
        lines += ["", "Per-image costs measured here (the README's scaling model starts from them):", "",
                  "| backbone | decode + resize, one core | model forward, all cores (bare) | shipped to the model "
                  "(uint8) | feature row returned |", "|---|---|---|---|---|"]
        lines += [f"| {r['backbone']} | {r['decode_ms']:.2f} ms | {1000 / r['bare']:.1f} ms | "
                  f"{r['shipped_kb']:.0f} KiB | {r['feature_kb']:.1f} KiB |" for r in rows]
    table = "\n".join(lines)
    print(table)
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "extraction_speed.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
