"""Command line: ``python -m bilaf_core select ...`` and ``python -m bilaf_core features ...``.

Results go to files, progress to stderr, nothing else to stdout. Invalid input prints
one line, ``error: <what is wrong and what to do>``, to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["main"]


class _UsageError(ValueError):
    """Bad input the user can fix; reported as one line, exit status 2."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors also exit 2, without usage spam
        raise _UsageError(message)


def _load_array(path: str, *, what: str) -> np.ndarray:
    file = Path(path)
    if not file.is_file():
        raise _UsageError(f"{what} file not found: {file}")
    try:
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as archive:
                key = "features" if "features" in archive.files else archive.files[0]
                return archive[key]
        return np.load(file, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():
            raise _UsageError(f"{what} file {file} holds Python objects; only plain numeric .npy/.npz files are read") from None
        raise _UsageError(f"cannot read {what} file {file}: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _UsageError(f"cannot read {what} file {file} (truncated or not a numpy file?): {exc}") from None


class _ProgressBar:
    """A tqdm bar on stderr, opened at the first report (so errors print no empty bar)."""

    def __init__(self):
        self.bar = None

    def __call__(self, fraction: float, message: str) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=100, file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed}<{remaining}", leave=False)
        self.bar.set_description(message[:40])
        self.bar.update(max(0, int(round(fraction * 100)) - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cmd_select(args: argparse.Namespace) -> int:
    from .selection import select

    features = _load_array(args.features, what="features")
    cores = _load_array(args.cores, what="cores") if args.cores else None
    report = _ProgressBar()
    try:
        selection = select(
            features, args.budget, method=args.method, n_cores=args.n_cores, core_method=args.core_method, cores=cores,
            variant=args.variant, k_neighbors=args.k_neighbors, include_ratio=args.include_ratio,
            removal_ratio=args.removal_ratio, opponent_penalty=args.opponent_penalty, denoise=args.denoise,
            criterion=args.criterion, process=args.process, random_state=args.seed, progress=report,
        )
    finally:
        report.close()
    json_path, npz_path = selection.save(args.out)
    print(f"selected {selection.budget} samples in {selection.timings['total']:.2f} s -> {json_path} (+ {npz_path.name})",
          file=sys.stderr)
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from ._io import atomic_open
    from .data import load_pool
    from .features import extract_features, load_backbone

    pool = load_pool(args.dataset, root=args.root)
    backbone = load_backbone(args.backbone, weights=args.weights, pooling=args.pooling, allow_fallback=args.fallback)
    print(f"{pool.name}: {len(pool):,} images; backbone {backbone.name} ({backbone.weights_source})", file=sys.stderr)
    report = _ProgressBar()
    try:
        result = extract_features(pool, backbone, batch_size=args.batch_size, num_workers=args.workers, progress=report)
    finally:
        report.close()
    arrays = {"features": np.asarray(result.features, dtype=np.float32), "ids": result.ids}
    if result.labels is not None:
        arrays["labels"] = result.labels
    with atomic_open(args.out, "wb") as handle:
        np.savez(handle, **arrays)
    source = "from cache" if result.from_cache else "extracted"
    print(f"{arrays['features'].shape[0]:,} x {arrays['features'].shape[1]} features {source} -> {args.out}", file=sys.stderr)
    if result.failed:
        print(f"skipped {len(result.failed)} unreadable image(s):", file=sys.stderr)
        for sample_id, reason in result.failed[:50]:
            print(f"  {sample_id!r}: {reason}", file=sys.stderr)
        if len(result.failed) > 50:
            print(f"  ... and {len(result.failed) - 50} more", file=sys.stderr)
    return 0


def _build_parser() -> argparse.ArgumentParser:
    from .boundary import CRITERIA, DENOISERS, PROCESSES, VARIANTS
    from .core import CORE_METHODS
    from .selection import METHODS

    parser = _ArgumentParser(prog="python -m bilaf_core", description="BiLAF / ActiveFT sample selection.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    sel = commands.add_parser("select", help="select samples to label from a feature file")
    sel.add_argument("--features", required=True, help="N x d float array (.npy, or .npz with 'features')")
    sel.add_argument("--budget", required=True, type=int, help="number of samples to select, cores included")
    sel.add_argument("--out", required=True, help="output JSON path (an .npz with every array is written beside it)")
    sel.add_argument("--cores", help="int array of core indices (.npy) instead of running stage 1")
    sel.add_argument("--n-cores", type=int, help="K, number of cores (default 0.5%% of N)")
    sel.add_argument("--method", default="bilaf", choices=METHODS)
    sel.add_argument("--core-method", default="activeft", choices=CORE_METHODS)
    sel.add_argument("--variant", default="paper", choices=VARIANTS)
    sel.add_argument("--k-neighbors", type=int, default=10)
    sel.add_argument("--include-ratio", type=float, default=0.1)
    sel.add_argument("--removal-ratio", type=float, default=0.1)
    sel.add_argument("--opponent-penalty", type=float, default=1.1)
    sel.add_argument("--denoise", default="idc", choices=DENOISERS)
    sel.add_argument("--criterion", default="boundary_score", choices=CRITERIA)
    sel.add_argument("--process", default="iterative", choices=PROCESSES)
    sel.add_argument("--seed", type=int, default=None, help="random seed (same seed, same selection)")
    sel.set_defaults(handler=_cmd_select)

    from .data import DATASETS
    from .features import DEFAULT_BACKBONE, POOLINGS

    feat = commands.add_parser("features", help="extract (and cache) features of an image pool")
    feat.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    feat.add_argument("--backbone", default=DEFAULT_BACKBONE,
                      help=f"timm model name, or 'pixels' (default {DEFAULT_BACKBONE})")
    feat.add_argument("--weights", help="local checkpoint (.pth / .safetensors), e.g. dino_deitsmall16_pretrain.pth")
    feat.add_argument("--root", help="data folder (for --dataset folder: the image directory)")
    feat.add_argument("--pooling", default="auto", choices=POOLINGS)
    feat.add_argument("--batch-size", type=int, default=64)
    feat.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cores - 1)")
    feat.add_argument("--no-fallback", dest="fallback", action="store_false",
                      help="fail instead of falling back to the bundled EfficientNet-Lite0 when weights are unavailable")
    feat.add_argument("--out", required=True, help="output .npz with features, ids and labels")
    feat.set_defaults(handler=_cmd_features)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = _build_parser().parse_args(argv)
        return args.handler(args)
    except (_UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
