"""Selection quality under full finetuning: the app's own ``bilaf_core.finetune`` trains
the pretrained backbone on each selection's CIFAR-10 images and reports top-1 on the
10,000 test images (the papers' protocol, shortened: see ``EPOCHS``). Made for a GPU
machine; three steps, so that only the images the selections need travel there:

    python benchmarks/finetune_quality.py select --work W     # selections (CPU) + their images
    python benchmarks/finetune_quality.py train --work W --processes 8 --device cuda
    python benchmarks/finetune_quality.py report --work W [--out results.md]

``select`` runs every (method, budget, seed) on the shared CIFAR-10 features and writes
``W/selections.npz`` and ``W/cifar10_jpeg.npz``: the shared JPEG archive cut to the
selected training images and the test split (about 30 MB for three budgets), which
``bilaf_core.data.load_pool("cifar10", root=W)`` reads like the whole archive. ``train``
runs the finetuning jobs in parallel processes on one device (each about 5.6 GiB of GPU
memory; their data loading is the bottleneck, so one process per two CPU cores), appends
one line per finished run to ``W/runs.jsonl`` and skips the runs already there, so a run
stopped by ``--deadline`` resumes. ``report`` prints the mean ± std table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "cifar10"
#: method name -> select()'s options (the default first; BiLAF's paper setting K = 50 for CIFAR-10)
METHODS = {"bilaf (auto, default)": {}, "bilaf (paper, K = 50)": {"n_cores": 50}, "random": {"method": "random"},
           "kmeans": {"method": "kmeans"}}
#: epochs per budget: 50,000 training images seen at 0.5 % and 1 %, 60,000 at 2 %, 75,000 at 5 %
#: (the papers train 1,000 epochs; this is what one GPU session allows for 3 seeds x 3 methods)
EPOCHS = {250: 200, 500: 100, 1000: 60, 2500: 30}
#: the papers' SGD settings (bilaf_core.finetune's defaults) with batch 64, evaluated 4 times per run
BATCH, EVALUATIONS = 64, 4


def run_key(method: str, budget: int, seed: int) -> str:
    return json.dumps([method, budget, seed])


def select_step(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from bilaf_core import select
    from bilaf_core.features import load_feature_file

    features = np.asarray(load_feature_file(args.features).features, dtype=np.float32)
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / "selections.npz"
    saved = dict(np.load(path)) if path.is_file() else {}
    plan = [(m, b, s) for b in args.budgets for s in args.seeds for m in args.methods]
    for method, budget, seed in tqdm(plan, desc="selections", file=sys.stderr):
        key = run_key(method, budget, seed)
        if key not in saved:
            saved[key] = select(features, budget, random_state=seed, **METHODS[method]).indices.astype(np.int64)
            np.savez(path, **saved)
    with np.load(args.archive) as source:
        blob, offsets, labels, n_train = source["jpeg"], source["offsets"], source["label"], int(source["n_train"])
        train_rows = np.unique(np.concatenate(list(saved.values())))
        rows = np.concatenate([train_rows, np.arange(n_train, labels.size)])
        pieces = [blob[offsets[r]:offsets[r + 1]] for r in rows]
        np.savez(args.work / "cifar10_jpeg.npz", jpeg=np.concatenate(pieces), label=labels[rows],
                 offsets=np.concatenate([[0], np.cumsum([p.size for p in pieces])]).astype(np.int64),
                 n_train=train_rows.size, classes=source["classes"], train_rows=train_rows)
    print(f"{len(saved)} selections; {train_rows.size:,} training images and {labels.size - n_train:,} test images "
          f"in {args.work / 'cifar10_jpeg.npz'}")


def _train_one(job: tuple) -> dict:
    key, rows, work, device, epochs = job
    import torch

    from bilaf_core.data import load_pool
    from bilaf_core.finetune import FinetuneConfig, finetune

    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = True
    method, budget, seed = json.loads(key)
    config = FinetuneConfig(epochs=epochs, batch_size=BATCH, eval_every=max(1, epochs // EVALUATIONS),
                            eval_limit=None, random_state=seed)  # num_workers=0: pool processes cannot fork
    result = finetune(load_pool("cifar10", root=work), np.asarray(rows), config=config, device=device,
                      checkpoint_dir=Path(work) / "checkpoints", resume=False)
    return {"key": key, "method": method, "budget": budget, "seed": seed, "best": result.best_top1,
            "final": result.final_top1, "epochs": epochs, "seconds": result.seconds, "backbone": result.backbone,
            "device": result.device, "n_eval": result.n_eval,
            "curve": [h["top1"] for h in result.history if h["top1"] is not None]}


def read_runs(work: Path) -> dict[str, dict]:
    log = work / "runs.jsonl"
    return {row["key"]: row for row in map(json.loads, log.read_text().splitlines() if log.is_file() else [])}


def train_step(args: argparse.Namespace) -> None:
    with np.load(args.work / "cifar10_jpeg.npz") as archive:
        position = {int(r): i for i, r in enumerate(archive["train_rows"])}
    done = read_runs(args.work)
    with np.load(args.work / "selections.npz") as saved:
        jobs = [(key, [position[int(i)] for i in saved[key]], str(args.work), args.device,
                 args.epochs or EPOCHS[json.loads(key)[1]])
                for key in sorted(saved.files, key=lambda k: json.loads(k)[::-1]) if key not in done]  # seed-major
    print(f"{len(jobs)} runs to do, {len(done)} done, {args.processes} processes", flush=True)
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.processes, maxtasksperchild=1) as pool:
        for row in pool.imap_unordered(_train_one, jobs):
            with (args.work / "runs.jsonl").open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(f"{row['method']:22s} B={row['budget']:5d} seed={row['seed']} best={row['best']:.4f} "
                  f"final={row['final']:.4f} {row['seconds']:.0f}s", flush=True)
            if args.deadline and time.perf_counter() - start > args.deadline:
                print("deadline reached: the unfinished runs are dropped; run train again to resume", flush=True)
                pool.terminate()
                break
    print(f"wall {time.perf_counter() - start:.0f} s", flush=True)


def report_step(args: argparse.Namespace) -> str:
    runs = list(read_runs(args.work).values())
    budgets = sorted({r["budget"] for r in runs})

    def cell(method: str, budget: int, field: str) -> str:
        values = [100 * r[field] for r in runs if r["method"] == method and r["budget"] == budget]
        if not values:
            return "-"
        spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.1f}{spread}" + ("" if len(values) == 3 else f" (n = {len(values)})")

    lines = []
    for field, title in (("best", "best of the run's evaluations (the papers' report)"), ("final", "last epoch")):
        lines += [f"### Top-1 (%), {title}", "",
                  "| method | " + " | ".join(f"B = {b:,} ({'/'.join(map(str, sorted({r['epochs'] for r in runs if r['budget'] == b})))} epochs)"
                                             for b in budgets) + " |",
                  "|---" * (len(budgets) + 1) + "|"]
        lines += [f"| {m} | " + " | ".join(cell(m, b, field) for b in budgets) + " |"
                  for m in METHODS if any(r["method"] == m for r in runs)]
        lines.append("")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    for name in ("select", "train", "report"):
        step = steps.add_parser(name)
        step.add_argument("--work", type=Path, required=True, help="folder of the selections, images and runs")
    steps.choices["select"].add_argument("--features", type=Path, default=SHARED / "cifar10_effl0_features.npz")
    steps.choices["select"].add_argument("--archive", type=Path, default=SHARED / "cifar10_jpeg.npz")
    steps.choices["select"].add_argument("--budgets", type=int, nargs="+", default=[250, 500, 1000])
    steps.choices["select"].add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    steps.choices["select"].add_argument("--methods", nargs="+", default=list(METHODS)[:3], choices=METHODS)
    steps.choices["train"].add_argument("--processes", type=int, default=8)
    steps.choices["train"].add_argument("--device", default="cuda")
    steps.choices["train"].add_argument("--deadline", type=float, help="seconds; stop taking results after it")
    steps.choices["train"].add_argument("--epochs", type=int, help="override EPOCHS (a smoke test)")
    steps.choices["report"].add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    {"select": select_step, "train": train_step, "report": report_step}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
