"""Command line: ``python -m bilaf_core select | features | evaluate | finetune | runs``.

Selections and features go to files; ``evaluate`` and ``finetune`` print their result
as one JSON object on stdout and ``runs`` prints the history table; progress goes to
stderr. Selections and training runs are recorded in the run store (``--store``,
default :func:`bilaf_core.store.default_store_path`), the same one the app reads.
Invalid input prints one line, ``error: <what is wrong and what to do>``, to stderr and
exits with status 2.
"""

from __future__ import annotations

import argparse
import json
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


def _n_cores(text: str) -> int | str:
    """--n-cores: a positive integer or 'auto'."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


#: argparse settings per kind of selection parameter (bilaf_core.params.ParamSpec.kind).
_OPTION_KINDS = {
    "choice": lambda spec: {"choices": spec.choices},
    "int": lambda spec: {"type": int, "metavar": "N"},
    "float": lambda spec: {"type": float, "metavar": "X"},
    "n_cores": lambda spec: {"type": _n_cores, "metavar": "K|auto"},
    "optional_bool": lambda spec: {"action": argparse.BooleanOptionalAction},
    "seed": lambda spec: {"type": int, "metavar": "SEED"},
}


def _option_help(spec) -> str:
    shown = "the variant's" if spec.default is None and spec.kind == "optional_bool" else spec.default
    return f"{spec.help} Default: {shown}.".replace("%", "%%")


def _open_store(path: str | None):
    from .store import RunStore, StoreError

    try:
        return RunStore(path)
    except StoreError as exc:
        raise _UsageError(str(exc)) from None


def _cmd_select(args: argparse.Namespace) -> int:
    from .features import load_feature_file
    from .params import param_specs
    from .selection import select

    feature_set = load_feature_file(args.features)  # the app's reader: same checks, messages and ids
    features, ids = feature_set.features, feature_set.ids
    cores = _load_array(args.cores, what="cores") if args.cores else None
    report = _ProgressBar()
    try:
        selection = select(
            features, args.budget, cores=cores, progress=report,
            **{spec.name: getattr(args, spec.name) for spec in param_specs()})
    finally:
        report.close()
    store = _open_store(args.store)
    selection_id = store.add_selection(
        dataset=Path(args.features).name, backbone="feature file", params=selection.params, indices=selection.indices,
        sample_ids=ids[selection.indices], n_pool=features.shape[0],
        seconds=selection.timings["total"])
    json_path, npz_path = selection.save(args.out, sample_ids=ids[selection.indices],
                                         extra={"store": {"path": str(store.path), "selection_id": selection_id}})
    if selection.params["method"] == "bilaf":
        print(f"K = {selection.params['n_cores']:,} ({selection.params['n_cores_rule']})", file=sys.stderr)
    print(f"selected {selection.budget} samples in {selection.timings['total']:.2f} s -> {json_path} (+ {npz_path.name});"
          f" selection #{selection_id} in {store.path}", file=sys.stderr)
    return 0


def _read_selection(path: str) -> dict:
    """A selection JSON (as ``select`` writes): indices, optional ids, params, store."""
    file = Path(path)
    if not file.is_file():
        raise _UsageError(f"selection file not found: {file}")
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _UsageError(f"cannot read selection {file} (not the JSON that 'select' writes?): {exc}") from None
    indices = document.get("indices") if isinstance(document, dict) else None
    if not isinstance(indices, list) or not indices or not all(isinstance(i, int) for i in indices):
        raise _UsageError(f"selection {file} has no list of integer 'indices'; give a file written by 'select'")
    return document


def _selection_in_store(store, document: dict, *, dataset: str, backbone: str, n_pool: int) -> int:
    """The store id of the selection: the one ``select`` recorded, else a new record."""
    recorded = document.get("store") or {}
    if recorded.get("path") == str(store.path) and isinstance(recorded.get("selection_id"), int):
        return recorded["selection_id"]
    return store.add_selection(dataset=dataset, backbone=backbone, params=document.get("params", {}),
                               indices=np.asarray(document["indices"]), sample_ids=document.get("ids"), n_pool=n_pool)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .features import load_feature_file

    document = _read_selection(args.selection)
    feature_set = load_feature_file(args.features)
    indices = np.asarray(document["indices"])
    store = _open_store(args.store)
    selection_id = _selection_in_store(store, document, dataset=Path(args.features).name, backbone="feature file",
                                       n_pool=feature_set.features.shape[0])
    options = {"k": args.k} if args.protocol == "knn" else {}
    with store.track(protocol=args.protocol, params={"features": str(args.features), **options},
                     selection_id=selection_id) as run:
        result = evaluate(feature_set.features, feature_set.labels, indices, protocol=args.protocol,
                          test_features=feature_set.test_features, test_labels=feature_set.test_labels, **options)
        run.metrics = result.to_dict()
    return _print_result(run.id, result.to_dict(), store.path,
                         f"{args.protocol}: top-1 {100 * result.top1:.2f} % on the {result.eval_split} "
                         f"({result.n_eval:,} samples), trained on {result.n_train}")


def _cmd_finetune(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .data import load_pool, read_label_csv
    from .evaluate import check_indices
    from .finetune import FinetuneConfig, finetune

    document = _read_selection(args.selection)
    pool = load_pool(args.dataset, root=args.root, test_root=args.test_root)
    if document.get("ids"):
        position = {str(sample_id): i for i, sample_id in enumerate(pool.ids)}
        unknown = [i for i in document["ids"] if i not in position]
        if unknown:
            raise _UsageError(f"{len(unknown)} selected id(s) are not in {pool.name}, first {unknown[0]!r}; was the "
                              "selection made on another data set?")
        indices = np.array([position[i] for i in document["ids"]], dtype=np.int64)
    else:
        indices = np.asarray(document["indices"], dtype=np.int64)
    indices = check_indices(indices, len(pool))
    labels = read_label_csv(args.labels, pool.ids[indices], class_names=pool.class_names)[0] if args.labels else None
    config = FinetuneConfig(epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
                            eval_every=args.eval_every, eval_limit=args.eval_limit, num_workers=args.workers,
                            random_state=args.seed)
    store = _open_store(args.store)
    selection_id = _selection_in_store(store, document, dataset=pool.name, backbone=args.backbone, n_pool=len(pool))
    report = _ProgressBar()
    params = {"dataset": args.dataset, "backbone": args.backbone, "weights": args.weights, **asdict(config)}
    try:
        with store.track(protocol="finetune", params=params, selection_id=selection_id) as run:
            def on_epoch(entry: dict) -> None:
                run.metrics = {"history": run.metrics.get("history", []) + [entry]}

            def progress(fraction: float, message: str) -> None:
                report(fraction, message)
                run.progress(fraction, message)

            result = finetune(pool, indices, labels=labels, backbone=args.backbone, weights=args.weights, config=config,
                              checkpoint_dir=args.checkpoint_dir, resume=args.resume, progress=progress,
                              on_epoch=on_epoch, allow_fallback=args.fallback)
            run.metrics = result.to_dict()
    finally:
        report.close()
    return _print_result(run.id, result.to_dict(), store.path,
                         f"finetune: best top-1 {100 * result.best_top1:.2f} % (epoch {result.best_epoch}), final "
                         f"{100 * result.final_top1:.2f} % on the {result.eval_split}")


def _print_result(run_id: int, result: dict, store_path, summary: str) -> int:
    """The result as one JSON object on stdout, a one-line summary on stderr."""
    print(json.dumps({"run_id": run_id, **result}))
    print(f"{summary} -> run #{run_id} in {store_path}", file=sys.stderr)
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    print(f"{'run':>5} {'status':10} {'protocol':9} {'method':10} {'budget':>7} {'top-1':>7}  dataset")
    for row in store.runs():
        top1 = row["metrics"].get("top1")
        print(f"{row['id']:>5} {row['status']:10} {row['protocol']:9} {str(row['method']):10} {row['budget'] or 0:>7} "
              f"{'' if top1 is None else f'{100 * top1:.2f}':>7}  {row['dataset']}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from ._io import atomic_open
    from .data import load_pool
    from .features import extract_features, load_backbone

    pool = load_pool(args.dataset, root=args.root).sample(args.limit, random_state=args.seed)
    test = None
    if pool.test is not None and args.test_limit != 0:
        test = pool.test.sample(args.test_limit, random_state=args.seed)
    backbone = load_backbone(args.backbone, weights=args.weights, pooling=args.pooling, allow_fallback=args.fallback)
    arrays: dict[str, np.ndarray] = {}
    for split, prefix in ((pool, ""), (test, "test_")):
        if split is None:
            continue
        print(f"{pool.name} {'test' if prefix else 'training'} split: {len(split):,} images; backbone {backbone.name} "
              f"({backbone.weights_source})", file=sys.stderr)
        report = _ProgressBar()
        try:
            result = extract_features(split, backbone, batch_size=args.batch_size, num_workers=args.workers,
                                      progress=report, engine=args.engine, ray_address=args.ray_address,
                                      gpus_per_worker=args.gpus_per_worker)
        finally:
            report.close()
        arrays[f"{prefix}features"] = np.asarray(result.features, dtype=np.float32)
        arrays[f"{prefix}ids"] = result.ids
        if result.labels is not None:
            arrays[f"{prefix}labels"] = result.labels
        source = "from cache" if result.from_cache else "extracted"
        print(f"{result.features.shape[0]:,} x {result.features.shape[1]} {prefix}features {source}", file=sys.stderr)
        if result.failed:
            print(f"skipped {len(result.failed)} unreadable image(s):", file=sys.stderr)
            for sample_id, reason in result.failed[:50]:
                print(f"  {sample_id!r}: {reason}", file=sys.stderr)
            if len(result.failed) > 50:
                print(f"  ... and {len(result.failed) - 50} more", file=sys.stderr)
    if pool.class_names:  # names of the integer labels, read back by load_feature_file
        arrays["classes"] = np.asarray(pool.class_names, dtype=str)
    with atomic_open(args.out, "wb") as handle:
        np.savez(handle, **arrays)
    print(f"written: {args.out} ({', '.join(arrays)})", file=sys.stderr)
    return 0


def _build_parser() -> argparse.ArgumentParser:
    from .params import param_specs

    parser = _ArgumentParser(prog="python -m bilaf_core", description="BiLAF / ActiveFT sample selection.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    sel = commands.add_parser("select", help="select samples to label from a feature file")
    sel.add_argument("--features", required=True, help="N x d float array (.npy, or .npz with 'features')")
    sel.add_argument("--budget", required=True, type=int, help="number of samples to select, cores included")
    sel.add_argument("--out", required=True, help="output JSON path (an .npz with every array is written beside it)")
    sel.add_argument("--cores", help="int array of core indices (.npy) instead of running stage 1")
    for spec in param_specs():  # every selection parameter, from its one definition
        sel.add_argument(spec.flag, dest=spec.name, default=spec.default, help=_option_help(spec),
                         **_OPTION_KINDS[spec.kind](spec))
    sel.add_argument("--store", help="run store (SQLite) to record the selection in (default: BILAF_STORE or the data dir)")
    sel.set_defaults(handler=_cmd_select)

    from .evaluate import PROTOCOLS

    ev = commands.add_parser("evaluate", help="linear-probe or k-NN accuracy of a selection on frozen features")
    ev.add_argument("--features", required=True, help="feature .npz with labels (and test_features/test_labels)")
    ev.add_argument("--selection", required=True, help="selection JSON written by 'select'")
    ev.add_argument("--protocol", default="linear", choices=PROTOCOLS)
    ev.add_argument("--k", type=int, default=20, help="neighbours for --protocol knn")
    ev.add_argument("--store", help="run store (SQLite) to record the run in")
    ev.set_defaults(handler=_cmd_evaluate)

    from .data import DATASETS
    from .features import DEFAULT_BACKBONE, ENGINES, POOLINGS

    feat = commands.add_parser("features", help="extract (and cache) features of an image pool")
    feat.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    feat.add_argument("--backbone", default=DEFAULT_BACKBONE,
                      help=f"timm model name, or 'pixels' (default {DEFAULT_BACKBONE})")
    feat.add_argument("--weights", help="local checkpoint (.pth / .safetensors), e.g. dino_deitsmall16_pretrain.pth")
    feat.add_argument("--root", help="data folder (for --dataset folder: the image directory)")
    feat.add_argument("--pooling", default="auto", choices=POOLINGS)
    feat.add_argument("--batch-size", type=int, default=64)
    feat.add_argument("--engine", default="local", choices=ENGINES,
                      help="local: this process; ray: Ray Data on a cluster (--ray-address) or a local Ray runtime. "
                           "Both write the same feature cache")
    feat.add_argument("--ray-address", metavar="HOST:PORT",
                      help="--engine ray: the cluster's head (what 'ray start --head' prints, or 'auto'); "
                           "default: start a local Ray runtime")
    feat.add_argument("--workers", type=int, default=None,
                      help="local: DataLoader workers (default: cores - 1); ray: model actors (default: one per GPU "
                           "with --gpus-per-worker, else one per node)")
    feat.add_argument("--gpus-per-worker", type=float, default=0, metavar="G",
                      help="--engine ray: GPUs per model actor (default 0: CPUs; 0.5: two models per GPU)")
    feat.add_argument("--no-fallback", dest="fallback", action="store_false",
                      help="fail instead of falling back to the bundled EfficientNet-Lite0 when weights are unavailable")
    feat.add_argument("--limit", type=int, help="a seeded random subset of this many training images (default: all)")
    feat.add_argument("--test-limit", type=int,
                      help="a seeded subset of the test split (default: all of it; 0 leaves the test split out)")
    feat.add_argument("--seed", type=int, default=0, help="seed of the --limit / --test-limit subsets")
    feat.add_argument("--out", required=True,
                      help="output .npz with features, ids and labels (and test_features, test_ids, test_labels "
                           "when the data set has a test split)")
    feat.set_defaults(handler=_cmd_features)

    ft = commands.add_parser("finetune", help="finetune a backbone on a selection's images and report top-1")
    ft.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    ft.add_argument("--root", help="data folder (for --dataset folder: the image directory)")
    ft.add_argument("--test-root", help="for --dataset folder: a labelled test folder")
    ft.add_argument("--selection", required=True, help="selection JSON written by 'select'")
    ft.add_argument("--labels", help="CSV with id,label for the selected samples (unlabelled folders)")
    ft.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm model name")
    ft.add_argument("--weights", help="local checkpoint (.pth / .safetensors)")
    ft.add_argument("--epochs", type=int, default=10)
    ft.add_argument("--image-size", type=int, default=224)
    ft.add_argument("--batch-size", type=int, default=32)
    ft.add_argument("--eval-every", type=int, default=1)
    ft.add_argument("--eval-limit", type=int, default=2000, help="evaluate on at most this many samples")
    ft.add_argument("--workers", type=int, default=0)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--checkpoint-dir", help="where checkpoints go (a run with the same inputs resumes)")
    ft.add_argument("--no-resume", dest="resume", action="store_false", help="start over even if a checkpoint exists")
    ft.add_argument("--no-fallback", dest="fallback", action="store_false")
    ft.add_argument("--store", help="run store (SQLite) to record the run in")
    ft.set_defaults(handler=_cmd_finetune)

    runs = commands.add_parser("runs", help="list the run history from the store")
    runs.add_argument("--store", help="run store (SQLite)")
    runs.set_defaults(handler=_cmd_runs)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .store import StoreError

    try:
        args = _build_parser().parse_args(argv)
        return args.handler(args)
    except (_UsageError, ValueError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
